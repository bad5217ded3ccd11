"""estimator_main: flags -> validated params, ModelArts paths, epochs, and the CLI end to end.

The validation tests run ``main`` in-process on parsed flags (absl FLAGS are global: every test
that parses restores the defaults afterwards). The end-to-end tests run the real command line
in a subprocess on small records: 4 identities x 8 images of 32x32 and 10 pairs in 2 folds.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import app

import estimator_main
from tests import records_helpers as rh
from training import run_record, runner
from training.params import build_configs, build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = estimator_main.FLAGS
NUM_CLASSES, PER_CLASS, SIZE = 4, 8, 32
NUM_PAIRS, N_FOLDS = 10, 2
# The tiny network, checkpoint and evaluation settings shared by every end-to-end run.
NET = ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
       "--save_checkpoints_steps=10", "--gamma=32", "--eval_batch_size=4",
       "--eval_throttle_secs=0", "--noprogress"]
# A run's model_dir minus its outputs: what a resumed, evaluated or exported run starts from.
OUTPUTS = shutil.ignore_patterns("export", "frozen", "eval", "eval_*", "events.out.*")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A ModelArts-style dataset root: ``train/`` and ``pairs/``, plus broken variants."""
    root = tmp_path_factory.mktemp("data")
    rh.write_image_records(str(root / "train"), num_classes=NUM_CLASSES, per_class=PER_CLASS,
                           size=SIZE)
    rh.write_pair_records(str(root / "pairs"), num_pairs=NUM_PAIRS, size=SIZE, n_folds=N_FOLDS)
    shutil.copytree(str(root / "train"), str(root / "bad_labels"))
    (root / "bad_labels" / "labels.txt").write_text("id00\nid01\nid02\n")
    (root / "empty").mkdir()
    return root


def as_argv(settings):
    """``{"mode": "train", "progress": False, "x": None}`` -> ``--mode=train --noprogress``."""
    argv = []
    for name, value in sorted(settings.items()):
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(f"--{'' if value else 'no'}{name}")
        else:
            argv.append(f"--{name}={value}")
    return argv


def base_settings(data, model_dir):
    """Valid settings for a short tiny-backbone training run; cases override some of them."""
    return {"mode": "train", "train_records": str(data / "train"), "model_dir": str(model_dir),
            "backbone": "tiny", "image_size": SIZE, "embedding_size": 16, "batch_size": 8,
            "train_steps": 5}


def _unreachable(*args, **kwargs):
    raise AssertionError("a bad setting got past build_params")


def test_base_settings_are_valid(data, tmp_path, parse_flags, monkeypatch):
    """The reference point of the rejection cases below: these settings reach run_mode."""
    seen = []
    monkeypatch.setattr(runner, "run_mode", seen.append)
    parse_flags(as_argv(base_settings(data, tmp_path / "run")))
    estimator_main.main(["estimator_main.py"])
    (params,) = seen
    assert params["num_classes"] == NUM_CLASSES
    assert params["num_train_images"] == NUM_CLASSES * PER_CLASS
    assert params["train_steps"] == 5 and params["warmup_steps"] == 0
    assert params["decay_boundaries"] == (0.5, 0.7, 0.9)
    written = json.loads((tmp_path / "run" / "params.json").read_text())
    assert written == json.loads(json.dumps(params.to_json_dict()))


