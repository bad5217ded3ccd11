"""Which of an exporter's SavedModels is the best one, by the metric recorded with each export.

Estimator exporters write ``<base>/<timestamp>/``. The best exporter stores, in each export's
``assets.extra/export_metric.json``, the metric it was chosen on (``{"metric": "lfw/accuracy",
"value": 0.95, "global_step": 1200}``). Choosing "the best model" by the directory name (the
newest) is wrong as soon as a later evaluation is worse or a restarted job exports again; every
reader (freezing after training, ``export.embed --model BASE``, the exporter's own clean-up)
ranks exports here, by recorded value first and recency second.

Paths go through ``tf.io.gfile``: a model_dir may be an object store (ModelArts, gs://).
"""

import json
import os

import tensorflow.compat.v1 as tf

ASSETS_EXTRA = "assets.extra"
EXPORT_METRIC_JSON = "export_metric.json"
REPORT_JSON = "report.json"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def is_saved_model(path):
    return any(tf.io.gfile.exists(os.path.join(path, name)) for name in SAVED_MODEL_FILES)


def list_exports(base):
    """Complete exports under ``base`` (numeric directories holding a SavedModel), oldest first.

    In-progress exports (``temp-<timestamp>``) are not numeric and never listed.
    """
    if not tf.io.gfile.isdir(base):
        return []
    versions = [d.strip("/") for d in tf.io.gfile.listdir(base)]
    versions = [d for d in versions if d.isdigit() and is_saved_model(os.path.join(base, d))]
    return [os.path.join(base, d) for d in sorted(versions, key=int)]


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as fh:
            value = json.load(fh)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def recorded_metric(export_dir):
    """The metric value an export was chosen on, or None when it carries none.

    ``export_metric.json`` first; exports made before it existed fall back to their verification
    report's accuracy.
    """
    extra = os.path.join(export_dir, ASSETS_EXTRA)
    record = _read_json(os.path.join(extra, EXPORT_METRIC_JSON))
    if record is not None and isinstance(record.get("value"), (int, float)):
        return float(record["value"])
    report = _read_json(os.path.join(extra, REPORT_JSON))
    if report is not None and isinstance(report.get("accuracy"), (int, float)):
        return float(report["accuracy"])
    return None


def ranked_exports(base):
    """``[(path, value)]`` best first: recorded value descending, then newest first.

    Exports without a recorded value rank below every export that has one.
    """
    exports = list_exports(base)
    scored = [(path, recorded_metric(path), index) for index, path in enumerate(exports)]
    scored.sort(key=lambda item: (item[1] is not None, item[1] or 0.0, item[2]), reverse=True)
    return [(path, value) for path, value, _ in scored]


def best_export(base):
    """Path of the best export under ``base`` (see :func:`ranked_exports`), or None."""
    ranked = ranked_exports(base)
    return ranked[0][0] if ranked else None
