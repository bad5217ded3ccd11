"""Exporters for the EvalSpec and the checkpoint -> SavedModel path of ``--mode=export``.

The best exporter keeps the SavedModels with the highest verification accuracy and writes the
eval report (metrics per fold, the decision threshold) into each export's ``assets.extra``, so a
served model carries the threshold it was validated with. Next to it, ``transform.json`` holds
the conversion transform of the evaluation records (crop box, size, resampling: the manifest's
``transform``), what ``export.embed`` applies to raw photos so that they match the records the
report was measured on. Estimator exports are written to a
temporary directory and renamed when complete: a crash never leaves a half-written model.
"""

import os

import tensorflow.compat.v1 as tf

from export import eval_metrics, report

DEFAULT_METRIC = "lfw/accuracy"
ASSETS_EXTRA = "assets.extra"


def _as_text(path):
    return path.decode("utf-8") if isinstance(path, bytes) else path


def write_export_report(export_path, eval_result, prefix="lfw"):
    """Write report.json and roc.png of ``eval_result`` into ``<export>/assets.extra``."""
    if not eval_result or "%s/accuracy" % prefix not in eval_result:
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


def higher_is_better(metric_key):
    """compare_fn for BestExporter: export when ``metric_key`` improves (strictly)."""

    def compare(best_eval_result, current_eval_result):
        if current_eval_result is None or metric_key not in current_eval_result:
            raise ValueError("the eval result has no %r; was the verification metric built?"
                             % metric_key)
        if not best_eval_result or metric_key not in best_eval_result:
            return True
        return current_eval_result[metric_key] > best_eval_result[metric_key]

    return compare


class BestVerificationExporter(tf.estimator.BestExporter):
    """BestExporter keyed on ``lfw/accuracy`` that also stores the eval report with the model."""

    def __init__(self, serving_input_receiver_fn, eval_name="lfw", metric_key=DEFAULT_METRIC,
                 exports_to_keep=3, prefix="lfw", transform=None):
        self._prefix = prefix
        self._transform = transform
        super(BestVerificationExporter, self).__init__(
            name="best", serving_input_receiver_fn=serving_input_receiver_fn,
            event_file_pattern="eval_%s/*.tfevents.*" % eval_name,
            compare_fn=higher_is_better(metric_key), exports_to_keep=exports_to_keep)

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        path = super(BestVerificationExporter, self).export(
            estimator, export_path, checkpoint_path, eval_result, is_the_final_export)
        if path:
            write_export_transform(path, self._transform)
            write_export_report(path, eval_result, self._prefix)
        return path


class LatestTransformExporter(tf.estimator.LatestExporter):
    """LatestExporter that also stores the evaluation records' conversion transform."""

    def __init__(self, name, serving_input_receiver_fn, exports_to_keep=3, transform=None):
        self._transform = transform
        super(LatestTransformExporter, self).__init__(name, serving_input_receiver_fn,
                                                      exports_to_keep=exports_to_keep)

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        path = super(LatestTransformExporter, self).export(
            estimator, export_path, checkpoint_path, eval_result, is_the_final_export)
        if path:
            write_export_transform(path, self._transform)
        return path


def build_exporters(serving_input_receiver_fn, eval_name="lfw", exports_to_keep=3,
                    transform=None):
    """The EvalSpec's exporters: the best model by verification accuracy, and the latest.

    ``transform``: the evaluation records' conversion transform, stored with every export.
    """
    return [
        BestVerificationExporter(serving_input_receiver_fn, eval_name=eval_name,
                                 exports_to_keep=exports_to_keep, transform=transform),
        LatestTransformExporter("latest", serving_input_receiver_fn,
                                exports_to_keep=exports_to_keep, transform=transform),
    ]


def export_checkpoint(estimator, export_dir_base, serving_input_receiver_fn,
                      checkpoint_path=None, eval_result=None, transform=None):
    """Export a checkpoint (default: the latest in model_dir) as a SavedModel; returns its path.

    ``eval_result`` and ``transform`` (the evaluation records' conversion transform) go into
    its ``assets.extra`` when given.
    """
    path = _as_text(estimator.export_saved_model(export_dir_base, serving_input_receiver_fn,
                                                 checkpoint_path=checkpoint_path))
    write_export_transform(path, transform)
    if eval_result:
        write_export_report(path, eval_result)
    return path