# (case, overrides of base_settings ("{data}" is the dataset root; None drops the flag), a piece
# of the one-line message that says what to change)
REJECTED = [
    ("pair_head_without_k", {"head": "circle_pair"}, "set --images_per_identity=K >= 2"),
    ("combined_head_without_k", {"head": "circle_combined"}, "set --images_per_identity=K >= 2"),
    ("batch_not_multiple_of_k", {"head": "circle_pair", "images_per_identity": 3},
     "--batch_size=8 must be a multiple of --images_per_identity=3"),
    ("k_of_one", {"images_per_identity": 1}, "--images_per_identity=1: K must be at least 2"),
    ("image_size_for_backbone", {"backbone": "iresnet50", "image_size": 96},
     "backbone 'iresnet50' needs 112x112 images"),
    ("train_and_evaluate_without_eval_records", {"mode": "train_and_evaluate"},
     "--mode=train_and_evaluate needs --eval_records"),
    ("train_without_train_records", {"train_records": None},
     "--mode=train needs --train_records (or --data_url)"),
    ("steps_and_epochs", {"train_epochs": 1.0}, "exactly one of --train_steps and --train_epochs"),
    ("neither_steps_nor_epochs", {"train_steps": None},
     "exactly one of --train_steps and --train_epochs"),
    ("warmup_not_below_total", {"warmup_steps": 5}, "--warmup_steps must be below the total"),
    ("bf16_on_gpu", {"device": "gpu", "precision": "bf16"}, "--precision=bf16 is for CPUs"),
    ("fp16_on_cpu", {"precision": "fp16"}, "--precision=fp16 is for GPUs"),
    ("pair_records_for_training", {"train_records": "{data}/pairs"},
     "holds pairs records, not training images"),
    ("image_records_for_evaluation",
     {"mode": "train_and_evaluate", "eval_records": "{data}/train"},
     "holds images records, not pairs"),
    ("labels_disagree_with_manifest", {"train_records": "{data}/bad_labels"},
     "lists 3 identities but the manifest says 4 classes"),
    ("records_without_manifest", {"train_records": "{data}/empty"}, "manifest.json not found"),
    ("no_model_dir", {"model_dir": None}, "--model_dir (or --train_url) is required"),
    # Hyperparameters the head, the backbone, the optimizer or the input refuse: checked by
    # their configs before anything is written (--margin=1.5 once reached the head mid-run).
    ("circle_margin_above_one", {"margin": 1.5}, "--head=circle: margin must be in [0.0, 1.0)"),
    ("negative_gamma", {"gamma": -1.0}, "gamma must be in (0.0, inf)"),
    ("arcface_negative_margin", {"head": "arcface", "margin": -0.1}, "--head=arcface: margin"),
    ("embedding_size_zero", {"embedding_size": 0}, "embedding_size must be a positive integer"),
    ("dropout_one", {"dropout_rate": 1.0}, "dropout_rate must be in [0, 1)"),
    ("learning_rate_zero", {"learning_rate": 0.0}, "learning_rate must be positive"),
    ("momentum_one", {"momentum": 1.0}, "momentum must be in [0, 1)"),
    ("boundaries_unordered", {"decay_boundaries": "0.7,0.5"},
     "decay_boundaries must be increasing fractions in (0, 1)"),
    ("shuffle_buffer_zero", {"shuffle_buffer": 0}, "--shuffle_buffer must be positive"),
    ("proxy_partitions_above_classes", {"proxy_partitions": 9},
     "proxy_partitions=9 exceeds num_classes=4"),
    ("partial_fc_rate_zero", {"partial_fc_rate": 0.0},
     "--head=circle: partial_fc_rate must be in (0, 1], got 0.0"),
    ("partial_fc_rate_above_one", {"partial_fc_rate": 1.5}, "partial_fc_rate must be in (0, 1]"),
    ("partial_fc_on_the_pair_head",
     {"head": "circle_pair", "images_per_identity": 4, "partial_fc_rate": 0.5},
     "--head=circle_pair: head 'circle_pair' has no class proxies to sample"),
    ("partial_fc_sample_below_the_batch", {"partial_fc_rate": 0.5},
     "--partial_fc_rate=0.5 keeps 2 of 4 classes per step, fewer than the 8 examples"),
]


@pytest.mark.parametrize("overrides, message", [case[1:] for case in REJECTED],
                         ids=[case[0] for case in REJECTED])
def test_bad_settings_are_rejected_before_any_graph(data, tmp_path, parse_flags, monkeypatch,
                                                    overrides, message):
    settings = base_settings(data, tmp_path / "run")
    settings.update({name: value.format(data=data) if isinstance(value, str) else value
                     for name, value in overrides.items()})
    parse_flags(as_argv(settings))
    monkeypatch.setattr(run_record, "record_run", _unreachable)
    monkeypatch.setattr(runner, "run_mode", _unreachable)
    with tf.Graph().as_default() as graph:
        with pytest.raises(app.UsageError) as info:
            estimator_main.main(["estimator_main.py"])
        assert not graph.get_operations()
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("head, margin, gamma", [("arcface", 0.5, None), ("cosface", 0.35, None),
                                                 ("circle", 0.25, 256.0)])
