"""train_and_evaluate and evaluate refuse evaluation records converted otherwise than the
training records (one line; --allow_transform_mismatch accepts it), and the README converts
training and pair records alike."""

import json
import os
import re
import shutil

import pytest

from tests import records_helpers as rh
from tests.test_estimator_main import as_argv
from training.params import ParamsError, build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROPPED = {"crop_box": [70, 60, 180, 190], "image_size": 112, "resampling": "lanczos",
           "record_shape": [112, 112]}
RESIZED = {"crop_box": None, "image_size": 112, "resampling": "lanczos",
           "record_shape": [112, 112]}


def set_transform(records, transform):
    path = os.path.join(records, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["transform"] = transform
    with open(path, "w") as f:
        json.dump(manifest, f)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mismatch")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=2, size=32)
    rh.write_pair_records(str(root / "pairs"), num_pairs=10, size=32, n_folds=2)
    shutil.copytree(str(root / "pairs"), str(root / "pairs_cropped"))
    set_transform(str(root / "train"), CROPPED)
    set_transform(str(root / "pairs"), RESIZED)
    set_transform(str(root / "pairs_cropped"), CROPPED)
    return root


def settings(data, tmp_path, pairs, **more):
    values = {"mode": "train_and_evaluate", "train_records": str(data / "train"),
              "eval_records": str(data / pairs), "model_dir": str(tmp_path / "run"),
              "backbone": "tiny", "image_size": 32, "embedding_size": 16, "batch_size": 8,
              "train_steps": 5}
    values.update(more)
    return as_argv(values)


def test_a_mismatch_is_refused_in_one_line(data, tmp_path, parse_flags):
    with pytest.raises(ParamsError) as error:
        build_params(parse_flags(settings(data, tmp_path, "pairs")))
    message = str(error.value)
    assert "\n" not in message
    assert "were converted with image_size=112, the training records with " \
           "crop_box=70,60,180,190 image_size=112" in message
    assert "--allow_transform_mismatch" in message


def test_evaluate_compares_with_the_runs_recorded_training_transform(data, tmp_path,
                                                                     parse_flags):
    params = build_params(parse_flags(settings(data, tmp_path, "pairs_cropped")))
    assert params["train_transform"] == params["eval_transform"] == CROPPED
    os.makedirs(params["model_dir"])
    with open(os.path.join(params["model_dir"], "params.json"), "w") as f:
        json.dump(params.to_json_dict(), f)
    evaluate = settings(data, tmp_path, "pairs", mode="evaluate", train_records=None)
    with pytest.raises(ParamsError, match="the training records with crop_box=70,60,180,190"):
        build_params(parse_flags(evaluate))


def test_the_flag_accepts_a_mismatch_knowingly(data, tmp_path, parse_flags):
    params = build_params(parse_flags(settings(data, tmp_path, "pairs",
                                               allow_transform_mismatch=True)))
    assert params["eval_transform"] == RESIZED


def _transform_args(command):
    words = command.split()
    return sorted(w for w in words if w.startswith(("--crop_box", "--image_size", "--align"))
                  or w.startswith("$"))


def test_the_readme_converts_training_and_pair_records_alike():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    commands = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.split("#")[0].strip()
            if "make_tfrecords.py" in line and "--input_dir" in line and "--align" not in line:
                commands.append(line)
    pairs = [c for c in commands if "--pairs=" in c]
    train = [c for c in commands if "--pairs=" not in c]
    assert pairs and train, commands
    for command in pairs:
        assert _transform_args(command) == _transform_args(train[0]), command
