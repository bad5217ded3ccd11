"""Tests of evaluation.verification against hand-computed cases and a loop port of facenet's
code."""

import time

import numpy as np
import pytest

from evaluation import verification

# ---------------------------------------------------------------------------------------------
# Reference: facenet's calculate_roc / calculate_val (src/facenet.py), written as facenet writes
# them (one np.less per threshold and fold), with the two library calls they make replaced by
# scipy-free equivalents: sklearn's KFold(shuffle=False) split and scipy's
# interp1d(kind='slinear') (a degree-1 B-spline evaluated by knot search and de Boor's recursion,
# as SciPy's _bspl does). AUC is sklearn.metrics.auc (np.trapz); EER replaces brentq by bisection.
# ---------------------------------------------------------------------------------------------


def ref_kfold(num_pairs, n_splits):
    """(train, test) index arrays of sklearn's KFold(n_splits, shuffle=False)."""
    indices = np.arange(num_pairs)
    fold_sizes = np.full(n_splits, num_pairs // n_splits, dtype=int)
    fold_sizes[:num_pairs % n_splits] += 1
    current = 0
    for fold_size in fold_sizes:
        test = indices[current:current + fold_size]
        train = np.concatenate([indices[:current], indices[current + fold_size:]])
        yield train, test
        current += fold_size


def ref_calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    acc = float(tp + tn) / dist.size
    return tpr, fpr, acc


def ref_stored_splits(folds):
    """(train, test) index arrays of each stored fold, in increasing fold order (the splits of
    a pairs file or pair records whose folds were kept, not re-cut)."""
    folds = np.asarray(folds)
    indices = np.arange(len(folds))
    for fold in sorted(set(folds.tolist())):
        yield indices[folds != fold], indices[folds == fold]


def ref_calculate_roc(thresholds, dist, actual_issame, nrof_folds, splits=None):
    nrof_thresholds = len(thresholds)
    tprs = np.zeros((nrof_folds, nrof_thresholds))
    fprs = np.zeros((nrof_folds, nrof_thresholds))
    accuracy = np.zeros(nrof_folds)
    best_thresholds = np.zeros(nrof_folds)
    splits = ref_kfold(len(dist), nrof_folds) if splits is None else splits
    for fold_idx, (train_set, test_set) in enumerate(splits):
        acc_train = np.zeros(nrof_thresholds)
        for threshold_idx, threshold in enumerate(thresholds):
            _, _, acc_train[threshold_idx] = ref_calculate_accuracy(
                threshold, dist[train_set], actual_issame[train_set])
        best_threshold_index = np.argmax(acc_train)
        best_thresholds[fold_idx] = thresholds[best_threshold_index]
        for threshold_idx, threshold in enumerate(thresholds):
            tprs[fold_idx, threshold_idx], fprs[fold_idx, threshold_idx], _ = (
                ref_calculate_accuracy(threshold, dist[test_set], actual_issame[test_set]))
        _, _, accuracy[fold_idx] = ref_calculate_accuracy(
            thresholds[best_threshold_index], dist[test_set], actual_issame[test_set])
    return np.mean(tprs, 0), np.mean(fprs, 0), accuracy, best_thresholds


def ref_interp1d_slinear(x_data, y_data, x):
    """SciPy's interp1d(x_data, y_data, kind='slinear')(x) as SciPy <= 1.8 computed it."""
    order = np.argsort(x_data, kind="mergesort")
    x_data, y_data = x_data[order], y_data[order]
    if x < x_data[0] or x > x_data[-1]:
        raise ValueError("out of range")
    knots = np.concatenate([[x_data[0]], x_data, [x_data[-1]]])
    k = 1
    n = len(knots) - k - 1
    interval = k + 1
    while x >= knots[interval] and interval != n:
        interval += 1
    interval -= 1
    basis = [1.0, 0.0]
    x_b, x_a = knots[interval + 1], knots[interval]
    if x_b == x_a:
        basis = [0.0, 0.0]
    else:
        w = basis[0] / (x_b - x_a)
        basis = [0.0 + w * (x_b - x), w * (x - x_a)]
    out = 0.0
    for a in range(k + 1):
        out += y_data[interval + a - k] * basis[a]
    return out


def ref_calculate_val_far(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    n_same = np.sum(actual_issame)
    n_diff = np.sum(np.logical_not(actual_issame))
    return float(true_accept) / float(n_same), float(false_accept) / float(n_diff)


def ref_calculate_val(thresholds, dist, actual_issame, far_target, nrof_folds, splits=None):
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    chosen = np.zeros(nrof_folds)
    splits = ref_kfold(len(dist), nrof_folds) if splits is None else splits
    for fold_idx, (train_set, test_set) in enumerate(splits):
        far_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            _, far_train[threshold_idx] = ref_calculate_val_far(
                threshold, dist[train_set], actual_issame[train_set])
        if np.max(far_train) >= far_target:
            threshold = ref_interp1d_slinear(far_train, thresholds, far_target)
        else:
            threshold = 0.0
        chosen[fold_idx] = threshold
        val[fold_idx], far[fold_idx] = ref_calculate_val_far(
            threshold, dist[test_set], actual_issame[test_set])
    return val, far, chosen


def ref_auc(fpr, tpr):
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def ref_eer(fpr, tpr):
    def g(x):
        return 1.0 - x - np.interp(x, fpr, tpr)
    lo, hi = 0.0, 1.0
    if g(lo) == 0.0:
        return lo
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if g(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def random_distances(rng, num_pairs, kind, balanced=False):
    if balanced:  # alternating labels: every fold of an even size holds as many of each
        same = np.arange(num_pairs) % 2 == 0
    else:
        same = rng.rand(num_pairs) < 0.5
    if kind == "overlapping":
        dist = np.where(same, rng.gamma(2.0, 0.25, num_pairs), 1.5 + 0.3 * rng.randn(num_pairs))
    elif kind == "quantised":  # many ties within and across folds
        dist = np.round(np.where(same, rng.rand(num_pairs) * 2.5,
                                 0.8 + rng.rand(num_pairs) * 3.1), 2) + 0.004
    elif kind == "hard":
        dist = np.where(same, rng.rand(num_pairs) * 2.0, 0.5 + rng.rand(num_pairs) * 2.5)
    else:
        raise ValueError(kind)
    return np.clip(dist, 0.0, 4.0), same


def both_classes_in_every_fold(same, n_folds):
    return all(same[test].any() and (~same[test]).any()
               for _, test in ref_kfold(len(same), n_folds))


# ---------------------------------------------------------------------------------------------
# Hand-computed cases.
# ---------------------------------------------------------------------------------------------

# 20 pairs, 2 folds of 10. Distances end in 5 in the 4th decimal so that none sits on a grid
# threshold of either grid (steps 0.01 and 0.001).
HAND_DIST = np.array([
    # fold 0: same                              different
    0.1055, 0.2055, 0.3055, 0.4055, 1.5055, 0.5055, 1.0055, 1.2055, 1.4055, 2.0055,
    # fold 1: same                              different
    0.0555, 0.1555, 0.2555, 0.6555, 0.7555, 0.3555, 0.8555, 0.9555, 1.0555, 1.1555,
])
HAND_SAME = np.array(([True] * 5 + [False] * 5) * 2)


def test_hand_computed_accuracy_and_thresholds():
    m = verification.evaluate_distances(HAND_DIST, HAND_SAME, n_folds=2)
    # Test fold 0, threshold chosen on fold 1. Fold 1 sorted: S.0555 S.1555 S.2555 D.3555 S.6555
    # S.7555 D.8555 D.9555 D1.0555 D1.1555. A threshold in (0.2555, 0.3555] scores 3 S + 5 D =
    # 8/10; one in (0.7555, 0.8555] scores 5 S + 4 D = 9/10, the best; the lowest grid value there
    # is 0.76. On fold 0 at 0.76: same 0.1055..0.4055 right (4), 1.5055 wrong; different 0.5055
    # wrong, the other 4 right: 8/10.
    # Test fold 1, threshold chosen on fold 0: S.1055 S.2055 S.3055 S.4055 D.5055 D1.0055 D1.2055
    # D1.4055 S1.5055 D2.0055. (0.4055, 0.5055] scores 4 S + 5 D = 9/10 (best, lowest grid value
    # 0.41); (1.5055, 2.0055] only 5 + 1. On fold 1 at 0.41: same 0.0555, 0.1555, 0.2555 right,
    # 0.6555, 0.7555 wrong; different 0.3555 wrong, 4 right: 7/10.
    assert m["fold_threshold"] == pytest.approx([0.76, 0.41], abs=1e-12)
    assert m["fold_accuracy"] == pytest.approx([0.8, 0.7], abs=1e-12)
    assert m["accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert m["accuracy_std"] == pytest.approx(0.05, abs=1e-12)
    assert m["threshold"] == pytest.approx(0.585, abs=1e-12)
    assert m["fold_sizes"] == [10, 10]
    assert (m["num_pairs"], m["num_same"], m["num_diff"], m["n_folds"]) == (20, 10, 10, 2)


@pytest.mark.parametrize("far_target, thresholds, vals, fars", [
    # FAR on the 5 training negatives moves in steps of 0.2. Fold 0 trains on fold 1's negatives
    # (.3555 .8555 .9555 1.0555 1.1555): FAR = 0.2 for grid thresholds 0.356..0.855, 0.4 from
    # 0.856. Target 0.2 hits the plateau exactly: slinear takes its LAST threshold, 0.855.
    # Fold 0 at 0.855: same 4/5 below, different 1/5 (0.5055). Fold 1 trains on fold 0's
    # negatives (.5055 1.0055 ...): FAR 0.2 on 0.506..1.005 -> 1.005; fold 1 at 1.005: same 5/5,
    # different 3/5 (.3555 .8555 .9555).
    (0.2, [0.855, 1.005], [0.8, 1.0], [0.2, 0.6]),
    # Target 0.3 lies between plateaus 0.2 and 0.4: halfway between the last threshold of the
    # first and the first of the second: (0.855 + 0.856) / 2 and (1.005 + 1.006) / 2. Same
    # counts as above. (De-duplicating with np.unique would give 0.606 and 0.756 instead.)
    (0.3, [0.8555, 1.0055], [0.8, 1.0], [0.2, 0.6]),
    # Target 0.001 is below the first FAR step (0.2): between (0, 0.355) and (0.2, 0.356) for fold
    # 0, i.e. 0.355005; fold 0 at 0.355005: same .1055 .2055 .3055 (3/5), different none.
    # Fold 1: between 0.505 and 0.506 -> 0.505005: same .0555 .1555 .2555 (3/5), different
    # .3555 (1/5).
    (0.001, [0.355005, 0.505005], [0.6, 0.6], [0.0, 0.2]),
])
def test_hand_computed_val_at_far(far_target, thresholds, vals, fars):
    m = verification.evaluate_distances(HAND_DIST, HAND_SAME, n_folds=2, far_target=far_target)
    assert m["fold_val_threshold"] == pytest.approx(thresholds, abs=1e-9)
    assert m["fold_val"] == pytest.approx(vals, abs=1e-12)
    assert m["fold_far"] == pytest.approx(fars, abs=1e-12)
    assert m["val"] == pytest.approx(np.mean(vals), abs=1e-12)
    assert m["val_std"] == pytest.approx(np.std(vals), abs=1e-12)
    assert m["far"] == pytest.approx(np.mean(fars), abs=1e-12)
    assert m["far_target"] == far_target


def test_hand_computed_roc_auc_eer():
    # Both folds: same at .2055, .6055; different at .4055, .8055. Per fold (so also averaged)
    # the ROC goes (0,0) -> (0,.5) after .2055 -> (.5,.5) after .4055 -> (.5,1) after .6055 ->
    # (1,1) after .8055. AUC = .5 * .5 + .5 * 1 = 0.75. FPR = 1 - TPR on the horizontal segment
    # TPR = .5 at FPR = .5: EER = 0.5. Accuracy: 3/4 at both (.2055, .4055] and (.6055, .8055];
    # ties go to the lowest grid threshold, 0.21, which scores 3/4 on the test fold.
    dist = np.array([0.2055, 0.6055, 0.4055, 0.8055] * 2)
    same = np.array([True, True, False, False] * 2)
    m = verification.evaluate_distances(dist, same, n_folds=2)
    assert m["auc"] == pytest.approx(0.75, abs=1e-12)
    assert m["eer"] == pytest.approx(0.5, abs=1e-12)
    assert m["fold_threshold"] == pytest.approx([0.21, 0.21], abs=1e-12)
    assert m["accuracy"] == pytest.approx(0.75, abs=1e-12)
    thresholds = np.asarray(m["roc_thresholds"])
    expected_tpr = (thresholds > 0.2055) * 0.5 + (thresholds > 0.6055) * 0.5
    expected_fpr = (thresholds > 0.4055) * 0.5 + (thresholds > 0.8055) * 0.5
    np.testing.assert_array_equal(m["tpr"], expected_tpr)
    np.testing.assert_array_equal(m["fpr"], expected_fpr)


def test_golden_values_from_facenet_with_scipy_and_sklearn():
    # Values printed by facenet's own calculate_roc/calculate_val with sklearn 1.0.2 KFold,
    # scipy 1.7.3 interp1d(kind='slinear'), sklearn.metrics.auc and scipy brentq (Python 3.7) on
    # these deterministic distances: 4 folds of 30, many repeated FAR values.
    i = np.arange(120)
    same = (i // 6) % 2 == 0
    frac = (i * 0.6180339887498949) % 1.0
    dist = np.round(np.where(same, 0.2 + 1.2 * frac, 0.9 + 2.0 * frac), 3) + 0.0005
    m = verification.evaluate_distances(dist, same, n_folds=4, far_target=0.05)
    assert m["fold_accuracy"] == pytest.approx([0.9, 0.8333333333333334, 0.8666666666666667, 0.8],
                                               abs=1e-15)
    assert m["fold_threshold"] == pytest.approx([1.34, 1.37, 1.31, 1.31], abs=1e-15)
    assert m["fold_val"] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 0.5833333333333334], abs=1e-15)
    assert m["fold_far"] == pytest.approx([0.0, 1 / 9, 1 / 12, 1 / 18], abs=1e-15)
    assert m["fold_val_threshold"] == pytest.approx([0.9793999999999998, 1.0221, 0.9954, 0.9951],
                                                    abs=1e-12)
    assert m["auc"] == pytest.approx(0.9443238811728395, abs=1e-12)
    assert m["eer"] == pytest.approx(0.15972222222164992, abs=1e-9)  # brentq's xtol is 2e-12


# ---------------------------------------------------------------------------------------------
# Against the loop reference on random data.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, num_pairs, n_folds, kind, far_target, balanced", [
    (0, 600, 10, "overlapping", 1e-3, False),
    (1, 503, 10, "quantised", 1e-2, False),  # 503 % 10 != 0: folds of 51, 51, 51, 50, ...
    (2, 457, 7, "hard", 0.1, False),
    # 180 training negatives per fold: the target FAR 18/180 == 0.1 is hit exactly.
    (3, 400, 10, "overlapping", 0.1, True),
    (4, 240, 3, "overlapping", 0.05, False),
])
def test_matches_loop_reference(seed, num_pairs, n_folds, kind, far_target, balanced):
    rng = np.random.RandomState(seed)
    dist, same = random_distances(rng, num_pairs, kind, balanced)
    assert both_classes_in_every_fold(same, n_folds)  # facenet's VAL divides by both counts

    m = verification.evaluate_distances(dist, same, n_folds=n_folds, far_target=far_target)
    tpr, fpr, accuracy, best = ref_calculate_roc(np.arange(0, 4, 0.01), dist, same, n_folds)
    val, far, chosen = ref_calculate_val(np.arange(0, 4, 0.001), dist, same, far_target, n_folds)

    # Same integer counts, same divisions: bit-identical.
    np.testing.assert_array_equal(m["fold_accuracy"], accuracy)
    np.testing.assert_array_equal(m["fold_threshold"], best)
    np.testing.assert_array_equal(m["tpr"], tpr)
    np.testing.assert_array_equal(m["fpr"], fpr)
    np.testing.assert_array_equal(m["fold_val"], val)
    np.testing.assert_array_equal(m["fold_far"], far)
    np.testing.assert_allclose(m["fold_val_threshold"], chosen, rtol=0, atol=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(accuracy), abs=1e-15)
    assert m["accuracy_std"] == pytest.approx(np.std(accuracy), abs=1e-15)
    assert m["val"] == pytest.approx(np.mean(val), abs=1e-15)
    assert m["val_std"] == pytest.approx(np.std(val), abs=1e-15)
    assert m["far"] == pytest.approx(np.mean(far), abs=1e-15)
    assert m["auc"] == pytest.approx(ref_auc(fpr, tpr), abs=1e-12)
    assert m["eer"] == pytest.approx(ref_eer(fpr, tpr), abs=1e-9)
    expected_sizes = [len(test) for _, test in ref_kfold(num_pairs, n_folds)]
    assert m["fold_sizes"] == expected_sizes


def test_fold_sizes_match_kfold():
    # KFold(10).split(range(23)) test sizes: the first n % k folds get one pair more.
    m = verification.evaluate_distances(np.linspace(0, 3, 23), np.arange(23) % 2 == 0)
    assert m["fold_sizes"] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]


