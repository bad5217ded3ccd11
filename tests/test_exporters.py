"""The best exporter and the export ranking: the best model is really the best one.

A fake estimator stands in for ``export_saved_model`` (each call writes ``<base>/<timestamp>/``
with the assets it is handed, as the estimator does), so the sequences of evaluations below run
in milliseconds on TF 1.15 and 2.x alike. The fresh-run and restart sequences are the two that
``tf.estimator.BestExporter`` gets wrong (TF 1.15: the first evaluation ties itself and is never
exported; TF 2.x: a restart exports a worse first evaluation and can delete the better model).
"""

import json
import os
import shutil

import pytest

from evaluation import verification_metric as eval_metrics
from export import export_dirs, exporters

KEY = "lfw/accuracy"


def eval_result(accuracy, step):
    """What ``estimator.evaluate`` returns with the verification metric, at ``accuracy``."""
    result = {f"lfw/{name}": 0.5 for name, _ in eval_metrics.SCALAR_METRICS}
    result.update({"lfw/fold_accuracy": [accuracy] * 2, "lfw/fold_threshold": [1.0, 1.1],
                   "lfw/tpr": [0.0, 0.5, 1.0], "lfw/fpr": [0.0, 0.2, 1.0]})
    result.update({KEY: accuracy, "global_step": step})
    return result


class FakeEstimator:
    """``export_saved_model`` as the estimator does it: a new timestamped directory per call."""

    def __init__(self, clock=1700000000):
        self.clock = clock

    def export_saved_model(self, export_dir_base, serving_input_receiver_fn, assets_extra=None,
                           checkpoint_path=None):
        self.clock += 1
        path = os.path.join(export_dir_base, str(self.clock))
        os.makedirs(os.path.join(path, "assets.extra"))
        with open(os.path.join(path, "saved_model.pb"), "w") as fh:
            fh.write(checkpoint_path or "")
        for name, source in (assets_extra or {}).items():
            shutil.copy(source, os.path.join(path, "assets.extra", name))
        return path.encode("utf-8")


def evaluate_sequence(exporter, estimator, base, accuracies, first_step=100):
    """Feed ``accuracies`` as successive evaluations; returns the exported path (or None) each."""
    paths = []
    for i, accuracy in enumerate(accuracies):
        step = first_step * (i + 1)
        result = eval_result(accuracy, step)
        paths.append(exporter.export(estimator, base, f"model.ckpt-{step}", result, False))
    return paths


def checkpoint_of(path):
    with open(os.path.join(path, "saved_model.pb")) as fh:
        return fh.read()


def test_fresh_run_exports_the_first_evaluation_and_ties(tmp_path):
    base = str(tmp_path / "best")
    exporter = exporters.BestVerificationExporter(None, exports_to_keep=3)
    paths = evaluate_sequence(exporter, FakeEstimator(), base, [0.90, 0.90, 0.89])
    assert paths[0] is not None, "the first evaluation must be exported"
    assert paths[1] is not None, "a tie exports (compare with >=)"
    assert paths[2] is None
    assert [checkpoint_of(p) for p in export_dirs.list_exports(base)] == [
        "model.ckpt-100", "model.ckpt-200"]
    best = export_dirs.best_export(base)
    assert export_dirs.recorded_metric(best) == pytest.approx(0.90)


def test_restart_never_displaces_a_better_earlier_export(tmp_path):
    base = str(tmp_path / "best")
    estimator = FakeEstimator()
    first_run = exporters.BestVerificationExporter(None, exports_to_keep=2)
    evaluate_sequence(first_run, estimator, base, [0.80, 0.95])
    # A restarted job builds a new exporter with no memory of the first run.
    restarted = exporters.BestVerificationExporter(None, exports_to_keep=2)
    paths = evaluate_sequence(restarted, estimator, base, [0.85, 0.88, 0.90], first_step=1000)
    assert paths == [None, None, None]
    best = export_dirs.best_export(base)
    assert checkpoint_of(best) == "model.ckpt-200"
    assert export_dirs.recorded_metric(best) == pytest.approx(0.95)


def test_exports_to_keep_deletes_the_worst_not_the_oldest(tmp_path):
    base = str(tmp_path / "best")
    exporter = exporters.BestVerificationExporter(None, exports_to_keep=2)
    estimator = FakeEstimator()
    evaluate_sequence(exporter, estimator, base, [0.70, 0.80, 0.90])
    kept = [checkpoint_of(p) for p in export_dirs.list_exports(base)]
    assert kept == ["model.ckpt-200", "model.ckpt-300"]
    # Older, better exports survive newer ones that tie below them.
    assert [v for _, v in export_dirs.ranked_exports(base)] == pytest.approx([0.90, 0.80])


def test_each_export_records_its_metric_and_report(tmp_path):
    base = str(tmp_path / "best")
    exporter = exporters.BestVerificationExporter(None)
    (path,) = evaluate_sequence(exporter, FakeEstimator(), base, [0.75])
    with open(os.path.join(path, "assets.extra", export_dirs.EXPORT_METRIC_JSON)) as fh:
        record = json.load(fh)
    assert record == {"metric": KEY, "value": 0.75, "global_step": 100}
    with open(os.path.join(path, "assets.extra", "report.json")) as fh:
        assert json.load(fh)["accuracy"] == 0.75
    assert os.path.isfile(os.path.join(path, "assets.extra", "roc.png"))


def test_missing_metric_is_a_clear_error(tmp_path):
    exporter = exporters.BestVerificationExporter(None)
    with pytest.raises(ValueError, match="lfw/accuracy"):
        exporter.export(FakeEstimator(), str(tmp_path), "ckpt", {"loss": 1.0}, False)


def test_ranking_prefers_recorded_values_then_recency(tmp_path):
    base = tmp_path / "best"
    for version, value in (("100", 0.9), ("200", None), ("300", 0.9), ("400", 0.5)):
        extra = base / version / "assets.extra"
        extra.mkdir(parents=True)
        (base / version / "saved_model.pb").write_text("")
        if value is not None:
            (extra / "report.json").write_text(json.dumps({"accuracy": value}))
    (base / "temp-500").mkdir()  # an export in progress is never a candidate
    ranked = export_dirs.ranked_exports(str(base))
    assert [os.path.basename(p) for p, _ in ranked] == ["300", "100", "400", "200"]
    assert export_dirs.best_export(str(base)) == str(base / "300")
    assert export_dirs.best_export(str(tmp_path / "absent")) is None
