"""Face verification metrics with the LFW View 2 protocol, as facenet and insightface compute them.

Pure, vectorised numpy with no side effects. The numbers are those of facenet's ``lfw.evaluate``
(``calculate_roc`` + ``calculate_val``) and insightface's ``verification.py``, so accuracies
compare with published LFW results:

* distance: squared L2 distance of L2-normalised embeddings (0 for identical directions, 4 for
  opposite ones); a pair is predicted "same" when ``distance < threshold``;
* folds: ``n_folds`` contiguous folds, sized as scikit-learn's ``KFold(shuffle=False)`` sizes them
  (the first ``N % n_folds`` folds hold one pair more); or, given ``folds`` (each pair's fold,
  as pairs.txt and the pair records store it), those folds. On a complete LFW set the two are
  the same; with pairs left out (``--allow_missing_pairs``) only the stored folds keep every
  held-out fold identity-disjoint from the folds its threshold is chosen on;
* accuracy: per fold, the threshold of ``np.arange(0, 4, 0.01)`` with the best accuracy on the other
  folds (the lowest one on ties, as ``np.argmax`` picks), scored on the held-out fold;
* ROC: TPR and FPR of every threshold on each held-out fold, averaged over folds; AUC is the
  trapezoid area under that curve (``sklearn.metrics.auc``), EER the point where
  ``FPR = 1 - TPR`` on it (facenet's ``brentq`` root of ``interp1d(fpr, tpr)``);
* VAL@FAR: per fold, the threshold of ``np.arange(0, 4, 0.001)`` where the FAR on the training
  folds reaches ``far_target`` (facenet's ``interp1d(far_train, thresholds, kind='slinear')``),
  then VAL (true accept rate) and FAR on the held-out fold at that threshold.

Instead of facenet's loops over folds and thresholds, the per-threshold counts come from one
``searchsorted`` + ``bincount`` + ``cumsum``: the counts are integers, so every accuracy, rate and
argmax tie is bit-identical to the loop version (the tests check it against one).
"""

import numpy as np

# The grids facenet's lfw.evaluate uses; built with the same np.arange calls so that every
# threshold is the same float64 value.
ROC_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


def l2_normalize(x):
    """Rows of ``x`` divided by their L2 norm, in float64.

    All-zero rows stay zero, as ``sklearn.preprocessing.normalize`` (insightface) leaves them.
    """
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.sum(np.square(x), axis=-1, keepdims=True))
    norms[norms == 0.0] = 1.0
    return x / norms


def evaluate(embeddings1, embeddings2, issame, n_folds=10, far_target=1e-3, folds=None):
    """Verification metrics of pairs ``(embeddings1[i], embeddings2[i])`` with labels ``issame[i]``.

    ``embeddings1`` and ``embeddings2`` are [N, D] arrays (any scale: they are L2-normalised here,
    in float64); ``issame`` holds N booleans (or 0/1). Without ``folds``, pairs must be in fold
    order: fold k is the k-th of ``n_folds`` contiguous blocks, as in LFW's pairs.txt. ``folds``:
    N integers, each pair's own fold (in any order; ``n_folds`` is then not used). Returns the
    dict of :func:`evaluate_distances`.

    Raises ValueError for mismatched shapes, non-finite values, non-binary labels or
    ``n_folds`` outside 2..N.
    """
    e1 = _as_embeddings(embeddings1, "embeddings1")
    e2 = _as_embeddings(embeddings2, "embeddings2")
    if e1.shape != e2.shape:
        raise ValueError(f"embeddings1 and embeddings2 must have the same shape, got {e1.shape} "
                         f"and {e2.shape}")
    distances = np.sum(np.square(l2_normalize(e1) - l2_normalize(e2)), axis=1)
    return evaluate_distances(distances, issame, n_folds=n_folds, far_target=far_target,
                              folds=folds)


