"""The evaluation protocol interface (``evaluation/protocol.py``, ``evaluation/registry.py``).

References: the metric keys the verification metric gave before protocols were objects (the
LFW protocol's scalars and vectors per set, ``<set>_single/`` without flip TTA, ``mean/`` over
several sets: ``evaluation.verification_metric``'s docstring), and a protocol registered here,
in a test, that ``training/`` must run without an edit.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import estimator_main
from data_tools.fileio import write_metrics_json
from evaluation import registry, verification_protocol
from export import export_dirs
from tests import model_helpers
from tests import records_helpers as rh
from training import builders, evaluation, runner
from training.params import ParamsError, build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = estimator_main.FLAGS
SIZE = 32
NET = ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
       "--gamma=32", "--eval_batch_size=4", "--noprogress"]
SCALARS = ("accuracy", "accuracy_std", "val_far1e-3", "val_std", "far", "auc", "eer",
           "threshold")
VECTORS = ("fold_accuracy", "fold_threshold", "tpr", "fpr")
MONITORING = {"pairs/mean_cosine_same", "pairs/mean_cosine_different"}


def set_keys(name):
    return {f"{prefix}/{metric}" for prefix in (name, name + "_single")
            for metric in SCALARS + VECTORS}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=8, size=SIZE)
    rh.write_pair_records(str(root / "a"), num_pairs=10, size=SIZE, n_folds=2)
    rh.write_pair_records(str(root / "b"), num_pairs=15, size=SIZE, n_folds=3)
    return root


def flag_values(args):
    """The flag values of estimator_main on ``args`` (the global FLAGS restored afterwards)."""
    FLAGS.unparse_flags()
    try:
        FLAGS(["estimator_main.py"] + list(args))
        return estimator_main.flag_values()
    finally:
        FLAGS.unparse_flags()


def test_the_registry_names_the_protocols_of_the_flag():
    assert registry.names() == ("verification", "retrieval")
    assert set(estimator_main.FLAGS["eval_protocol"].parser.enum_values) == set(registry.names())


@pytest.mark.parametrize("name", ["nope", "Verification"])
def test_the_registry_refuses_an_unknown_name_in_one_line(name):
    with pytest.raises(ValueError) as raised:
        registry.build({"eval_protocol": name})
    message = str(raised.value)
    assert "\n" not in message
    assert f"--eval_protocol={name}" in message and "verification, retrieval" in message


def test_build_params_reports_an_unknown_protocol_as_a_params_error(data, tmp_path):
    values = flag_values(["--mode=evaluate", f"--train_records={data / 'train'}",
                          f"--eval_records={data / 'a'}", f"--model_dir={tmp_path}"] + NET)
    values["eval_protocol"] = "nope"  # past the flag's enum: a caller of the library
    with pytest.raises(ParamsError, match=r"^--eval_protocol=nope: unknown"):
        build_params(values)


def _spec_keys(proto, mode=tf.estimator.ModeKeys.EVAL):
    """The metric keys (EVAL) or prediction keys (PREDICT) of the model_fn that receives this
    protocol's eval spec, on one batch of its input."""
    model_fn = model_helpers.build_model_fn(
        backbone="tiny", head="circle", num_classes=4, embedding_size=16, gamma=32.0,
        eval_spec_fn=proto.eval_spec_fn())
    with tf.Graph().as_default():
        features, labels = tf.data.make_one_shot_iterator(proto.input_fn()()).get_next()
        spec = model_fn(features, labels, mode)
    return set(spec.eval_metric_ops if mode == tf.estimator.ModeKeys.EVAL else spec.predictions)


def _verification(data, names, on_host=False, named=True):
    sizes = {"a": (10, 2), "b": (15, 3)}
    eval_sets = [(n, str(data / n), *sizes[n]) for n in names]
    return verification_protocol.VerificationProtocol(
        eval_sets, named=named, image_size=SIZE, flip=True, batch_size=4, on_host=on_host)


def test_one_set_gives_the_keys_it_gave_before(data):
    proto = _verification(data, ["a"], named=False)
    assert proto.eval_name == "a"
    assert _spec_keys(proto) == set_keys("a") | MONITORING


def test_two_named_sets_give_the_keys_they_gave_before(data):
    proto = _verification(data, ["a", "b"])
    assert proto.eval_name == "verification"
    mean = {f"mean/{m}" for m in ("accuracy", "val_far1e-3", "auc", "eer")}
    assert _spec_keys(proto) == set_keys("a") | set_keys("b") | mean | MONITORING
    assert [type(e).__name__ for e in proto.round_loggers()] == ["SetsTableLogger"]


