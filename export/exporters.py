"""Exporters for the EvalSpec and the checkpoint -> SavedModel path of ``--mode=export``.

The best exporter keeps the SavedModels with the highest verification accuracy and writes the
eval report (metrics per fold, the decision threshold) into each export's ``assets.extra``, so a
served model carries the threshold it was validated with. Estimator exports are written to a
temporary directory and renamed when complete: a crash never leaves a half-written model.
"""

import os

import tensorflow.compat.v1 as tf

from export import eval_metrics, report

DEFAULT_METRIC = "lfw/accuracy"


def _as_text(path):
    return path.decode("utf-8") if isinstance(path, bytes) else path


def write_export_report(export_path, eval_result, prefix="lfw"):
    """Write report.json and roc.png of ``eval_result`` into ``<export>/assets.extra``."""
    if not eval_result or "%s/accuracy" % prefix not in eval_result:
        return None
    metrics = eval_metrics.metrics_from_eval_result(eval_result, prefix)
    return report.write_report(metrics, os.path.join(_as_text(export_path), "assets.extra"))


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
                 exports_to_keep=3, prefix="lfw"):
        self._prefix = prefix
        super().__init__(
            name="best", serving_input_receiver_fn=serving_input_receiver_fn,
            event_file_pattern="eval_%s/*.tfevents.*" % eval_name,
            compare_fn=higher_is_better(metric_key), exports_to_keep=exports_to_keep)

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        path = super().export(
            estimator, export_path, checkpoint_path, eval_result, is_the_final_export)
        if path:
            write_export_report(path, eval_result, self._prefix)
        return path


def build_exporters(serving_input_receiver_fn, eval_name="lfw", exports_to_keep=3):
    """The EvalSpec's exporters: the best model by verification accuracy, and the latest."""
    return [
        BestVerificationExporter(serving_input_receiver_fn, eval_name=eval_name,
                                 exports_to_keep=exports_to_keep),
        tf.estimator.LatestExporter("latest", serving_input_receiver_fn,
                                    exports_to_keep=exports_to_keep),
    ]


def export_checkpoint(estimator, export_dir_base, serving_input_receiver_fn,
                      checkpoint_path=None, eval_result=None):
    """Export a checkpoint (default: the latest in model_dir) as a SavedModel; returns its path."""
    path = _as_text(estimator.export_saved_model(export_dir_base, serving_input_receiver_fn,
                                                 checkpoint_path=checkpoint_path))
    if eval_result:
        write_export_report(path, eval_result)
    return path