def evaluate_distances(distances, issame, n_folds=10, far_target=1e-3, folds=None):
    """Verification metrics from precomputed squared L2 distances (see the module docstring).

    ``folds``: None (``n_folds`` contiguous folds) or each pair's fold id; the folds are then
    those ids in increasing order, ``n_folds`` in the result is their count.

    Returns a dict:

    * ``accuracy``, ``accuracy_std`` (population std, as ``np.std``), ``fold_accuracy``;
    * ``threshold`` (mean over folds of the best training threshold), ``fold_threshold``;
    * ``val``, ``val_std``, ``far`` (means over folds), ``fold_val``, ``fold_far``,
      ``fold_val_threshold``, ``far_target``;
    * ``auc``, ``eer``; ``tpr``, ``fpr`` (fold-averaged ROC, arrays over ``roc_thresholds``);
    * ``num_pairs``, ``num_same``, ``num_diff``, ``n_folds``, ``fold_sizes``.

    A fold without positive (negative) pairs counts its TPR and VAL (FPR and FAR) as 0, the
    convention of facenet's ``calculate_accuracy`` (its ``calculate_val_far`` would divide by 0).
    """
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 1:
        raise ValueError(f"distances must be a 1-D array, got shape {distances.shape}")
    if not np.all(np.isfinite(distances)):
        raise ValueError("distances contain NaN or infinite values "
                         f"({np.count_nonzero(~np.isfinite(distances))} of {distances.size})")
    same = _as_issame(issame, distances.shape[0])
    num_pairs = distances.shape[0]
    if folds is None:
        n_folds = _check_n_folds(n_folds, num_pairs)
        fold_ids, fold_sizes = _contiguous_folds(num_pairs, n_folds)
    else:
        fold_ids, fold_sizes = _stored_folds(folds, num_pairs)
        n_folds = len(fold_sizes)
    far_target = float(far_target)
    if not 0.0 < far_target <= 1.0:
        raise ValueError(f"far_target must be in (0, 1], got {far_target!r}")

    roc = _roc(distances, same, fold_ids, fold_sizes, n_folds)
    val = _val_at_far(distances, same, fold_ids, n_folds, far_target)

    fpr, tpr = roc["fpr"], roc["tpr"]
    metrics = {
        "accuracy": float(np.mean(roc["fold_accuracy"])),
        "accuracy_std": float(np.std(roc["fold_accuracy"])),
        "fold_accuracy": [float(a) for a in roc["fold_accuracy"]],
        "threshold": float(np.mean(roc["fold_threshold"])),
        "fold_threshold": [float(t) for t in roc["fold_threshold"]],
        "val": float(np.mean(val["fold_val"])),
        "val_std": float(np.std(val["fold_val"])),
        "far": float(np.mean(val["fold_far"])),
        "fold_val": [float(v) for v in val["fold_val"]],
        "fold_far": [float(f) for f in val["fold_far"]],
        "fold_val_threshold": [float(t) for t in val["fold_threshold"]],
        "far_target": far_target,
        "auc": _auc(fpr, tpr),
        "eer": _eer(fpr, tpr),
        "tpr": tpr,
        "fpr": fpr,
        "roc_thresholds": ROC_THRESHOLDS.copy(),
        "num_pairs": int(num_pairs),
        "num_same": int(np.count_nonzero(same)),
        "num_diff": int(num_pairs - np.count_nonzero(same)),
        "n_folds": int(n_folds),
        "fold_sizes": [int(s) for s in fold_sizes],
    }
    return metrics


def _as_embeddings(x, name):
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [num_pairs, dim], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise ValueError(f"{name} has NaN or infinite values in {bad.size} rows (first: "
                         f"{bad[:5].tolist()})")
    return x


def _as_issame(issame, num_pairs):
    labels = np.asarray(issame)
    if labels.ndim != 1:
        raise ValueError(f"issame must be a 1-D array, got shape {labels.shape}")
    if labels.shape[0] != num_pairs:
        raise ValueError(f"issame has {labels.shape[0]} labels but there are {num_pairs} pairs")
    if labels.dtype == np.bool_:
        return labels
    if not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"issame must hold booleans or 0/1, got dtype {labels.dtype}")
    bad = ~np.isin(labels, (0, 1))
    if np.any(bad):
        raise ValueError("issame must hold booleans or 0/1; found "
                         f"{np.unique(labels[bad])[:5].tolist()}")
    return labels == 1


