"""Real LFW-a pairs through the whole pipeline with a model this project trained and exported.

Needs ../shared/data (skipped without it); slow (`make test-slow`). The model is the tiny backbone
trained a few steps on the synthetic faces: the point is the plumbing on real data (6,000 pairs,
10 folds of 600, every image found, eval spec and SavedModel agreeing), not the accuracy. The
SavedModel carries the pair records' conversion transform, so ``export.embed --pairs`` on the
raw 250x250 frames gives the pictures the eval spec saw, and its accuracy.
"""

import json
import os

import pytest

import cli
from data_tools import conversion
from data_tools.synthetic import dataset as synthetic_dataset
from evaluation import reports as report
from export import embed
from tests import _folder_fixtures as ff
from tests import real_lfw

PAIRS = real_lfw.PAIRS

# 7,701 images converted, 6,000 pairs evaluated, then embedded: beyond 900 s on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)] + real_lfw.MARKS
MIN_ACCURACY = 0.55


def run_main(*args):
    return ff.run_estimator_main(*args, timeout=900)


def test_real_lfw_pairs_evaluate_with_an_exported_model(real_lfw_dir, tmp_path, capsys):
    root = tmp_path
    lfw = real_lfw_dir
    # The face region of LFW-a's 250x250 frames, as the data README describes.
    conversion.convert_pairs(PAIRS, lfw, str(root / "lfw_pairs"), crop_box="70,60,180,190",
                             image_size=112, progress=False)
    synthetic_dataset.generate(str(root / "synthetic"), num_train_identities=20,
                               train_images_per_identity=8, progress=False)
    conversion.convert_folder(str(root / "synthetic" / "train"), str(root / "train"),
                              progress=False)

    model_dir = str(root / "model")
    common = ["--backbone=tiny", "--embedding_size=64", f"--model_dir={model_dir}",
              "--noprogress", "--verbosity=-1"]
    run_main("--mode=train", f"--train_records={root / 'train'}", "--batch_size=16",
             "--train_steps=10", "--gamma=64", *common)
    # Trained on synthetic records kept as they are, evaluated on LFW-a crops: knowingly.
    out = run_main("--mode=evaluate", f"--eval_records={root / 'lfw_pairs'}",
                   "--eval_batch_size=200", "--allow_transform_mismatch", *common)
    assert "LFW-style verification at step 10" in out
    with open(os.path.join(model_dir, "eval", "report.json")) as f:
        evaluated = json.load(f)
    assert len(evaluated["fold_accuracy"]) == 10
    assert 0.5 <= evaluated["accuracy"] <= 1.0
    assert os.path.isfile(os.path.join(model_dir, "eval", "roc.png"))

    # What 10 steps on 20 synthetic identities reach on real faces (measured: 0.572).
    assert evaluated["accuracy"] >= MIN_ACCURACY, evaluated["accuracy"]

    run_main("--mode=export", f"--eval_records={root / 'lfw_pairs'}", *common)
    saved_model = os.path.join(model_dir, "export", "manual")
    status = cli.run_main(embed.define_flags, embed.main,
                          ["embed", "--model", saved_model, "--pairs", PAIRS, "--image_dir", lfw,
                           "--report_dir", str(root / "embed_report")])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "transform: crop_box=70,60,180,190 image_size=112" in err
    served = report.read_report(str(root / "embed_report"))
    assert (served["num_pairs"], served["n_folds"], served["fold_sizes"]) == (
        6000, 10, [600] * 10)
    assert served["extra"]["num_images"] == 7701
    # The same pixels as the records, so the same verification, up to float rounding.
    assert served["accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-3)
    assert served["fold_accuracy"] == pytest.approx(evaluated["fold_accuracy"], abs=1e-3)
    assert served["auc"] == pytest.approx(evaluated["auc"], abs=1e-3)
