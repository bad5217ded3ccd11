"""Exporters for the EvalSpec and the checkpoint -> SavedModel path of ``--mode=export``.

The best exporter keeps the SavedModels with the highest verification accuracy and stores, in
each export's ``assets.extra``, the eval report (metrics per fold, the decision threshold) and
the metric value it was chosen on, so a served model carries the threshold it was validated with
and every later reader can rank the exports (``export.export_dirs``). Everything in
``assets.extra`` is copied in before the estimator renames its temporary export directory: a crash
never leaves a half-written model, nor a model without its numbers. Next to the report,
``transform.json`` holds the conversion transform of the evaluation records (crop box, size,
resampling: the manifest's ``transform``), what ``export.embed`` applies to raw photos so that
they match the records the report was measured on.

Why not ``tf.estimator.BestExporter``: it remembers the best result in memory and re-reads it
from event files on start, and both versions get it wrong in a way a user meets on the first
real run. On TF 1.15 the event file already holds the current evaluation, so the first
evaluation ties itself and is never exported (``export/best`` stays empty); on TF 2.x a
restarted job exports its first evaluation even when it is worse, and with ``exports_to_keep``
the better earlier model can be deleted. This exporter compares against what is on disk: the
values recorded with the exports themselves.
"""

import json
import os
import shutil
import tempfile

import tensorflow.compat.v1 as tf

from evaluation import reports as report
from evaluation import sets as eval_sets
from evaluation import verification_metric as eval_metrics
from evaluation.sets import SetsTableLogger  # noqa: F401  (an EvalSpec exporter, re-exported)
from export import export_dirs

DEFAULT_METRIC = "lfw/accuracy"
ASSETS_EXTRA = "assets.extra"


def _as_text(path):
    return path.decode("utf-8") if isinstance(path, bytes) else path


def write_export_report(export_path, eval_result, prefix="lfw"):
    """Write report.json and roc.png of ``eval_result`` into ``<export>/assets.extra``."""
    if not eval_result or f"{prefix}/accuracy" not in eval_result:
        return None
    metrics = eval_metrics.metrics_from_eval_result(eval_result, prefix)
    return report.write_report(metrics, os.path.join(_as_text(export_path), ASSETS_EXTRA))


def write_export_transform(export_path, transform):
    """Write the evaluation records' conversion ``transform`` (dict, see
    ``data_tools.manifest.conversion_transform``) as ``<export>/assets.extra/transform.json``;
    nothing when it is None. Returns the path or None."""
    if transform is None:
        return None
    return report.write_transform(os.path.join(_as_text(export_path), ASSETS_EXTRA), transform)


def read_export_transform(saved_model_dir):
    """The conversion transform a SavedModel carries (dict), or None when it has none."""
    return report.read_transform(os.path.join(_as_text(saved_model_dir), ASSETS_EXTRA))


def metric_value(eval_result, metric_key):
    """``eval_result[metric_key]`` as a float; a clear error when the metric was not built."""
    if not eval_result or metric_key not in eval_result:
        raise ValueError(f"the eval result has no {metric_key!r}; was the verification metric "
                         "built?")
    return float(eval_result[metric_key])


def _global_step(eval_result):
    step = eval_result.get(tf.GraphKeys.GLOBAL_STEP, eval_result.get("global_step"))
    return None if step is None else int(step)


class BestMetricExporter(tf.estimator.Exporter):
    """Exports when ``metric_key`` is at least the best value recorded with an existing export.

    Ties export (the newer model of equal accuracy has trained longer), so the first evaluation
    of a fresh run always exports. ``exports_to_keep`` keeps that many exports ranked by recorded
    value (then recency): the best one is never deleted, whatever the order of evaluations.
    ``report_fn(eval_result, directory) -> {name: path}`` writes the evaluation's report files
    to store in ``assets.extra``; ``transform``: the evaluation records' conversion transform
    (``transform.json``); ``assets_extra``: further files, ``{name: source path}``.
    """

    def __init__(self, serving_input_receiver_fn, metric_key, report_fn=None,
                 exports_to_keep=3, name="best", assets_extra=None, transform=None):
        if exports_to_keep is not None and exports_to_keep < 1:
            raise ValueError(f"exports_to_keep must be positive or None, got {exports_to_keep!r}")
        self._name = name
        self._receiver_fn = serving_input_receiver_fn
        self._metric_key = metric_key
        self._report_fn = report_fn
        self._exports_to_keep = exports_to_keep
        self._assets_extra = dict(assets_extra or {})
        self._transform = transform

    @property
    def name(self):
        return self._name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        value = metric_value(eval_result, self._metric_key)
        ranked = export_dirs.ranked_exports(export_path)
        best = next((v for _, v in ranked if v is not None), None)
        if best is not None and value < best:
            tf.logging.info("%s = %.6f is below the best export's %.6f: not exported",
                            self._metric_key, value, best)
            return None
        staging = tempfile.mkdtemp(prefix="export-extra-")
        try:
            assets = self._stage_assets(staging, eval_result, value)
            path = _as_text(estimator.export_saved_model(
                export_path, self._receiver_fn, assets_extra=assets,
                checkpoint_path=checkpoint_path))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        tf.logging.info("best export (%s = %.6f): %s", self._metric_key, value, path)
        self._garbage_collect(export_path)
        return path

    def _stage_assets(self, staging, eval_result, value):
        assets = dict(self._assets_extra)
        if self._report_fn is not None:
            assets.update(self._report_fn(eval_result, staging) or {})
        if self._transform is not None:
            assets[report.TRANSFORM_JSON] = report.write_transform(staging, self._transform)
        record = {"metric": self._metric_key, "value": value,
                  "global_step": _global_step(eval_result)}
        record_path = os.path.join(staging, export_dirs.EXPORT_METRIC_JSON)
        with open(record_path, "w") as fh:
            json.dump(record, fh, sort_keys=True)
        assets[export_dirs.EXPORT_METRIC_JSON] = record_path
        return assets

    def _garbage_collect(self, export_path):
        if self._exports_to_keep is None:
            return
        for path, _ in export_dirs.ranked_exports(export_path)[self._exports_to_keep:]:
            tf.io.gfile.rmtree(path)