def _check_n_folds(n_folds, num_pairs):
    if isinstance(n_folds, bool) or int(n_folds) != n_folds:
        raise ValueError(f"n_folds must be an integer, got {n_folds!r}")
    n_folds = int(n_folds)
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2 (one fold is held out, the others choose "
                         f"the threshold), got {n_folds}")
    if n_folds > num_pairs:
        raise ValueError(f"n_folds={n_folds} exceeds the number of pairs ({num_pairs})")
    return n_folds


def _contiguous_folds(num_pairs, n_folds):
    """Fold index of every pair and the fold sizes, as ``KFold(n_folds, shuffle=False)``."""
    sizes = np.full(n_folds, num_pairs // n_folds, dtype=np.int64)
    sizes[:num_pairs % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes), sizes


def _stored_folds(folds, num_pairs):
    """Fold index (0 .. K-1, in the order of the stored ids) of every pair and the fold sizes."""
    folds = np.asarray(folds)
    if folds.shape != (num_pairs,):
        raise ValueError(f"folds must hold one fold id per pair ({num_pairs}), got shape "
                         f"{folds.shape}")
    if num_pairs and not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"folds must be integers, got dtype {folds.dtype}")
    ids, fold_ids = np.unique(folds, return_inverse=True)
    if len(ids) < 2:
        raise ValueError(f"the pairs are all in one fold ({ids.tolist()}): the protocol holds "
                         "one fold out and chooses its threshold on the others")
    return fold_ids.reshape(-1), np.bincount(fold_ids.reshape(-1)).astype(np.int64)


def _count_below(distances, fold_ids, n_folds, thresholds):
    """counts[f, t] = number of pairs of fold f with ``distance < thresholds[t]``.

    ``searchsorted(..., 'right')`` gives the first threshold strictly above each distance; a
    cumulative histogram of those indices per fold counts, for every threshold, the distances
    below it. Integer counts: exactly what facenet's per-threshold ``np.less`` + ``np.sum`` give.
    """
    num_thresholds = thresholds.shape[0]
    first_above = np.searchsorted(thresholds, distances, side="right")
    flat = fold_ids * (num_thresholds + 1) + first_above
    hist = np.bincount(flat, minlength=n_folds * (num_thresholds + 1))
    hist = hist.reshape(n_folds, num_thresholds + 1)
    return np.cumsum(hist, axis=1)[:, :num_thresholds]


