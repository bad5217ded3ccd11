"""scripts/lfw_recipe.sh's commands, without data or training: a stand-in Python logs them.

The real run is `tests/test_lfw_recipe_script.py` (slow, real LFW-a); this checks, in a second,
which records each variant builds and trains on (the crop box by default, 5-point alignment with
ALIGN=1), and that extra flags reach estimator_main.
"""

import os
import shlex
import subprocess

import pytest

from tests import _folder_fixtures as ff


def run_recipe(tmp_path, *flags, **env_vars):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("lfw_a_gray250.tar.gz", "lfw_pairs.txt"):
        (data / name).write_bytes(b"")  # present; not read once the images are extracted
    out = tmp_path / "out"
    (out / "lfw_gray250").mkdir(parents=True)
    log = tmp_path / "commands.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n')
    python.chmod(0o755)
    env = dict(os.environ, LFW_DATA=str(data), PYTHON=str(python), **env_vars)
    subprocess.run(["bash", os.path.join(ff.REPO_ROOT, "scripts", "lfw_recipe.sh"), str(out)]
                   + list(flags), cwd=ff.REPO_ROOT, env=env, check=True, capture_output=True)
    return out / "fold10", log.read_text().splitlines()


def commands_of(lines, program):
    return [line for line in lines
            if line.split()[:1] == [program] or line.split()[:2] == ["-m", program]]


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
