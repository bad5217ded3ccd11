"""Several named verification sets per evaluation round (``--eval_records=a=DIR,b=DIR``).

The reference of every per-set number is the same set evaluated alone (``--eval_records=a=DIR``,
the one-set path that existed before): two synthetic pair sets of different size, fold count
and image size are evaluated together and apart from one checkpoint of the tiny backbone, in the
graph (``estimator.evaluate``) and on the host (Ascend's PREDICT path), and must agree exactly.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import app

import estimator_main
from data_tools import input_fns
from evaluation import sets as eval_sets
from evaluation import verification_metric as eval_metrics
from export import export_dirs, exporters
from tests import records_helpers as rh
from tests.test_exporters import FakeEstimator
from training import builders, evaluation, runner
from training.params import build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = estimator_main.FLAGS
SIZE = 32
# Set a: 10 pairs in 2 folds at 32x32; set b: 15 pairs in 3 folds at 40x40 (resized to 32).
SETS = {"a": (10, 2, 32), "b": (15, 3, 40)}
NET = ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
       "--gamma=32", "--eval_batch_size=4", "--noprogress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=8, size=SIZE)
    for name, (num_pairs, n_folds, size) in SETS.items():
        rh.write_pair_records(str(root / name), num_pairs=num_pairs, size=size, n_folds=n_folds)
    return root


def sets_flag(data, *names):
    return ",".join(f"{name}={data / name}" for name in names)


def params_of(args):
    """build_params on these flags (the global FLAGS are restored afterwards)."""
    FLAGS.unparse_flags()
    try:
        FLAGS(["estimator_main.py"] + list(args))
        return build_params(estimator_main.flag_values())
    finally:
        FLAGS.unparse_flags()


def eval_params(data, model_dir, eval_records, *extra):
    return params_of(["--mode=evaluate", f"--train_records={data / 'train'}",
                      f"--eval_records={eval_records}", f"--model_dir={model_dir}"] + NET
                     + list(extra))


# ---- flag values --------------------------------------------------------------------------------

def test_plain_directory_is_one_set_named_lfw(data, tmp_path):
    p = eval_params(data, tmp_path, str(data / "a"))
    assert [s["name"] for s in p["eval_sets"]] == ["lfw"]
    assert not p["eval_sets_named"]
    assert (p["num_pairs"], p["num_folds"], p["best_metric"]) == (10, 2, "lfw/accuracy")
    assert builders.eval_name(p) == "lfw"


def test_named_sets_keep_their_order_sizes_and_folds(data, tmp_path):
    p = eval_params(data, tmp_path, sets_flag(data, "b", "a"), "--best_metric=mean/accuracy")
    assert [(s["name"], s["num_pairs"], s["num_folds"]) for s in p["eval_sets"]] == [
        ("b", 15, 3), ("a", 10, 2)]
    assert p["eval_sets_named"] and p["best_metric"] == "mean/accuracy"
    assert p["num_pairs"] is None  # several sets: no single size
    assert builders.eval_name(p) == "verification"
    assert json.loads(json.dumps(p.to_json_dict()))["eval_sets"][0]["records"] == str(data / "b")


@pytest.mark.parametrize("text, expected", [
    ("records/lfw", ([("lfw", "records/lfw")], False)),
    ("lfw=records/lfw, cfp_fp=records/cfp_fp",
     ([("lfw", "records/lfw"), ("cfp_fp", "records/cfp_fp")], True)),
    ("agedb_30=gs://bucket/agedb", ([("agedb_30", "gs://bucket/agedb")], True)),
])
def test_parse_eval_records(text, expected):
    assert eval_sets.parse_eval_records(text) == expected


def test_best_metric_choices():
    assert eval_sets.best_metric_choices(["lfw"]) == ["lfw/accuracy", "lfw/val_far1e-3",
                                                      "lfw/auc"]
    assert "mean/accuracy" in eval_sets.best_metric_choices(["lfw", "cfp_fp"])
    assert eval_sets.resolve_best_metric(None, ["cfp_fp", "lfw"]) == "cfp_fp/accuracy"


USAGE_ERRORS = [
    ("unknown_set", "{a},{b}", ["--best_metric=c/accuracy"],
     "--best_metric=c/accuracy is not one of a/accuracy, a/val_far1e-3, a/auc, b/accuracy"),
    ("mean_of_one_set", "{a}", ["--best_metric=mean/accuracy"],
     "--best_metric=mean/accuracy is not one of a/accuracy, a/val_far1e-3, a/auc"),
    ("lower_is_better", "{a},{b}", ["--best_metric=a/eer"], "--best_metric=a/eer is not one of"),
    ("plain_dir_default_name", "{plain}", ["--best_metric=a/accuracy"],
     "is not one of lfw/accuracy, lfw/val_far1e-3, lfw/auc"),
    ("empty_records", "{a},b=", [], "'b=' is not NAME=DIR"),
    ("twice", "{a},a={data}/b", [], "names the set 'a' twice"),
    ("reserved_mean", "mean={data}/a", [], "'mean' is reserved"),
    ("bad_name", "1st={data}/a", [], "set name '1st' must start with a letter"),
    ("image_records", "{a},train={data}/train", [],
     "set train ({data}/train) holds images records, not pairs"),
    ("retrieval_with_sets", "{a},{b}", ["--eval_protocol=retrieval"],
     "--eval_protocol=retrieval takes one directory of image records"),
]


@pytest.mark.parametrize("eval_records, extra, message", [c[1:] for c in USAGE_ERRORS],
                         ids=[c[0] for c in USAGE_ERRORS])
def test_usage_errors_are_one_line_before_anything_is_written(data, tmp_path, parse_flags,
                                                              monkeypatch, eval_records, extra,
                                                              message):
    values = {"a": f"a={data / 'a'}", "b": f"b={data / 'b'}", "plain": str(data / "a"),
              "data": str(data)}
    model_dir = tmp_path / "run"
    parse_flags(["--mode=train_and_evaluate", f"--train_records={data / 'train'}",
                 f"--eval_records={eval_records.format(**values)}", f"--model_dir={model_dir}",
                 "--train_steps=5"] + NET + extra)
    monkeypatch.setattr(runner, "run_mode", pytest.fail)
    with pytest.raises(app.UsageError) as info:
        estimator_main.main(["estimator_main.py"])
    text = str(info.value)
    assert message.format(**values) in text
    assert "\n" not in text
    assert not model_dir.exists()


# ---- one pass over several sets -----------------------------------------------------------------

def test_the_sets_input_never_mixes_sets_in_a_batch(data):
    input_fn = input_fns.pair_sets_input_fn_builder(
        [(str(data / "a"), None), (str(data / "b"), 15)], image_size=SIZE, batch_size=4)
    with tf.Graph().as_default():
        batches = rh.run_dataset(input_fn())
    seen = {0: [], 1: []}
    for features, _ in batches:
        (set_index,) = set(features["set_index"].tolist())
        seen[set_index] += [i for i, w in zip(features["pair_index"], features["weight"]) if w]
    assert len(batches) == 3 + 4  # 10 pairs -> 3 batches of 4, 15 pairs -> 4
    assert sorted(seen[0]) == list(range(10)) and sorted(seen[1]) == list(range(15))


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    """A tiny model trained 3 steps: (model_dir)."""
    model_dir = str(tmp_path_factory.mktemp("ckpt") / "run")
    p = params_of(["--mode=train", f"--train_records={data / 'train'}",
                   f"--model_dir={model_dir}", "--train_steps=3"] + NET)
    estimator = builders.build_estimator(p)
    estimator.train(builders.train_input_fn(p), max_steps=3)
    return model_dir


def evaluate(p, on_host=False):
    if not on_host:
        return evaluation.evaluate_checkpoint(builders.build_estimator(p), p)
    p = dict(p, device="npu")  # the Ascend path: PREDICT on the device, metrics on the host
    estimator = tf.estimator.Estimator(builders.build_model_fn(p), p["model_dir"])
    return evaluation.evaluate_checkpoint(estimator, p)


def assert_set_equal(together, alone, name):
    keys = [k for k in alone if k.startswith((f"{name}/", f"{name}_single/"))]
    assert len(keys) == 2 * (len(eval_metrics.SCALAR_METRICS) + len(eval_metrics.VECTOR_METRICS))
    for key in keys:
        assert np.array_equal(np.asarray(together[key]), np.asarray(alone[key])), key


@pytest.fixture(scope="module")
def results(data, checkpoint):
    """{(sets, on_host): eval result} of the sets together and each alone."""
    out = {}
    for on_host in (False, True):
        for names in (("a", "b"), ("a",), ("b",)):
            p = eval_params(data, checkpoint, sets_flag(data, *names))
            out[names, on_host] = evaluate(p, on_host)
    return out


@pytest.mark.parametrize("on_host", [False, True], ids=["graph", "host"])
def test_each_sets_metrics_equal_the_set_evaluated_alone(results, on_host):
    together = results[("a", "b"), on_host]
    for name in ("a", "b"):
        assert_set_equal(together, results[(name,), on_host], name)
    assert len(together["a/fold_accuracy"]) == 2 and len(together["b/fold_accuracy"]) == 3
    for metric in eval_metrics.MEAN_METRICS:
        assert together[f"mean/{metric}"] == pytest.approx(
            (together[f"a/{metric}"] + together[f"b/{metric}"]) / 2, abs=1e-6)
    assert int(together["global_step"]) == 3


def test_host_and_graph_agree(results):
    graph, host = results[("a", "b"), False], results[("a", "b"), True]
    for key in host:
        if key.startswith(("a/", "b/", "mean/")):
            np.testing.assert_allclose(np.asarray(host[key]), np.asarray(graph[key]), atol=1e-6,
                                       err_msg=key)


def test_evaluate_writes_a_report_per_set_and_prints_the_table(data, checkpoint, results,
                                                               tmp_path, capsys):
    p = eval_params(data, str(tmp_path), sets_flag(data, "a", "b"))
    evaluation.write_eval_report(p, results[("a", "b"), False])
    out = capsys.readouterr().out
    for name in ("a", "b"):
        written = json.loads((tmp_path / "eval" / name / "report.json").read_text())
        assert written["accuracy"] == pytest.approx(float(results[(name,), False][
            f"{name}/accuracy"]))
        assert written["extra"]["eval_set"] == name
        assert (tmp_path / "eval" / name / "roc.png").read_bytes()[:4] == b"\x89PNG"
    primary = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert primary["extra"]["eval_set"] == "a"
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["a"][1] == "10" and rows["b"][1] == "15" and rows["mean"][1] == "25"
    together = results[("a", "b"), False]
    assert float(rows["b"][2]) == pytest.approx(float(together["b/accuracy"]), abs=5e-5)
    assert float(rows["b"][4]) == pytest.approx(float(together["b/accuracy_std"]), abs=5e-5)


# ---- the best export by --best_metric ----------------------------------------------------------

class NestedFakeEstimator(FakeEstimator):
    """FakeEstimator whose assets may sit in sub-directories of assets.extra, as the
    estimator's own export copies them."""

    def export_saved_model(self, export_dir_base, serving_input_receiver_fn, assets_extra=None,
                           checkpoint_path=None):
        flat = {name.replace("/", "__"): source for name, source in (assets_extra or {}).items()}
        path = super().export_saved_model(export_dir_base, serving_input_receiver_fn, flat,
                                          checkpoint_path).decode("utf-8")
        extra = os.path.join(path, "assets.extra")
        for name in flat:
            if "__" in name:
                target = os.path.join(extra, *name.split("__"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(extra, name), target)
        return path.encode("utf-8")


def two_set_result(accuracy_a, accuracy_b, step):
    result = {"global_step": step}
    for name, accuracy in (("a", accuracy_a), ("b", accuracy_b)):
        result.update({f"{name}/{metric}": 0.5 for metric, _ in eval_metrics.SCALAR_METRICS})
        result.update({f"{name}/accuracy": accuracy, f"{name}/fold_accuracy": [accuracy] * 2,
                       f"{name}/fold_threshold": [1.0, 1.1], f"{name}/tpr": [0.0, 0.5, 1.0],
                       f"{name}/fpr": [0.0, 0.2, 1.0]})
    for metric in eval_metrics.MEAN_METRICS:
        result[f"mean/{metric}"] = (result[f"a/{metric}"] + result[f"b/{metric}"]) / 2
    return result


# (a, b) accuracies of three rounds: a is best at round 1, b at round 2, the mean at round 3.
ROUNDS = [(0.95, 0.60), (0.70, 0.90), (0.90, 0.85)]


@pytest.mark.parametrize("metric, best_round", [
    pytest.param("a/accuracy", 0, marks=pytest.mark.slow),
    pytest.param("b/accuracy", 1, marks=pytest.mark.slow), ("mean/accuracy", 2)])
def test_best_metric_chooses_the_export(tmp_path, metric, best_round):
    base = str(tmp_path / "best")
    exporter_list = exporters.build_exporters(None, metric_key=metric, exports_to_keep=1,
                                              sets=[("a", 10), ("b", 15)])
    best = next(e for e in exporter_list if e.name == "best")
    estimator = NestedFakeEstimator()
    for i, (a, b) in enumerate(ROUNDS):
        best.export(estimator, base, f"model.ckpt-{i + 1}", two_set_result(a, b, i + 1), False)
    path = export_dirs.best_export(base)
    assert export_dirs.list_exports(base) == [path]  # exports_to_keep=1 kept the best one
    with open(os.path.join(path, "saved_model.pb")) as fh:
        assert fh.read() == f"model.ckpt-{best_round + 1}"
    a, b = ROUNDS[best_round]
    expected = {"a/accuracy": a, "b/accuracy": b, "mean/accuracy": (a + b) / 2}[metric]
    assert export_dirs.recorded_metric(path) == pytest.approx(expected)
    extra = os.path.join(path, "assets.extra")
    for name, accuracy in (("a", a), ("b", b)):
        with open(os.path.join(extra, name, "report.json")) as fh:
            assert json.load(fh)["accuracy"] == pytest.approx(accuracy)
        assert os.path.isfile(os.path.join(extra, name, "roc.png"))
    with open(os.path.join(extra, "report.json")) as fh:  # the primary (first) set's
        assert json.load(fh)["accuracy"] == pytest.approx(a)


def test_a_table_is_logged_after_each_round(monkeypatch):
    logged = []
    monkeypatch.setattr(eval_sets.logging, "info", lambda fmt, *args: logged.append(fmt % args))
    (table,) = [e for e in exporters.build_exporters(None, sets=[("a", 10), ("b", 15)])
                if isinstance(e, exporters.SetsTableLogger)]
    for i, (a, b) in enumerate(ROUNDS):
        table.export(None, "unused", "ckpt", two_set_result(a, b, 10 * (i + 1)), False)
    assert len(logged) == len(ROUNDS)
    lines = logged[1].splitlines()
    assert lines[0] == "verification at step 20"
    assert lines[1].split()[:3] == ["set", "pairs", "accuracy"]
    assert lines[2].split()[:3] == ["a", "10", "0.7000"]
    assert lines[3].split()[:3] == ["b", "15", "0.9000"]
    assert lines[4].split()[:3] == ["mean", "25", "0.8000"]
    assert not [e for e in exporters.build_exporters(None)
                if isinstance(e, exporters.SetsTableLogger)]


# ---- the command line, end to end --------------------------------------------------------------

@pytest.mark.slow
def test_train_and_evaluate_on_two_sets(data, tmp_path):
    model_dir = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, "estimator_main.py", "--mode=train_and_evaluate",
         f"--train_records={data / 'train'}", f"--eval_records={sets_flag(data, 'a', 'b')}",
         f"--model_dir={model_dir}", "--train_steps=20", "--save_checkpoints_steps=10",
         "--eval_throttle_secs=0", "--best_metric=b/accuracy"] + NET,
        cwd=ROOT, env=env, capture_output=True, encoding="utf-8", timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # One line per round (the INFO log with each round's table is off), the table at the end.
    assert re.search(r"^evaluation at step 10: accuracy a \d\.\d{4}, b \d\.\d{4}$", proc.stdout,
                     re.M), proc.stdout
    assert proc.stdout.count("verification at step 20") == 1
    reports = {name: json.loads((model_dir / "eval" / name / "report.json").read_text())
               for name in ("a", "b")}
    assert [len(reports[n]["fold_accuracy"]) for n in ("a", "b")] == [2, 3]
    best = export_dirs.best_export(str(model_dir / "export" / "best"))
    with open(os.path.join(best, "assets.extra", "export_metric.json")) as fh:
        record = json.load(fh)
    assert record["metric"] == "b/accuracy"
    for name in ("a", "b"):
        assert os.path.isfile(os.path.join(best, "assets.extra", name, "report.json"))
    tags = set()
    for event_file in tf.io.gfile.glob(str(model_dir / "eval_verification" / "events.*")):
        for event in tf.train.summary_iterator(event_file):
            tags.update(value.tag for value in event.summary.value)
    assert {"a/accuracy", "b/accuracy", "mean/accuracy", "b/auc"} <= tags