def _safe_rate(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (facenet's calculate_accuracy)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.broadcast_to(np.asarray(denominator, dtype=np.float64), numerator.shape)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _roc(distances, same, fold_ids, fold_sizes, n_folds):
    thresholds = ROC_THRESHOLDS
    tp = _count_below(distances[same], fold_ids[same], n_folds, thresholds)
    fp = _count_below(distances[~same], fold_ids[~same], n_folds, thresholds)
    pos = np.bincount(fold_ids[same], minlength=n_folds)[:, None]
    neg = np.bincount(fold_ids[~same], minlength=n_folds)[:, None]

    # Training counts of fold f: everything minus fold f.
    tp_train = tp.sum(axis=0) - tp
    fp_train = fp.sum(axis=0) - fp
    neg_train = neg.sum() - neg
    train_size = (fold_sizes.sum() - fold_sizes)[:, None]
    acc_train = (tp_train + (neg_train - fp_train)) / train_size
    best = np.argmax(acc_train, axis=1)

    rows = np.arange(n_folds)
    fold_accuracy = (tp[rows, best] + (neg[:, 0] - fp[rows, best])) / fold_sizes
    tprs = _safe_rate(tp, pos)
    fprs = _safe_rate(fp, neg)
    return {
        "fold_accuracy": fold_accuracy,
        "fold_threshold": thresholds[best],
        "tpr": np.mean(tprs, axis=0),
        "fpr": np.mean(fprs, axis=0),
    }


def _val_at_far(distances, same, fold_ids, n_folds, far_target):
    thresholds = VAL_THRESHOLDS
    fa = _count_below(distances[~same], fold_ids[~same], n_folds, thresholds)
    neg = np.bincount(fold_ids[~same], minlength=n_folds)
    pos = np.bincount(fold_ids[same], minlength=n_folds)
    far_train = _safe_rate(fa.sum(axis=0) - fa, (neg.sum() - neg)[:, None])

    fold_threshold = np.zeros(n_folds)
    for f in range(n_folds):
        if np.max(far_train[f]) >= far_target:
            fold_threshold[f] = _interp_slinear(far_target, far_train[f], thresholds)

    accepted = distances < fold_threshold[fold_ids]
    true_accept = np.bincount(fold_ids[accepted & same], minlength=n_folds)
    false_accept = np.bincount(fold_ids[accepted & ~same], minlength=n_folds)
    return {
        "fold_val": _safe_rate(true_accept, pos),
        "fold_far": _safe_rate(false_accept, neg),
        "fold_threshold": fold_threshold,
    }


def _interp_slinear(x, xp, fp):
    """``scipy.interpolate.interp1d(xp, fp, kind='slinear')(x)`` for non-decreasing ``xp``.

    ``far_train`` is a step function of the threshold, so ``xp`` repeats values. SciPy of
    facenet's time built a degree-1 B-spline with knots ``[xp[0], xp..., xp[-1]]`` and accepted
    the repeats (recent SciPy raises "Expect x to not have duplicates"; forks that de-duplicate
    with ``np.unique`` keep the first threshold of each plateau and interpolate over the whole
    plateau instead). That spline's de Boor evaluation picks the knot interval
    ``xp[lo] <= x < xp[lo + 1]``, i.e. it interpolates between the *last* threshold of the FAR
    plateau below the target and the *first* one of the plateau above it; at ``x == xp[-1]`` on a
    zero-length last interval every basis function is 0 and so is the result. Reproduced here,
    down to the order of the floating-point operations.
    """
    n = xp.shape[0]
    if not xp[0] <= x <= xp[-1]:
        raise ValueError("A value in x_new is outside the interpolation range")
    hi = min(max(int(np.searchsorted(xp, x, side="right")), 1), n - 1)
    lo = hi - 1
    xa, xb = xp[lo], xp[hi]
    if xb == xa:
        return 0.0
    w = 1.0 / (xb - xa)
    return 0.0 + fp[lo] * (w * (xb - x)) + fp[hi] * (w * (x - xa))


def _auc(fpr, tpr):
    """Trapezoid area under the ROC, as ``sklearn.metrics.auc(fpr, tpr)`` (no added end points)."""
    order = np.lexsort((tpr, fpr))
    x, y = fpr[order], tpr[order]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _eer(fpr, tpr):
    """x in [0, 1] with ``1 - x - interp(x) = 0``, ``interp = interp1d(fpr, tpr)``.

    facenet finds it with ``brentq``; recent SciPy evaluates linear ``interp1d`` with
    ``np.interp``, which at a repeated ``fpr`` value jumps from the ``tpr`` of its first
    occurrence to that of its last. ``x + interp(x)`` is increasing, so the root is found exactly:
    inside a linear piece, or at a jump that crosses 1 (where brentq converges as well).
    """
    x0 = 0.0
    h0 = x0 + float(np.interp(x0, fpr, tpr)) - 1.0
    if h0 >= 0.0:
        return x0
    knots, first = np.unique(fpr, return_index=True)
    last = fpr.shape[0] - 1 - np.unique(fpr[::-1], return_index=True)[1]
    left, right = tpr[first], tpr[last]
    keep = knots > x0
    knots, left, right = knots[keep], left[keep], right[keep]
    if knots.size == 0 or knots[-1] < 1.0:
        # Beyond the last ROC point interp() is constant.
        tail = float(np.interp(1.0, fpr, tpr))
        knots = np.append(knots, 1.0)
        left = np.append(left, tail)
        right = np.append(right, tail)
    prev_x, prev_h = x0, h0
    for x, y_left, y_right in zip(knots, left, right):
        h_left = x + y_left - 1.0
        if h_left >= 0.0:
            return float(prev_x + (x - prev_x) * (-prev_h) / (h_left - prev_h))
        h_right = x + y_right - 1.0
        if h_right >= 0.0:
            return float(x)
        prev_x, prev_h = x, h_right
    raise AssertionError("unreachable: x + interp(x) - 1 >= 0 at x = 1")
