"""Verification report: ``report.json`` (every metric, per fold, the ROC) and ``roc.png``.

``--mode=evaluate`` writes one into ``<model_dir>/eval/``, the embed CLI writes one for
``--pairs`` and reads the decision threshold back from one. Both files are written atomically
(a temporary file in the same directory, then ``os.replace``), so a reader never sees half a
report, even when an evaluation is interrupted.

matplotlib is imported inside :func:`write_report` and draws on an Agg canvas of its own: no
display is needed, and the process-wide backend of an importing program is left alone.
"""

import datetime
import json
import math
import os

import numpy as np

from data_tools.fileio import atomic_write

REPORT_JSON = "report.json"
ROC_PNG = "roc.png"
# Next to an exported SavedModel's report: the conversion transform of its evaluation records.
TRANSFORM_JSON = "transform.json"
REPORT_VERSION = 1

# What the ROC figure needs; evaluate() returns all of them.
_PLOT_KEYS = ("tpr", "fpr", "accuracy", "accuracy_std", "auc", "eer")


def write_report(metrics, output_dir, extra=None, log_fpr=True):
    """Write ``report.json`` and ``roc.png`` into ``output_dir`` (created if needed).

    ``metrics`` is the dict of :func:`evaluation.verification.evaluate`; numpy scalars and arrays
    are converted to JSON numbers and lists, non-finite floats to ``null``. ``extra`` (a dict:
    model path, checkpoint step, flip TTA, pairs file...) is stored under the key ``"extra"``.
    ``log_fpr`` adds a second panel with the FPR axis in log scale, where the low-FAR operating
    points of face verification are visible.

    Returns ``(json_path, png_path)``.
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
    missing = [k for k in _PLOT_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"metrics lack {missing}, needed for the report (pass the dict of "
                         "evaluation.verification.evaluate)")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")

    report = _to_jsonable(metrics, "metrics")
    report["report_version"] = REPORT_VERSION
    report["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    if extra is not None:
        report["extra"] = _to_jsonable(extra, "extra")
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"

    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, REPORT_JSON)
    png_path = os.path.join(output_dir, ROC_PNG)
    figure = _roc_figure(metrics, log_fpr)
    atomic_write(png_path, lambda f: figure.savefig(f, format="png", dpi=100))
    atomic_write(json_path, lambda f: f.write(text.encode("utf-8")))
    return json_path, png_path


def report_flip(data):
    """Whether a report's ``threshold`` was measured with flip test-time augmentation: its
    ``flip`` (training reports,
    :func:`evaluation.verification_metric.metrics_from_eval_result`), or its ``extra.flip``
    (``export.embed --pairs``, ``export.identification``, ``export.ijb``), or, for training
    reports written before ``flip`` was recorded, True when it holds
    ``threshold_single`` (only a flip evaluation has single embeddings); None when it does not
    say."""
    for value in (data.get("flip"), (data.get("extra") or {}).get("flip")):
        if isinstance(value, bool):
            return value
    return True if "threshold_single" in data else None


def flip_words(flip):
    """``'with'`` or ``'without'`` (flip TTA), for messages."""
    return "with" if flip else "without"


def read_report(path):
    """Load a report written by :func:`write_report`: ``path`` is the JSON file or its directory.

    Returns the dict as stored (lists for the ROC arrays, ``None`` for non-finite values).
    """
    if os.path.isdir(path):
        path = os.path.join(path, REPORT_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no verification report at {path}")
    return _read_json_object(path, "{path} is not a valid report (JSON error: {error})",
                             "{path} is not a valid report (expected a JSON object)")


def write_transform(output_dir, transform):
    """Write a conversion ``transform`` (dict: ``crop_box``, ``image_size``, ``resampling``, see
    ``data_tools.manifest.conversion_transform``) as ``output_dir/transform.json``, atomically;
    returns the path."""
    if not isinstance(transform, dict):
        raise TypeError(f"transform must be a dict, got {type(transform).__name__}")
    text = json.dumps(_to_jsonable(transform, "transform"), indent=2, sort_keys=True) + "\n"
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, TRANSFORM_JSON)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def read_transform(directory):
    """The conversion transform stored in ``directory/transform.json`` (dict), or None when there
    is none. Raises ``ValueError`` for a file that is not a JSON object."""
    path = os.path.join(directory, TRANSFORM_JSON)
    if not os.path.isfile(path):
        return None
    return _read_json_object(path, "{path} is not valid JSON: {error}",
                             "{path} does not hold a JSON object")


def _read_json_object(path, invalid_json, not_an_object):
    """The JSON object in the file at ``path``. A file that is not JSON, or holds something else,
    raises ``ValueError`` with ``invalid_json`` or ``not_an_object`` (``{path}``, ``{error}``)."""
    with open(path, "rb") as f:
        try:
            value = json.loads(f.read().decode("utf-8"))
        except ValueError as e:
            raise ValueError(invalid_json.format(path=path, error=e)) from e
    if not isinstance(value, dict):
        raise ValueError(not_an_object.format(path=path))
    return value


def _to_jsonable(value, where):
    """Recursively convert numpy types; ``where`` names the offending entry in errors."""
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, where) for v in value]
    if isinstance(value, np.ndarray):
        return _to_jsonable(value.tolist(), where)
    if isinstance(value, np.generic):
        return _to_jsonable(value.item(), where)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in a JSON report")


def _roc_figure(metrics, log_fpr):
    # Imported here so that importing this module (the eval path, the CLI) does not load
    # matplotlib. A Figure with its own Agg canvas rather than pyplot: pyplot keeps global state
    # and would pick a GUI backend on a desktop; here nothing outside this figure changes.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fpr = np.asarray(metrics["fpr"], dtype=np.float64)
    tpr = np.asarray(metrics["tpr"], dtype=np.float64)
    accuracy, accuracy_std = float(metrics["accuracy"]), float(metrics["accuracy_std"])
    auc, eer = float(metrics["auc"]), float(metrics["eer"])
    val, far = metrics.get("val"), metrics.get("far")
    far_target = float(metrics.get("far_target", 1e-3))

    panels = 2 if log_fpr else 1
    figure = Figure(figsize=(5.5 * panels, 5.0))
    FigureCanvasAgg(figure)
    title = (f"accuracy {100 * accuracy:.2f}% \u00b1 {100 * accuracy_std:.2f}%   AUC {auc:.4f}   "
             f"EER {eer:.4f}")
    if val is not None:
        title += f"\nVAL {float(val):.4f} @ FAR {float(far):.4g} (target {far_target:g})"
    if "num_pairs" in metrics:
        title += f"   {metrics['num_pairs']} pairs, {metrics.get('n_folds', 0)} folds"
    figure.suptitle(title, fontsize=10)

    ax = figure.add_subplot(1, panels, 1)
    ax.plot(fpr, tpr, color="C0", lw=1.5, label="ROC (fold average)")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":", label="chance")
    ax.plot([0, 1], [1, 0], color="0.7", lw=0.8, ls="--")
    ax.plot([eer], [1 - eer], "o", color="C2", ms=6, clip_on=False, label=f"EER {eer:.4f}")
    if val is not None:
        ax.plot([float(far)], [float(val)], "s", color="C3", ms=6, clip_on=False,
                label=f"VAL @ FAR={far_target:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)

    if log_fpr:
        ax = figure.add_subplot(1, panels, 2)
        positive = fpr > 0
        lowest = min(far_target / 10, fpr[positive].min() if positive.any() else far_target)
        ax.plot(fpr[positive], tpr[positive], color="C0", lw=1.5, label="ROC (fold average)")
        ax.axvline(far_target, color="C3", lw=0.8, ls="--", label=f"FAR = {far_target:g}")
        if val is not None:
            # A measured FAR of 0 has no place on a log axis: mark it at the target instead.
            ax.plot([max(float(far), far_target)], [float(val)], "s", color="C3", ms=6,
                    label=f"VAL {float(val):.4f} @ FAR {float(far):.4g}")
        ax.set_xscale("log")
        ax.set_xlim(lowest, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate (log scale)")
        ax.set_ylabel("true positive rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    return figure