def test_on_the_host_the_graph_holds_no_metric_and_predict_gives_the_pairs(data):
    proto = _verification(data, ["a", "b"], on_host=True)
    assert _spec_keys(proto) == MONITORING  # no py_func for CANN: the host computes them
    assert _spec_keys(proto, tf.estimator.ModeKeys.PREDICT) == {
        "embeddings1", "embeddings2", "single_embeddings1", "single_embeddings2", "issame",
        "pair_index", "weight", "fold", "set_index"}


def test_a_protocol_without_a_host_path_is_refused_on_npu(data, tmp_path):
    values = flag_values(["--mode=evaluate", f"--train_records={data / 'train'}",
                          f"--eval_records={data / 'train'}", f"--model_dir={tmp_path}",
                          "--eval_protocol=retrieval"] + NET)
    values["device"] = "npu"
    with pytest.raises(ParamsError, match="not available on --device=npu"):
        build_params(values)


# ---- a protocol registered by a test: training/ runs it unchanged ----------------------------

class MeanCosineProtocol(verification_protocol.VerificationProtocol):
    """docs/DESIGN.md's example: pair records ranked by the mean cosine of matched pairs."""

    name = "mean_cosine"
    runs_on_host = False
    best_metric = "mean_cosine/same"

    def metric_fn(self):
        def metric(embeddings1, embeddings2, issame, weight, **_):
            cosine = tf.reduce_sum(embeddings1 * embeddings2, axis=1)
            same = weight * tf.cast(issame, tf.float32)
            return {"mean_cosine/same": tf.metrics.mean(cosine, weights=same)}
        return metric

    def export_report_fn(self):
        def write(eval_result, directory):
            return {"report.json": self.write_report(eval_result, directory, {}, "")}
        return write

    def round_summary(self, eval_result):
        return f"mean cosine {float(eval_result['mean_cosine/same']):.4f}"

    def write_report(self, eval_result, model_dir, extra, subdirectory="eval"):
        directory = os.path.join(model_dir, subdirectory)
        tf.io.gfile.makedirs(directory)
        return write_metrics_json(os.path.join(directory, "report.json"),
                                  {"same": float(eval_result["mean_cosine/same"])}, extra,
                                  protocol=self.name)


@pytest.fixture
def mean_cosine(monkeypatch):
    monkeypatch.setitem(registry.PROTOCOLS, MeanCosineProtocol.name, MeanCosineProtocol)


def test_a_protocol_registered_in_a_test_runs_through_training(data, tmp_path, mean_cosine,
                                                                capsys):
    values = flag_values(["--mode=train_and_evaluate", f"--train_records={data / 'train'}",
                          f"--eval_records={data / 'a'}", f"--model_dir={tmp_path}",
                          "--train_steps=2", "--save_checkpoints_steps=2"] + NET)
    values["eval_protocol"] = MeanCosineProtocol.name
    p = build_params(values)
    assert isinstance(builders.eval_protocol(p), MeanCosineProtocol)
    runner.run_mode(p)
    written = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert written["protocol"] == "mean_cosine" and written["extra"]["mode"] == p["mode"]
    # The best export was ranked by the protocol's metric and carries its report.
    best = export_dirs.best_export(str(tmp_path / "export" / "best"))
    extra = os.path.join(best, export_dirs.ASSETS_EXTRA)
    with open(os.path.join(extra, export_dirs.EXPORT_METRIC_JSON)) as fh:
        record = json.load(fh)
    assert record["metric"] == "mean_cosine/same"
    assert record["value"] == pytest.approx(written["same"])
    with open(os.path.join(extra, "report.json")) as fh:
        assert json.load(fh)["same"] == pytest.approx(written["same"])
    assert -1.0 <= written["same"] <= 1.0
    result = evaluation.evaluate_checkpoint(builders.build_estimator(
        dict(p, mode="evaluate")), p)
    assert set(result) >= {"mean_cosine/same", "pairs/mean_cosine_same", "global_step"}
    # The monitoring mean the model_fn always adds is the same number over the same pairs.
    np.testing.assert_allclose(result["mean_cosine/same"], result["pairs/mean_cosine_same"],
                               rtol=1e-5)
    assert "best SavedModel" in capsys.readouterr().out


def test_the_old_compare_reports_path_runs_the_new_command(tmp_path):
    outputs = []
    for module in ("evaluation.compare_reports", "export.compare_reports"):
        # A run directory without a report: the command's own one-line failure.
        done = subprocess.run([sys.executable, "-m", module, str(tmp_path)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                              text=True, timeout=120, check=False)
        outputs.append((done.returncode, done.stdout, done.stderr))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] != 0 and str(tmp_path) in outputs[0][1] + outputs[0][2]
