"""The verification protocol wrapped once as estimator EVAL metric ops.

Embeddings of every pair are accumulated over the whole eval set in local variables indexed by
the pair's position (static shapes, so it also runs on Ascend), then ``verification.evaluate``
runs once on them. Padded pairs (weight 0, index -1) land in a spare row that is never read, so
padding cannot change the result, and the order of eval batches does not matter.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from export import verification

# Scalar metrics, in the order the py_func returns them, and their report names.
SCALAR_METRICS = (
    ("accuracy", "accuracy"),
    ("accuracy_std", "accuracy_std"),
    ("val_far1e-3", "val"),
    ("val_std", "val_std"),
    ("far", "far"),
    ("auc", "auc"),
    ("eer", "eer"),
    ("threshold", "threshold"),
)
# Vector metrics: returned by estimator.evaluate() (for the report), not written as summaries.
VECTOR_METRICS = ("fold_accuracy", "fold_threshold", "tpr", "fpr")


def _local_variable(name, shape, dtype):
    return tf.Variable(tf.zeros(shape, dtype), trainable=False, name=name,
                       collections=[tf.GraphKeys.LOCAL_VARIABLES, tf.GraphKeys.METRIC_VARIABLES])


def verification_metrics_fn_builder(num_pairs, n_folds=10, far_target=1e-3, prefix="lfw"):
    """Builder of ``metric_fn(embeddings1, embeddings2, issame, pair_index, weight)``.

    Returns a dict of ``(value, update_op)``: ``{prefix}/accuracy``, ``accuracy_std``,
    ``val_far1e-3``, ``val_std``, ``far``, ``auc``, ``eer``, ``threshold`` (scalars) and
    ``fold_accuracy``, ``fold_threshold``, ``tpr``, ``fpr`` (vectors). ``num_pairs`` is the size
    of the eval set (the pair records' manifest has it); every pair must be seen exactly once.
    """
    if num_pairs < n_folds:
        raise ValueError(f"{num_pairs} pairs cannot make {n_folds} folds")

    def compute(embeddings1, embeddings2, issame, seen):
        seen = seen[:num_pairs]
        if not np.all(seen == 1):
            missing = np.flatnonzero(seen != 1)
            raise ValueError(f"verification eval saw {int(np.sum(seen == 1))} of {num_pairs} pairs "
                             "(first unseen or repeated "
                             f"index: {int(missing[0])}); the eval input must yield every pair "
                             "exactly once")
        metrics = verification.evaluate(embeddings1[:num_pairs], embeddings2[:num_pairs],
                                        issame[:num_pairs].astype(bool), n_folds=n_folds,
                                        far_target=far_target)
        scalars = np.array([metrics[key] for _, key in SCALAR_METRICS], np.float32)
        vectors = [np.asarray(metrics[key], np.float32) for key in VECTOR_METRICS]
        return [scalars] + vectors

    def metric_fn(embeddings1, embeddings2, issame, pair_index, weight):
        dim = embeddings1.shape.as_list()[-1]
        rows = num_pairs + 1  # the last row takes the padding
        with tf.variable_scope("verification_metrics"):
            store1 = _local_variable("embeddings1", [rows, dim], tf.float32)
            store2 = _local_variable("embeddings2", [rows, dim], tf.float32)
            store_same = _local_variable("issame", [rows], tf.int32)
            seen = _local_variable("seen", [rows], tf.int32)
        real = tf.logical_and(pair_index >= 0, weight > 0)
        index = tf.where(real, pair_index, tf.fill(tf.shape(pair_index), num_pairs))
        update_op = tf.group(
            tf.scatter_update(store1, index, tf.cast(embeddings1, tf.float32)),
            tf.scatter_update(store2, index, tf.cast(embeddings2, tf.float32)),
            tf.scatter_update(store_same, index, tf.cast(issame, tf.int32)),
            tf.scatter_add(seen, index, tf.ones_like(index)),
        )
        outputs = tf.py_func(compute, [store1, store2, store_same, seen],
                             [tf.float32] * (1 + len(VECTOR_METRICS)), stateful=True,
                             name="verification_evaluate")
        scalars, vectors = outputs[0], outputs[1:]
        metric_ops = {}
        for i, (name, _) in enumerate(SCALAR_METRICS):
            metric_ops[f"{prefix}/{name}"] = (scalars[i], update_op)
        for name, value in zip(VECTOR_METRICS, vectors):
            metric_ops[f"{prefix}/{name}"] = (value, update_op)
        return metric_ops

    return metric_fn


def metrics_from_eval_result(eval_result, prefix="lfw"):
    """Turn ``estimator.evaluate()``'s dict back into ``verification.evaluate()``'s layout."""
    metrics = {}
    for name, key in SCALAR_METRICS:
        metrics[key] = float(eval_result[f"{prefix}/{name}"])
    for name in VECTOR_METRICS:
        metrics[name] = [float(v) for v in np.asarray(eval_result[f"{prefix}/{name}"])]
    metrics["n_folds"] = len(metrics["fold_accuracy"])
    if "global_step" in eval_result:
        metrics["global_step"] = int(eval_result["global_step"])
    return metrics
