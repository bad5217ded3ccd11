"""Verification on the folds the pairs carry, not contiguous blocks of the kept pairs.

``--allow_missing_pairs`` keeps fewer pairs in some folds; cutting the kept pairs into
``n_folds`` contiguous blocks then moves pairs of one (identity-disjoint) fold into the next, so a
held-out fold is scored with pairs its threshold was chosen on. The protocol (numpy), the
in-graph streaming metric, the Ascend host path, the model_fn wiring and ``export.embed
--pairs`` on pair records all evaluate on the stored ``pair/fold``. References: a loop port of
facenet's ``calculate_roc`` / ``calculate_val`` over the stored splits (tests/test_verification.py).
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from evaluation import verification
from evaluation import verification_metric as eval_metrics
from export import pair_verification
from tests import records_helpers as rh
from tests.test_verification import ref_calculate_roc, ref_calculate_val, ref_stored_splits

FOLDS, PER_FOLD, DIM = 4, 10, 8
# Pairs left out of the set, as --allow_missing_pairs leaves them: three of fold 0, one of 2.
DROPPED = (1, 4, 6, 23)


def kept_set(seed=0):
    """Embeddings, issame and stored folds of the kept pairs of a 4 x 10 pair set."""
    rng = np.random.RandomState(seed)
    total = FOLDS * PER_FOLD
    folds = np.repeat(np.arange(FOLDS), PER_FOLD)
    issame = np.arange(total) % 2 == 0
    # Each fold has its own difficulty, so a pair moved across folds changes the numbers.
    noise = np.array([0.4, 0.9, 0.6, 1.2])[folds][:, None]
    base = rng.normal(size=(total, DIM))
    other = np.where(issame[:, None], base + noise * rng.normal(size=base.shape),
                     rng.normal(size=base.shape))
    keep = np.setdiff1d(np.arange(total), DROPPED)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(base[keep]), unit(other[keep]), issame[keep], folds[keep]


def reference(e1, e2, issame, folds):
    dist = np.sum(np.square(verification.l2_normalize(e1) - verification.l2_normalize(e2)), 1)
    _, _, accuracy, best = ref_calculate_roc(np.arange(0, 4, 0.01), dist, issame, FOLDS,
                                             splits=ref_stored_splits(folds))
    val, _, _ = ref_calculate_val(np.arange(0, 4, 0.001), dist, issame, 0.1, FOLDS,
                                  splits=ref_stored_splits(folds))
    return accuracy, best, val


def test_the_protocol_on_stored_folds_is_the_loop_reference_over_those_folds():
    e1, e2, issame, folds = kept_set()
    order = np.random.RandomState(1).permutation(len(folds))  # stored folds need no order
    m = verification.evaluate(e1[order], e2[order], issame[order], far_target=0.1,
                              folds=folds[order])
    accuracy, best, val = reference(e1, e2, issame, folds)
    np.testing.assert_array_equal(m["fold_accuracy"], accuracy)
    np.testing.assert_array_equal(m["fold_threshold"], best)
    np.testing.assert_array_equal(m["fold_val"], val)
    assert m["fold_sizes"] == [7, 10, 9, 10] and m["n_folds"] == FOLDS
    # ... and contiguous blocks of the kept pairs are another, wrong, protocol here.
    recut = verification.evaluate(e1, e2, issame, n_folds=FOLDS, far_target=0.1)
    assert recut["fold_sizes"] == [9, 9, 9, 9]
    assert not np.array_equal(recut["fold_accuracy"], accuracy)


def test_stored_folds_must_be_one_per_pair_and_at_least_two():
    e1, e2, issame, folds = kept_set()
    with pytest.raises(ValueError, match="all in one fold"):
        verification.evaluate(e1, e2, issame, folds=np.zeros_like(folds))
    with pytest.raises(ValueError, match="one fold id per pair"):
        verification.evaluate(e1, e2, issame, folds=folds[1:])


def test_streaming_metric_evaluates_on_the_stored_folds():
    e1, e2, issame, folds = kept_set(2)
    num_pairs = len(folds)
    metric_fn = eval_metrics.verification_metrics_fn_builder(num_pairs, n_folds=FOLDS,
                                                             far_target=0.1)
    with tf.Graph().as_default(), tf.Session() as sess:
        ops = metric_fn(tf.constant(e1), tf.constant(e2), tf.constant(issame),
                        tf.range(num_pairs), tf.ones([num_pairs]), fold=tf.constant(folds))
        sess.run(tf.local_variables_initializer())
        sess.run([update for _, update in ops.values()])
        result = sess.run({name: value for name, (value, _) in ops.items()})
    accuracy, best, _ = reference(e1, e2, issame, folds)
    np.testing.assert_allclose(result["lfw/fold_accuracy"], accuracy, atol=1e-6)
    np.testing.assert_allclose(result["lfw/fold_threshold"], best, atol=1e-6)
    assert result["lfw/accuracy"] == pytest.approx(np.mean(accuracy), abs=1e-6)


def test_host_path_evaluates_on_the_stored_folds():
    e1, e2, issame, folds = kept_set(3)
    order = np.random.RandomState(0).permutation(len(folds))
    predictions = [{"embeddings1": e1[i], "embeddings2": e2[i], "issame": issame[i],
                    "pair_index": i, "weight": 1.0, "fold": folds[i]} for i in order]
    result = eval_metrics.verification_on_host(predictions, len(folds), n_folds=FOLDS)
    accuracy, best, _ = reference(e1, e2, issame, folds)
    np.testing.assert_allclose(result["lfw/fold_accuracy"], accuracy, atol=1e-6)
    np.testing.assert_allclose(result["lfw/fold_threshold"], best, atol=1e-6)


class _PositionEmbedder:
    """Stands in for a SavedModel: image 2i gets ``e1[i]``, image 2i + 1 ``e2[i]``."""

    def __init__(self, e1, e2):
        self.rows = np.stack([e1, e2], axis=1).reshape(-1, e1.shape[1])

    def embed_bytes(self, images, **kwargs):
        del kwargs
        assert len(images) == len(self.rows)
        return self.rows


def test_embed_pairs_on_pair_records_uses_their_folds(tmp_path):
    e1, e2, issame, folds = kept_set(4)
    rh.write_pair_records(str(tmp_path), num_pairs=len(folds), size=8, n_folds=FOLDS,
                          folds=folds)
    embedder = _PositionEmbedder(e1, e2)
    # write_pair_records labels even positions matched: score those labels.
    issame = np.arange(len(folds)) % 2 == 0
    result = pair_verification.evaluate_pair_images(embedder, str(tmp_path))
    accuracy, best, _ = reference(e1, e2, issame, folds)
    assert result.n_folds == FOLDS and result.metrics["fold_sizes"] == [7, 10, 9, 10]
    np.testing.assert_array_equal(result.metrics["fold_accuracy"], accuracy)
    np.testing.assert_array_equal(result.metrics["fold_threshold"], best)
    # Another --n_folds cuts contiguous folds, as asked.
    two = pair_verification.evaluate_pair_images(embedder, str(tmp_path), n_folds=2)
    assert two.n_folds == 2 and two.metrics["fold_sizes"] == [18, 18]
