"""The error-versus-reject curve of a face-quality score (the library of ``export.quality``).

A pair's quality is the lower of its two images' (MagFace's ``eval/eval_quality/eval_quality.py``,
TFace). Rejecting the lowest-quality fraction r of the pairs (0, 0.05, ...), the curve is the
FNMR at a fixed FMR on the pairs kept, beside a random-rejection baseline (the mean over
``RANDOM_ORDERS`` seeded random orders). Thresholds: ``recomputed`` (MagFace's) finds the FMR's
threshold again on the kept pairs at each r; ``fixed`` (the ERC of Grother and Tabassi, ISO/IEC
29794-1) finds it once on all pairs. The FMR's threshold is the k-th highest impostor similarity
with k = floor(FMR · (impostors - 1)), as MagFace's code picks it (at FMR 1e-3 and fewer than
1,001 impostor pairs: the highest impostor score).
"""

import json
import math
import os

import numpy as np

from data_tools.fileio import atomic_write, atomic_write_text

THRESHOLDS = ("recomputed", "fixed")
RANDOM_ORDERS = 20


def pair_quality(norms1, norms2):
    """A pair's quality: the lower of its two images' (MagFace, TFace)."""
    return np.minimum(np.asarray(norms1, np.float64), np.asarray(norms2, np.float64))


def threshold_at_fmr(impostor_similarities, fmr):
    """The similarity above which ``fmr`` of the impostors are (MagFace's choice of the
    floor(fmr · (n - 1))-th highest impostor score); None without impostors."""
    scores = np.sort(np.asarray(impostor_similarities, np.float64))[::-1]
    if not len(scores):
        return None
    return float(scores[int(math.floor(fmr * (len(scores) - 1) + 1e-9))])


def fnmr(genuine_similarities, threshold):
    """Fraction of genuine pairs not above ``threshold`` (NaN without genuine pairs)."""
    genuine = np.asarray(genuine_similarities, np.float64)
    if not len(genuine) or threshold is None:
        return float("nan")
    return float(np.mean(genuine <= threshold))


def error_versus_reject(similarities, quality, issame, fmr=1e-3, fractions=None,
                        threshold="recomputed", order=None):
    """The error-versus-reject curve: FNMR at ``fmr`` as the lowest-quality pairs are rejected.

    Args:
      similarities, quality: [N] per pair (cosine similarity; quality, higher is better).
      issame: [N] bool.
      fmr: the false-match rate at which the FNMR is read.
      fractions: rejected fractions (default 0, 0.05, ..., 0.9); ``int(r · N)`` pairs go.
      threshold: ``recomputed`` on the kept pairs at each fraction, or ``fixed`` on all pairs.
      order: the rejection order (pair indices, first rejected first) instead of by quality.

    Returns:
      dict: ``fractions``, ``fnmr``, ``thresholds``, ``kept_genuine``, ``kept_impostors``.
    """
    similarities = np.asarray(similarities, np.float64)
    issame = np.asarray(issame, bool)
    if fractions is None:
        fractions = np.round(np.arange(0.0, 0.9 + 1e-9, 0.05), 4)
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    if order is None:
        # stable: equal qualities keep the pairs' order, as np.argsort in MagFace's script
        order = np.argsort(np.asarray(quality, np.float64), kind="stable")
    fixed = threshold_at_fmr(similarities[~issame], fmr) if threshold == "fixed" else None
    curve = {"fractions": [], "fnmr": [], "thresholds": [], "kept_genuine": [],
             "kept_impostors": []}
    for fraction in fractions:
        kept = np.asarray(order)[int(fraction * len(similarities)):]
        genuine = similarities[kept][issame[kept]]
        impostors = similarities[kept][~issame[kept]]
        value = fixed if threshold == "fixed" else threshold_at_fmr(impostors, fmr)
        curve["fractions"].append(float(fraction))
        curve["fnmr"].append(fnmr(genuine, value))
        curve["thresholds"].append(value)
        curve["kept_genuine"].append(int(len(genuine)))
        curve["kept_impostors"].append(int(len(impostors)))
    return curve


def random_baseline(similarities, issame, fmr, fractions, threshold, orders=RANDOM_ORDERS):
    """The mean curve of ``orders`` seeded random rejection orders: what no quality gives."""
    rng = np.random.RandomState(0)
    curves = [error_versus_reject(similarities, None, issame, fmr, fractions, threshold,
                                  order=rng.permutation(len(similarities)))["fnmr"]
              for _ in range(orders)]
    return [float(v) for v in np.nanmean(np.array(curves, np.float64), axis=0)]


def evaluate(embeddings1, embeddings2, norms1, norms2, issame, fmrs=(1e-3, 1e-2),
             threshold="recomputed", max_reject=0.9):
    """The report: for each FMR the quality's curve and the random baseline."""
    similarities = np.sum(unit(embeddings1) * unit(embeddings2), axis=1)
    quality = pair_quality(norms1, norms2)
    fractions = np.round(np.arange(0.0, max_reject + 1e-9, 0.05), 4)
    issame = np.asarray(issame, bool)
    result = {"num_pairs": int(len(issame)), "num_genuine": int(issame.sum()),
              "num_impostors": int((~issame).sum()), "threshold_mode": threshold,
              "quality": "min(embedding_norm of the two images)",
              "quality_stats": {"min": float(quality.min()), "median": float(np.median(quality)),
                                "max": float(quality.max())},
              "curves": {}}
    for fmr in fmrs:
        curve = error_versus_reject(similarities, quality, issame, fmr, fractions, threshold)
        curve["random_fnmr"] = random_baseline(similarities, issame, fmr, fractions, threshold)
        curve["mean_fnmr"] = float(np.nanmean(curve["fnmr"]))
        curve["mean_random_fnmr"] = float(np.nanmean(curve["random_fnmr"]))
        result["curves"][f"{fmr:g}"] = curve
    return result


def unit(x):
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def write_evr(result, output_dir):
    """``evr.json`` and ``evr.png`` in ``output_dir`` (atomic writes); returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "evr.json")
    png_path = os.path.join(output_dir, "evr.png")
    figure = _figure(result)
    atomic_write(png_path, lambda f: figure.savefig(f, format="png", dpi=100))
    atomic_write_text(json_path, json.dumps(_finite(result), indent=1, sort_keys=True) + "\n")
    return png_path, json_path


def _finite(value):
    """NaN (an FNMR without genuine pairs left) -> null: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _figure(result):
    # matplotlib only here, on an Agg canvas of its own (as evaluation/reports.py draws the ROC).
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(6.0, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    for i, (fmr, curve) in enumerate(sorted(result["curves"].items(), key=lambda c: float(c[0]))):
        percent = 100 * np.asarray(curve["fractions"])
        ax.plot(percent, curve["fnmr"], color=f"C{i}", lw=1.5, marker="o", ms=3,
                label=f"FMR {fmr}: reject by quality")
        ax.plot(percent, curve["random_fnmr"], color=f"C{i}", lw=1, ls="--",
                label=f"FMR {fmr}: random rejection")
    ax.set_xlabel("lowest-quality pairs rejected (%)")
    ax.set_ylabel("FNMR")
    # The run's name sits above export/best/<timestamp>: show the path's last four parts.
    model = os.sep.join(result.get("model", "").rstrip(os.sep).split(os.sep)[-4:])
    ax.set_title(f"error versus reject ({result['threshold_mode']} threshold), "
                 f"{result['num_pairs']} pairs\n{model}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