def test_folds_are_contiguous():
    # Fold 0 alone is separable at a low threshold, the other folds only at a high one; a test
    # fold's accuracy therefore tells which pairs the protocol put in it.
    dist = np.concatenate([np.tile([0.105, 0.505], 10), np.tile([1.005, 1.505], 90)])
    same = np.tile([True, False], 100)
    m = verification.evaluate_distances(dist, same, n_folds=10)
    # Folds 1..9 choose their threshold on a training set that mixes fold 0 (2 x 10 pairs) with
    # 8 folds of the second kind: thresholds in (1.005, 1.505] get 170/180 right, the lowest grid
    # value there is 1.01. Fold 0 (all its pairs below 1.01) then scores 50%, the others 100%.
    assert m["fold_accuracy"] == pytest.approx([0.5] + [1.0] * 9)
    assert m["fold_threshold"][1:] == pytest.approx([1.01] * 9)


# ---------------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------------

def test_perfect_separation():
    rng = np.random.RandomState(7)
    num_pairs, dim = 600, 16
    same = np.tile([True, False], num_pairs // 2)
    e1 = rng.randn(num_pairs, dim)
    # Same pairs: small perturbations; different pairs: against the opposite direction plus noise.
    e2 = np.where(same[:, None], e1 + 0.05 * rng.randn(num_pairs, dim),
                  -0.5 * e1 + rng.randn(num_pairs, dim))
    n1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    n2 = e2 / np.linalg.norm(e2, axis=1, keepdims=True)
    dist = np.sum((n1 - n2) ** 2, axis=1)
    # Separated, and every distance inside the grid (< 3.99) so that the ROC reaches (1, 1).
    assert dist[same].max() < 0.2 and 1.0 < dist[~same].min() and dist.max() < 3.9
    m = verification.evaluate(e1, e2, same)
    assert m["accuracy"] == 1.0
    assert m["accuracy_std"] == 0.0
    assert m["auc"] == pytest.approx(1.0, abs=1e-12)
    assert m["eer"] == 0.0
    assert m["val"] == 1.0


@pytest.mark.parametrize("scale_kind", ["global", "per_row"])
def test_invariant_to_embedding_scale(scale_kind):
    rng = np.random.RandomState(3)
    num_pairs, dim = 400, 32
    same = rng.rand(num_pairs) < 0.5
    e1 = rng.randn(num_pairs, dim)
    e2 = np.where(same[:, None], e1 + 0.9 * rng.randn(num_pairs, dim), rng.randn(num_pairs, dim))
    if scale_kind == "global":
        s1, s2 = 37.0, 0.01
    else:
        s1, s2 = rng.uniform(0.1, 10, (num_pairs, 1)), rng.uniform(0.1, 10, (num_pairs, 1))
    a = verification.evaluate(e1, e2, same)
    b = verification.evaluate(e1 * s1, (e2 * s2).astype(np.float32), same)
    assert b["fold_accuracy"] == a["fold_accuracy"]
    assert b["fold_threshold"] == a["fold_threshold"]
    for key in ("accuracy", "val", "far", "auc", "eer"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    assert 0.6 < a["accuracy"] < 1.0  # the case is neither trivial nor hopeless


def test_evaluate_uses_squared_l2_of_normalised_embeddings():
    rng = np.random.RandomState(5)
    e1, e2 = rng.randn(200, 8), rng.randn(200, 8)
    same = rng.rand(200) < 0.5
    n1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    n2 = e2 / np.linalg.norm(e2, axis=1, keepdims=True)
    expected = verification.evaluate_distances(2.0 - 2.0 * np.sum(n1 * n2, axis=1), same)
    got = verification.evaluate(e1, e2, same)
    assert got["fold_accuracy"] == expected["fold_accuracy"]
    assert got["auc"] == pytest.approx(expected["auc"], abs=1e-9)


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1e-30, 0.0]], dtype=np.float32)
    y = verification.l2_normalize(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])