def test_params_record_the_heads_resolved_defaults(data, tmp_path, parse_flags, head, margin,
                                                   gamma):
    """params.json holds what the run uses (arcface's margin 0.5), never a null default."""
    settings = base_settings(data, tmp_path / "run")
    settings["head"] = head
    params = build_params(parse_flags(as_argv(settings)))
    assert params["margin"] == pytest.approx(margin)
    assert params["gamma"] == (None if gamma is None else pytest.approx(gamma))
    json.dumps(params.to_json_dict())  # JSON-ready for params.json


def test_partial_fc_rate_reaches_the_head(data, tmp_path, parse_flags):
    settings = base_settings(data, tmp_path / "run")
    settings["partial_fc_rate"] = 0.9  # ceil(0.9 * 4) = every class: any batch fits
    params = build_params(parse_flags(as_argv(settings)))
    assert params["partial_fc_rate"] == 0.9
    head = build_configs(params).head
    assert head.partial_fc and head.num_sample == NUM_CLASSES
    assert head.proxy_variable == ("class_proxies", [NUM_CLASSES, 16])
    # evaluation and export need no sample that holds a training batch
    params = build_params(parse_flags(as_argv(dict(
        settings, partial_fc_rate=0.5, mode="export"))))
    assert build_configs(params).head.num_sample == 2


def test_modelarts_urls_give_records_and_model_dir(data, tmp_path, parse_flags):
    values = parse_flags([f"--data_url={data}", f"--train_url={tmp_path / 'out'}",
                          "--mode=train_and_evaluate", "--backbone=tiny", "--image_size=32",
                          "--batch_size=8", "--train_steps=5"])
    params = build_params(values)
    assert params["train_records"] == os.path.join(str(data), "train")
    assert params["eval_records"] == os.path.join(str(data), "pairs")
    assert params["model_dir"] == str(tmp_path / "out")
    assert (params["num_classes"], params["num_train_images"]) == (NUM_CLASSES, 32)
    assert (params["num_pairs"], params["num_folds"]) == (NUM_PAIRS, N_FOLDS)


def test_explicit_paths_win_over_modelarts_urls(data, tmp_path, parse_flags):
    values = parse_flags([f"--data_url={tmp_path / 'nowhere'}",
                          f"--train_url={tmp_path / 'out'}",
                          f"--train_records={data / 'train'}",
                          f"--eval_records={data / 'pairs'}",
                          f"--model_dir={tmp_path / 'run'}", "--mode=train_and_evaluate",
                          "--backbone=tiny", "--image_size=32", "--batch_size=8",
                          "--train_steps=5"])
    params = build_params(values)
    assert params["train_records"] == str(data / "train")
    assert params["eval_records"] == str(data / "pairs")
    assert params["model_dir"] == str(tmp_path / "run")


def test_params_carry_the_eval_records_conversion_transform(data, tmp_path, parse_flags):
    """The serving graph and the exports get what the eval records' pixels went through."""
    pairs = str(tmp_path / "pairs")
    shutil.copytree(str(data / "pairs"), pairs)
    manifest = load_json(pairs, "manifest.json")
    manifest["transform"] = {"crop_box": [1, 2, 31, 32], "image_size": SIZE,
                             "resampling": "lanczos"}
    with open(os.path.join(pairs, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    for mode in ("train_and_evaluate", "export"):
        settings = dict(base_settings(data, tmp_path / "run"), mode=mode, eval_records=pairs)
        params = build_params(parse_flags(as_argv(settings)))
        # an older manifest's transform, its record shape derived from the size
        assert params["eval_transform"] == dict(manifest["transform"],
                                                record_shape=[SIZE, SIZE]), mode
    params = build_params(parse_flags(as_argv(base_settings(data, tmp_path))))
    assert params["eval_transform"] is None


# 32 training images: steps = epochs * 32 / batch, rounded to the nearest step, at least one.
@pytest.mark.parametrize("epochs, batch_size, steps", [
    (1, 8, 4), (2.5, 8, 10), (3, 16, 6), (1.3, 8, 5), (1.4, 8, 6), (0.1, 8, 1)])
def test_train_epochs_give_steps_from_the_manifest(data, tmp_path, parse_flags, epochs,
                                                   batch_size, steps):
    settings = base_settings(data, tmp_path / "run")
    settings.update(train_steps=None, train_epochs=epochs, batch_size=batch_size)
    params = build_params(parse_flags(as_argv(settings)))
    assert params["train_steps"] == steps


# ---- the real command line, end to end ---------------------------------------------------------


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "estimator_main.py"] + list(args), cwd=ROOT, env=env,
                          capture_output=True, encoding="utf-8", timeout=300, check=False)


