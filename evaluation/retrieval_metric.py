"""The retrieval protocol for the training loop: EVAL metric ops, exporters and the report.

``estimator_main.py --eval_protocol=retrieval`` evaluates Recall@K, R-precision and MAP@R
(:func:`evaluation.retrieval.retrieval_metrics`) on image records of held-out identities, the way
re-identification and fine-grained retrieval are evaluated. The model code is the verification
one: ``data_tools.input_fns.image_pairs_input_fn_builder`` presents records ``2i`` and ``2i + 1``
as pair ``i``, the model embeds both images (with flip TTA as configured) and calls the injected
metric function built here, which stores every embedding at its record's row (local variables,
static shapes, as the verification metric) and runs the numpy metrics once at the end. The
labels are read from the records beforehand (``image_record_labels``), in the same order; each
pair's ``issame`` is checked against them, so a reordering is an error, not a wrong number.

The report matches the verification protocol's: the best SavedModel is ranked by
``retrieval/map@r`` (with ``report.json`` in its ``assets.extra``: :func:`report_fn`);
``eval/report.json`` at the end (``evaluation.retrieval_protocol``).
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf

from data_tools.fileio import write_metrics_json
from evaluation import retrieval

PREFIX = "retrieval"
DEFAULT_KS = (1, 5, 10)
BEST_METRIC = "map@r"
REPORT_JSON = "report.json"


def scalar_names(ks=DEFAULT_KS):
    """The scalar metrics, in the order the py_func returns them."""
    return [f"recall@{k}" for k in ks] + ["r_precision", "map@r", "num_queries"]


def _local_variable(name, shape, dtype):
    return tf.Variable(tf.zeros(shape, dtype), trainable=False, name=name,
                       collections=[tf.GraphKeys.LOCAL_VARIABLES, tf.GraphKeys.METRIC_VARIABLES])


def retrieval_metrics_fn_builder(labels, ks=DEFAULT_KS, prefix=PREFIX):
    """Builder of ``metric_fn(embeddings1, embeddings2, issame, pair_index, weight)`` for image
    records in the pair layout of ``image_pairs_input_fn_builder``.

    ``labels`` are the records' labels in reading order. Returns a dict of ``(value,
    update_op)``: ``{prefix}/recall@K`` for each K, ``r_precision``, ``map@r``, ``num_queries``.
    """
    labels = np.asarray(labels, np.int64)
    num_images = labels.size
    if num_images < 2:
        raise ValueError(f"retrieval needs at least 2 images, got {num_images}")
    num_pairs = (num_images + 1) // 2
    second = np.minimum(2 * np.arange(num_pairs) + 1, num_images - 1)
    expected_same = (labels[2 * np.arange(num_pairs)] == labels[second]).astype(np.int32)
    names = scalar_names(ks)

    def compute(store, seen, same):
        seen = seen[:num_images]
        if not np.all(seen == 1):
            missing = np.flatnonzero(seen != 1)
            raise ValueError(f"retrieval eval saw {int(np.sum(seen == 1))} of {num_images} images "
                             f"(first unseen or repeated row: {int(missing[0])}); the eval input "
                             "must yield every record exactly once")
        if not np.array_equal(same[:num_pairs], expected_same):
            raise ValueError("the eval records' labels do not match the labels read before "
                             "evaluation (records reordered or changed during the run?)")
        metrics = retrieval.retrieval_metrics(store[:num_images], labels, ks=ks)
        return np.array([metrics[name] for name in names[:-1]] + [metrics["num_queries"]],
                        np.float32)

    def metric_fn(embeddings1, embeddings2, issame, pair_index, weight, **single):
        del single  # single (non-TTA) embeddings: the retrieval metrics use the TTA ones
        dim = embeddings1.shape.as_list()[-1]
        with tf.variable_scope("retrieval_metrics"):
            store = _local_variable("embeddings", [num_images + 1, dim], tf.float32)
            seen = _local_variable("seen", [num_images + 1], tf.int32)
            same = _local_variable("issame", [num_pairs + 1], tf.int32)
        pair_index = tf.cast(pair_index, tf.int32)
        real = tf.logical_and(pair_index >= 0, weight > 0)
        spare = tf.fill(tf.shape(pair_index), num_images)
        row1 = tf.where(real, 2 * pair_index, spare)
        row2 = tf.where(tf.logical_and(real, 2 * pair_index + 1 < num_images),
                        2 * pair_index + 1, spare)
        pair_row = tf.where(real, pair_index, tf.fill(tf.shape(pair_index), num_pairs))
        update_op = tf.group(
            tf.scatter_update(store, row1, tf.cast(embeddings1, tf.float32)),
            tf.scatter_update(store, row2, tf.cast(embeddings2, tf.float32)),
            tf.scatter_add(seen, row1, tf.ones_like(row1)),
            tf.scatter_add(seen, row2, tf.ones_like(row2)),
            tf.scatter_update(same, pair_row, tf.cast(issame, tf.int32)),
        )
        scalars = tf.py_func(compute, [store, seen, same], tf.float32, stateful=True,
                             name="retrieval_evaluate")
        return {f"{prefix}/{name}": (scalars[i], update_op)
                for i, name in enumerate(names)}

    return metric_fn


def metrics_from_eval_result(eval_result, prefix=PREFIX):
    """``estimator.evaluate()``'s dict -> ``{recall@K..., r_precision, map@r, ...}``."""
    start = len(prefix) + 1
    metrics = {key[start:]: float(value) for key, value in eval_result.items()
               if key.startswith(prefix + "/")}
    if "num_queries" in metrics:
        metrics["num_queries"] = int(metrics["num_queries"])
    if "global_step" in eval_result:
        metrics["global_step"] = int(eval_result["global_step"])
    return metrics


def write_report(metrics, output_dir, extra=None):
    """``report.json`` (atomic) of a retrieval evaluation in ``output_dir``; returns its path."""
    tf.io.gfile.makedirs(output_dir)
    return write_metrics_json(os.path.join(output_dir, REPORT_JSON), metrics, extra,
                              protocol="retrieval")


def report_fn(prefix=PREFIX):
    """``report_fn(eval_result, directory) -> {name: path}`` of the best export: its
    ``report.json`` (``export.exporters.BestMetricExporter`` stores it in ``assets.extra``)."""

    def write(eval_result, directory):
        return {REPORT_JSON: write_report(metrics_from_eval_result(eval_result, prefix),
                                          directory)}

    return write
