"""insightface-format data through the whole pipeline from the command line (slow): synthetic
faces packed as train.rec/.idx and a .bin, converted with make_tfrecords --input_rec/--from_bin
(the script), then trained and evaluated with estimator_main.py."""

import json
import os

import pytest

from data_tools import manifest as manifest_lib
from data_tools.insightface import bin_from_pairs, recordio
from data_tools.synthetic import dataset as synthetic_dataset
from tests import _folder_fixtures as ff
from tests.test_real_lfw_end_to_end import run_main

pytestmark = pytest.mark.slow


def test_rec_and_bin_train_and_evaluate(tmp_path):
    data = synthetic_dataset.generate(str(tmp_path / "synthetic"), num_train_identities=12,
                                      train_images_per_identity=6, image_size=64,
                                      num_workers=1, progress=False)
    images = []
    for identity_number, identity in enumerate(sorted(os.listdir(data["train_dir"]))):
        folder = os.path.join(data["train_dir"], identity)
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                images.append((1000 + 7 * identity_number, f.read()))
    rec_dir = tmp_path / "faces_emore"
    rec_dir.mkdir()
    recordio.write_dataset(str(rec_dir), images, layout=recordio.FLAT, image_shape=(64, 64))
    bin_from_pairs.make_bin(data["pairs_path"], data["lfw_dir"], str(rec_dir / "lfw.bin"))

    for args in ([f"--input_rec={rec_dir}", f"--output_dir={tmp_path / 'train'}"],
                 [f"--from_bin={rec_dir / 'lfw.bin'}", f"--output_dir={tmp_path / 'lfw'}"]):
        result = ff.run_script(args + ["--num_workers=1"])
        assert result.returncode == 0, result.stderr
    assert manifest_lib.read_manifest(str(tmp_path / "train"))["num_classes"] == 12
    assert manifest_lib.read_labels(str(tmp_path / "train"))[:2] == ["1000", "1007"]

    model_dir = str(tmp_path / "model")
    run_main("--mode=train_and_evaluate", "--backbone=tiny", "--embedding_size=32",
             "--image_size=64", f"--train_records={tmp_path / 'train'}",
             f"--eval_records={tmp_path / 'lfw'}", "--batch_size=12", "--train_steps=4",
             "--save_checkpoints_steps=4", "--gamma=64", "--eval_batch_size=60",
             f"--model_dir={model_dir}", "--noprogress", "--verbosity=-1")
    with open(os.path.join(model_dir, "eval", "report.json")) as f:
        evaluated = json.load(f)
    assert len(evaluated["fold_accuracy"]) == 10 and 0.0 <= evaluated["accuracy"] <= 1.0