def check(proc, returncode=0):
    assert proc.returncode == returncode, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def copy_run(model_dir, destination):
    """The checkpoints, params and run record of a run, without its outputs."""
    shutil.copytree(model_dir, str(destination), ignore=OUTPUTS)
    return str(destination)


def printed_path(stdout, label):
    match = re.search(rf"^{re.escape(label)}.*?: (\S+)$", stdout, re.M)
    assert match, f"no {label!r} line in:\n{stdout}"
    return match.group(1)


def graph_node_names(frozen_path):
    graph_def = tf.GraphDef()
    with open(frozen_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    return {node.name for node in graph_def.node}


def load_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def read_lines(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read().splitlines()


def git_head():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                       stderr=subprocess.DEVNULL).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """``--mode=train_and_evaluate`` for 20 steps: (model_dir, finished process)."""
    model_dir = str(tmp_path_factory.mktemp("e2e") / "run")
    proc = check(run_cli("--mode=train_and_evaluate", f"--train_records={data / 'train'}",
                         f"--eval_records={data / 'pairs'}", f"--model_dir={model_dir}",
                         "--train_steps=20", *NET))
    return model_dir, proc


def test_train_and_evaluate_checkpoints_and_records_the_run(trained):
    model_dir, _ = trained
    assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, "model.ckpt-20")
    params = load_json(model_dir, "params.json")
    assert (params["num_classes"], params["train_steps"], params["image_size"]) == (4, 20, 32)
    flags_text = set(read_lines(model_dir, "flags.txt"))
    assert {"--train_steps=20", "--backbone=tiny", "--mode=train_and_evaluate"} <= flags_text
    (run,) = [json.loads(line) for line in read_lines(model_dir, "runs.jsonl")]
    assert run["tensorflow"] == tf.__version__
    assert run["git_revision"] == git_head()
    assert run["mode"] == "train_and_evaluate"