# The verification protocol's report files of a best export (one set).
verification_report_fn = eval_metrics.report_fn


class BestVerificationExporter(BestMetricExporter):
    """The best model by verification accuracy, with its report (``lfw/accuracy`` by default).

    ``set_names``: with several verification sets, the report of each goes to
    ``assets.extra/<name>/`` and the first set's also to ``assets.extra/``.
    """

    def __init__(self, serving_input_receiver_fn, metric_key=DEFAULT_METRIC, exports_to_keep=3,
                 prefix="lfw", name="best", assets_extra=None, transform=None, set_names=None):
        report_fn = (eval_sets.sets_report_fn(list(set_names)) if set_names
                     else verification_report_fn(prefix))
        super().__init__(serving_input_receiver_fn, metric_key,
                         report_fn=report_fn,
                         exports_to_keep=exports_to_keep, name=name, assets_extra=assets_extra,
                         transform=transform)


class LatestTransformExporter(tf.estimator.LatestExporter):
    """LatestExporter that also stores the evaluation records' conversion transform."""

    def __init__(self, name, serving_input_receiver_fn, exports_to_keep=3, transform=None):
        self._transform = transform
        super().__init__(name, serving_input_receiver_fn, exports_to_keep=exports_to_keep)

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        path = super().export(estimator, export_path, checkpoint_path, eval_result,
                              is_the_final_export)
        if path:
            write_export_transform(path, self._transform)
        return path


class RoundSummaryExporter(tf.estimator.Exporter):
    """Exports nothing: prints ``summarize(eval_result)``, the one line of each evaluation
    round, to stdout (the estimator logs its results at INFO, which the CLI leaves off). The
    final round is left to the run's report line, which says the same and where it is."""

    def __init__(self, summarize, name="round_summary"):
        self._summarize = summarize
        self._name = name

    @property
    def name(self):
        return self._name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        del estimator, export_path, checkpoint_path
        if eval_result and not is_the_final_export:
            print(self._summarize(eval_result), flush=True)


def best_and_latest_exporters(serving_input_receiver_fn, metric_key, report_fn,
                              exports_to_keep=3, transform=None):
    """The EvalSpec's exporters of an evaluation protocol (``evaluation.protocol``): the best
    model by its ``metric_key`` with the report files ``report_fn`` writes, and the latest.
    ``transform``: the evaluation records' conversion transform, stored with every export."""
    return [
        BestMetricExporter(serving_input_receiver_fn, metric_key, report_fn=report_fn,
                           exports_to_keep=exports_to_keep, transform=transform),
        LatestTransformExporter("latest", serving_input_receiver_fn,
                                exports_to_keep=exports_to_keep, transform=transform),
    ]


def build_exporters(serving_input_receiver_fn, eval_name="lfw", exports_to_keep=3,
                    metric_key=DEFAULT_METRIC, transform=None, sets=None, far_target=1e-3):
    """The verification protocol's exporters: the best model by verification accuracy, and
    the latest (what ``training/runner.py`` builds from ``VerificationProtocol``).

    ``transform``: the evaluation records' conversion transform, stored with every export.
    ``sets``: named verification sets ``[(name, num_pairs)]``: the best export carries the
    report of each, and a table of each round is logged (:class:`SetsTableLogger`).
    """
    del eval_name  # the best exporter reads what it needs from disk, not from event files
    names = [name for name, _ in sets] if sets else None
    exporter_list = [SetsTableLogger(sets, far_target)] if sets else []
    return exporter_list + [
        BestVerificationExporter(serving_input_receiver_fn, metric_key=metric_key,
                                 exports_to_keep=exports_to_keep, transform=transform,
                                 set_names=names),
        LatestTransformExporter("latest", serving_input_receiver_fn,
                                exports_to_keep=exports_to_keep, transform=transform),
    ]


def _temporary_exports(export_dir_base):
    if not os.path.isdir(export_dir_base):
        return []
    return [name for name in os.listdir(export_dir_base) if name.startswith("temp-")]


def export_checkpoint(estimator, export_dir_base, serving_input_receiver_fn,
                      checkpoint_path=None, eval_result=None, transform=None):
    """Export a checkpoint (default: the latest in model_dir) as a SavedModel; returns its path.

    ``eval_result`` and ``transform`` (the evaluation records' conversion transform) go into
    its ``assets.extra`` when given.
    """
    before = set(_temporary_exports(export_dir_base))
    try:
        path = _as_text(estimator.export_saved_model(export_dir_base, serving_input_receiver_fn,
                                                     checkpoint_path=checkpoint_path))
    except BaseException:
        # The estimator builds the export in temp-<timestamp> and renames it when complete: a
        # failed export (a checkpoint of another network, Ctrl-C) leaves nothing behind.
        for name in set(_temporary_exports(export_dir_base)) - before:
            shutil.rmtree(os.path.join(export_dir_base, name), ignore_errors=True)
        raise
    if eval_result:
        write_export_report(path, eval_result)
    write_export_transform(path, transform)
    return path