def test_fold_without_positives_counts_zero():
    # facenet's calculate_val_far would divide by zero here; calculate_accuracy's convention
    # (rate 0 when undefined) applies instead and the other folds are unaffected.
    dist = np.array([0.3, 1.5, 0.4, 1.6, 0.2, 1.7, 1.1, 1.2, 1.3, 1.4])
    same = np.array([True, False, True, False, True, False, False, False, False, False])
    m = verification.evaluate_distances(dist, same, n_folds=2, far_target=0.5)
    assert m["fold_val"][1] == 0.0
    assert m["fold_val"][0] == 1.0
    assert np.all(np.isfinite(m["tpr"])) and np.all(np.isfinite(m["fpr"]))


def test_issame_accepts_bool_and_01():
    rng = np.random.RandomState(1)
    dist = rng.rand(50) * 3
    labels = rng.rand(50) < 0.5
    ref = verification.evaluate_distances(dist, labels)
    for as_type in (np.int64, np.float32, list):
        other = verification.evaluate_distances(dist, as_type(labels.astype(int)))
        assert other["fold_accuracy"] == ref["fold_accuracy"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(embeddings1=np.ones((10, 4)), embeddings2=np.ones((9, 4)), issame=[1] * 10),
     "same shape"),
    (dict(embeddings1=np.ones((10, 4)), embeddings2=np.ones((10, 3)), issame=[1] * 10),
     "same shape"),
    (dict(embeddings1=np.ones((10, 4)), embeddings2=np.ones((10, 4)), issame=[1] * 9),
     "9 labels but there are 10 pairs"),
    (dict(embeddings1=np.where(np.eye(10, 4) > 0, np.nan, 1.0), embeddings2=np.ones((10, 4)),
          issame=[1] * 10), "embeddings1 has NaN"),
    (dict(embeddings1=np.ones((10, 4)), embeddings2=np.full((10, 4), np.inf), issame=[1] * 10),
     "embeddings2 has NaN or infinite"),
    (dict(embeddings1=np.ones(10), embeddings2=np.ones(10), issame=[1] * 10), "2-D"),
    (dict(embeddings1=np.ones((5, 4)), embeddings2=np.ones((5, 4)), issame=[1] * 5),
     "n_folds=10 exceeds the number of pairs \\(5\\)"),
    (dict(embeddings1=np.ones((20, 4)), embeddings2=np.ones((20, 4)), issame=[0, 1, 2, 1] * 5),
     "booleans or 0/1; found \\[2\\]"),
    (dict(embeddings1=np.ones((20, 4)), embeddings2=np.ones((20, 4)), issame=["a"] * 20),
     "booleans or 0/1"),
    (dict(embeddings1=np.ones((20, 4)), embeddings2=np.ones((20, 4)), issame=[1] * 20,
          n_folds=1), "at least 2"),
    (dict(embeddings1=np.ones((20, 4)), embeddings2=np.ones((20, 4)), issame=[1] * 20,
          n_folds=2.5), "integer"),
    (dict(embeddings1=np.ones((20, 4)), embeddings2=np.ones((20, 4)), issame=[1] * 20,
          far_target=0.0), "far_target"),
])
def test_invalid_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        verification.evaluate(**kwargs)


def test_invalid_distances():
    with pytest.raises(ValueError, match="NaN or infinite"):
        verification.evaluate_distances(np.array([0.1, np.nan] * 10), [0, 1] * 10)
    with pytest.raises(ValueError, match="1-D"):
        verification.evaluate_distances(np.ones((20, 2)), [0, 1] * 10)


def test_speed_lfw_sized():
    rng = np.random.RandomState(0)
    num_pairs, dim = 6000, 128
    same = np.repeat(np.tile([True, False], 10), 300)  # LFW layout: 300 same then 300 different
    e1 = rng.randn(num_pairs, dim).astype(np.float32)
    e2 = np.where(same[:, None], e1 + rng.randn(num_pairs, dim), rng.randn(num_pairs, dim))
    start = time.perf_counter()
    m = verification.evaluate(e1, e2, same)
    elapsed = time.perf_counter() - start
    print(f"evaluate(): 6000 pairs x 128-D, 400 + 4000 thresholds x 10 folds: {elapsed:.3f} s")
    assert m["num_pairs"] == 6000 and m["fold_sizes"] == [600] * 10
    assert elapsed < 5.0
