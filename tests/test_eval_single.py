"""With flip TTA the verification metric also evaluates the single (unflipped) embeddings, so
a report gives the threshold for clients that embed each image once; the host path (Ascend)
computes the same numbers from PREDICT outputs."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from evaluation import verification
from evaluation import verification_metric as eval_metrics

NUM_PAIRS, DIM, FOLDS = 40, 8, 4


def pair_data(seed=0):
    rng = np.random.RandomState(seed)
    issame = np.arange(NUM_PAIRS) % 2 == 0

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    base = rng.normal(size=(NUM_PAIRS, DIM))
    other = np.where(issame[:, None], base + 0.6 * rng.normal(size=base.shape),
                     rng.normal(size=base.shape))
    single1, single2 = unit(base), unit(other)
    tta1 = unit(single1 + unit(base + 0.3 * rng.normal(size=base.shape)))
    tta2 = unit(single2 + unit(other + 0.3 * rng.normal(size=base.shape)))
    return tta1, tta2, single1, single2, issame


def test_single_embedding_metrics_match_the_offline_protocol():
    tta1, tta2, single1, single2, issame = pair_data()
    metric_fn = eval_metrics.verification_metrics_fn_builder(NUM_PAIRS, n_folds=FOLDS)
    with tf.Graph().as_default(), tf.Session() as sess:
        ops = metric_fn(tf.constant(tta1), tf.constant(tta2), tf.constant(issame),
                        tf.range(NUM_PAIRS), tf.ones([NUM_PAIRS]),
                        single_embeddings1=tf.constant(single1),
                        single_embeddings2=tf.constant(single2))
        sess.run(tf.local_variables_initializer())
        sess.run([update for _, update in ops.values()])
        result = sess.run({name: value for name, (value, _) in ops.items()})
    tta = verification.evaluate(tta1, tta2, issame, n_folds=FOLDS)
    single = verification.evaluate(single1, single2, issame, n_folds=FOLDS)
    assert result["lfw/accuracy"] == pytest.approx(tta["accuracy"], abs=1e-6)
    assert result["lfw_single/accuracy"] == pytest.approx(single["accuracy"], abs=1e-6)
    assert result["lfw_single/threshold"] == pytest.approx(single["threshold"], abs=1e-6)
    metrics = eval_metrics.metrics_from_eval_result(result)
    assert metrics["threshold_single"] == pytest.approx(single["threshold"], abs=1e-6)
    assert metrics["threshold"] == pytest.approx(tta["threshold"], abs=1e-6)


def test_host_verification_gives_the_same_numbers():
    tta1, tta2, single1, single2, issame = pair_data(1)
    order = np.random.RandomState(0).permutation(NUM_PAIRS)
    predictions = [{"embeddings1": tta1[i], "embeddings2": tta2[i],
                    "single_embeddings1": single1[i], "single_embeddings2": single2[i],
                    "issame": issame[i], "pair_index": i, "weight": 1.0} for i in order]
    predictions.append(dict(predictions[0], pair_index=-1, weight=0.0))  # padding
    result = eval_metrics.verification_on_host(predictions, NUM_PAIRS, n_folds=FOLDS,
                                               global_step=7)
    tta = verification.evaluate(tta1, tta2, issame, n_folds=FOLDS)
    single = verification.evaluate(single1, single2, issame, n_folds=FOLDS)
    assert result["global_step"] == 7
    assert result["lfw/accuracy"] == pytest.approx(tta["accuracy"], abs=1e-6)
    assert result["lfw_single/threshold"] == pytest.approx(single["threshold"], abs=1e-6)
    with pytest.raises(ValueError, match="saw 39 of 40 pairs"):
        eval_metrics.verification_on_host(predictions[1:-1], NUM_PAIRS, n_folds=FOLDS)


def test_embed_takes_the_single_embedding_threshold_without_flip(tmp_path):
    from export import embedder  # noqa: PLC0415

    extra = tmp_path / "assets.extra"
    extra.mkdir()
    (extra / "report.json").write_text(
        '{"threshold": 1.2, "accuracy": 0.9, "threshold_single": 1.1, "accuracy_single": 0.88}')
    (tmp_path / "saved_model.pb").write_text("")
    assert embedder.decision_threshold(str(tmp_path), flip=True)[0] == pytest.approx(1.2)
    threshold, source, notes = embedder.decision_threshold(str(tmp_path), flip=False)
    assert threshold == pytest.approx(1.1) and "threshold_single" in source and not notes
    assert embedder.decision_threshold(str(tmp_path), threshold=0.5, flip=False)[0] == 0.5