def test_train_and_evaluate_reports_verification(trained):
    model_dir, proc = trained
    report = load_json(model_dir, "eval", "report.json")
    assert report["global_step"] == 20
    assert len(report["fold_accuracy"]) == N_FOLDS
    assert report["accuracy"] == pytest.approx(np.mean(report["fold_accuracy"]))
    assert report["accuracy_std"] == pytest.approx(np.std(report["fold_accuracy"]))
    with open(os.path.join(model_dir, "eval", "roc.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    match = re.search(r"verification at step 20: accuracy (\d\.\d{4}) ± (\d\.\d{4})", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) == pytest.approx(report["accuracy"], abs=5e-5)
    assert float(match.group(2)) == pytest.approx(report["accuracy_std"], abs=5e-5)


def test_train_and_evaluate_exports_best_latest_and_frozen(trained):
    model_dir, proc = trained
    best = printed_path(proc.stdout, "best SavedModel")
    assert os.path.dirname(best) == os.path.join(model_dir, "export", "best")
    assert os.path.basename(best).isdigit()
    assert os.path.isfile(os.path.join(best, "saved_model.pb"))
    assert "accuracy" in load_json(best, "assets.extra", "report.json")
    latest = os.path.join(model_dir, "export", "latest")
    versions = [d for d in os.listdir(latest) if d.isdigit()]
    assert versions and all(os.path.isfile(os.path.join(latest, d, "saved_model.pb"))
                            for d in versions)
    frozen = printed_path(proc.stdout, "frozen graph")
    assert frozen == os.path.join(model_dir, "frozen",
                                  f"embedding_{os.path.basename(best)}.pb")
    assert {"input", "embedding"} <= graph_node_names(frozen)


def test_second_run_resumes_from_the_checkpoint(data, trained, tmp_path):
    model_dir = copy_run(trained[0], tmp_path / "run")
    # --verbosity=0: the restore is an INFO line, whatever the default verbosity becomes.
    proc = check(run_cli("--mode=train", f"--train_records={data / 'train'}",
                         f"--model_dir={model_dir}", "--train_steps=30", "--verbosity=0",
                         *NET))
    restored = os.path.join(model_dir, "model.ckpt-20")
    assert f"Restoring parameters from {restored}" in proc.stderr
    latest = tf.train.latest_checkpoint(model_dir)
    assert latest == os.path.join(model_dir, "model.ckpt-30")
    assert tf.train.load_variable(latest, "global_step") == 30
    runs = [json.loads(line) for line in read_lines(model_dir, "runs.jsonl")]
    assert [r["mode"] for r in runs] == ["train_and_evaluate", "train"]


def test_evaluate_mode_reproduces_the_training_evaluation(data, trained, tmp_path):
    """No --train_records: the head is sized from the run's params.json."""
    model_dir = copy_run(trained[0], tmp_path / "run")
    proc = check(run_cli("--mode=evaluate", f"--eval_records={data / 'pairs'}",
                         f"--model_dir={model_dir}", *NET))
    assert "verification at step 20: accuracy" in proc.stdout
    report = load_json(model_dir, "eval", "report.json")
    during_training = load_json(trained[0], "eval", "report.json")
    assert report["global_step"] == during_training["global_step"] == 20
    for key in ("accuracy", "auc", "eer", "threshold"):
        assert report[key] == pytest.approx(during_training[key], abs=1e-6), key
    np.testing.assert_allclose(report["fold_accuracy"], during_training["fold_accuracy"])
    assert os.path.isfile(os.path.join(model_dir, "eval", "roc.png"))


def test_export_mode_with_the_runs_own_flagfile(trained, tmp_path):
    """flags.txt reproduces the run: --flagfile, then the mode and the new directory."""
    model_dir = copy_run(trained[0], tmp_path / "run")
    proc = check(run_cli(f"--flagfile={os.path.join(trained[0], 'flags.txt')}",
                         "--mode=export", f"--model_dir={model_dir}"))
    saved_model = printed_path(proc.stdout, "SavedModel")
    assert os.path.dirname(saved_model) == os.path.join(model_dir, "export", "manual")
    assert os.path.isfile(os.path.join(saved_model, "saved_model.pb"))
    frozen = printed_path(proc.stdout, "frozen graph")
    assert frozen == os.path.join(model_dir, "frozen",
                                  f"embedding_{os.path.basename(saved_model)}.pb")
    assert {"input", "embedding"} <= graph_node_names(frozen)


def test_nan_loss_exits_with_the_step_and_the_last_good_checkpoint(data, tmp_path):
    """A learning rate of 1e38 overflows the weights in the first update: the next loss is NaN.

    Through --data_url/--train_url, so the ModelArts mapping is exercised by the real CLI too.
    """
    model_dir = str(tmp_path / "run")
    proc = check(run_cli("--mode=train", f"--data_url={data}", f"--train_url={model_dir}",
                         "--train_steps=20", "--learning_rate=1e38", "--optimizer=sgd", *NET),
                 returncode=1)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "the loss became NaN/Inf" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    match = re.search(r"at global step (\d+);.*Last good checkpoint: (\S+)\. ", lines[0])
    assert match, lines[0]
    step, checkpoint = int(match.group(1)), match.group(2)
    assert checkpoint == tf.train.latest_checkpoint(model_dir)
    assert tf.train.load_variable(checkpoint, "global_step") < step < 20


def test_cli_prints_a_bad_setting_on_one_line_and_writes_nothing(data, tmp_path):
    proc = check(run_cli("--mode=train", f"--train_records={data / 'train'}",
                         f"--model_dir={tmp_path / 'run'}", "--train_steps=5",
                         "--head=circle_pair", *NET), returncode=1)
    assert re.search(r"^.*--head=circle_pair needs P×K batches: set --images_per_identity=K.*$",
                     proc.stderr, re.M), proc.stderr
    assert "Traceback" not in proc.stderr
    # The line and a pointer to --help, not absl's whole short help (once ~180 lines).
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert "see --help" in proc.stderr
    assert not (tmp_path / "run").exists()
