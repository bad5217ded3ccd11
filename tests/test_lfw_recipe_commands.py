"""scripts/lfw_recipe.sh's commands, without data or training: a stand-in Python logs them.

The real run is `tests/test_lfw_recipe_script.py` (slow, real LFW-a); this checks, in a second,
which records each variant builds and trains on (the crop box by default, 5-point alignment with
ALIGN=1), and that extra flags reach estimator_main.
"""


import pytest

from tests.recipe_stand_in import commands_of, run_recipe_script


def run_recipe(tmp_path, *flags, **env_vars):
    out, lines = run_recipe_script("lfw_recipe.sh", tmp_path, *flags, **env_vars)
    return out / "fold10", lines


def test_default_records_use_the_crop_box(tmp_path):
    split, lines = run_recipe(tmp_path, "--seed=1")
    converts = commands_of(lines, "data_tools/make_tfrecords.py")
    assert len(converts) == 2
    for line in converts:
        assert "--crop_box=70,60,180,190 --image_size=112" in line and "--align" not in line
        assert "--allow_missing_pairs" not in line  # every test pair is in the records
    assert f"--output_dir={split}/records/train" in converts[0]
    assert f"--output_dir={split}/records/pairs" in converts[1]
    (train,) = commands_of(lines, "estimator_main.py")
    assert f"--train_records={split}/records/train" in train
    assert f"--eval_records={split}/records/pairs" in train and train.endswith("--seed=1")


@pytest.mark.parametrize("min_face_size", [None, "40"])
def test_align_builds_and_trains_on_five_point_aligned_records(tmp_path, min_face_size):
    extra = {"MIN_FACE_SIZE": min_face_size} if min_face_size else {}
    split, lines = run_recipe(tmp_path, ALIGN="1", RUN_NAME="aligned", **extra)
    converts = commands_of(lines, "data_tools/make_tfrecords.py")
    assert len(converts) == 2
    for line in converts:
        assert f"--align --min_face_size={min_face_size or 60} --image_size=112" in line
        assert "--crop_box" not in line
    assert f"--output_dir={split}/records_aligned/train" in converts[0]
    assert f"--pairs={split}/pairs.txt" in converts[1]
    assert f"--output_dir={split}/records_aligned/pairs" in converts[1]
    # A frame where the detector finds no face drops its pair, not the whole test.
    assert converts[1].endswith("--allow_missing_pairs")
    (train,) = commands_of(lines, "estimator_main.py")
    assert f"--train_records={split}/records_aligned/train" in train
    assert f"--model_dir={split}/models/aligned" in train
