"""The verification protocol wrapped once as estimator EVAL metric ops.

Embeddings of every pair are accumulated over the whole eval set in local variables indexed by
the pair's position (static shapes, so it also runs on Ascend), then ``verification.evaluate``
runs once on them. Padded pairs (weight 0, index -1) land in a spare row that is never read, so
padding cannot change the result, and the order of eval batches does not matter. Each pair's
stored fold (``pair/fold``) is kept with it when the input gives it, and the protocol runs on
those folds: with pairs left out by ``--allow_missing_pairs``, cutting the kept pairs into
contiguous blocks would move pairs of one (identity-disjoint) fold into the next.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from evaluation import reports, verification

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
# With several verification sets: these scalars averaged over the sets, as mean/<name>.
MEAN_PREFIX = "mean"
MEAN_METRICS = ("accuracy", "val_far1e-3", "auc", "eer")


def _local_variable(name, shape, dtype):
    return tf.Variable(tf.zeros(shape, dtype), trainable=False, name=name,
                       collections=[tf.GraphKeys.LOCAL_VARIABLES, tf.GraphKeys.METRIC_VARIABLES])


def _evaluate_stored(embeddings1, embeddings2, issame, seen, num_pairs, n_folds, far_target,
                     stray=0, folds=None):
    """``verification.evaluate`` on embeddings stored by pair index, once each pair was seen.
    ``stray``: how many real pairs came with an index outside 0 .. num_pairs - 1. ``folds``:
    each pair's stored fold, or None for ``n_folds`` contiguous folds."""
    if stray:
        raise ValueError(f"{int(stray)} eval pair(s) have an index outside the {num_pairs} pairs "
                         "of the set; pair records written with make_tfrecords.py "
                         "--allow_missing_pairs before 2 Dec 2026 number pairs by their "
                         "pairs-file line: convert them again")
    seen = np.asarray(seen)[:num_pairs]
    if not np.all(seen == 1):
        missing = np.flatnonzero(seen != 1)
        raise ValueError(f"verification eval saw {int(np.sum(seen == 1))} of {num_pairs} pairs "
                         f"(first unseen or repeated index: {int(missing[0])}); the eval input "
                         "must yield every pair exactly once")
    if folds is not None:
        folds = np.asarray(folds)[:num_pairs]
    return verification.evaluate(embeddings1[:num_pairs], embeddings2[:num_pairs],
                                 np.asarray(issame)[:num_pairs].astype(bool), n_folds=n_folds,
                                 far_target=far_target, folds=folds)


def verification_on_host(predictions, num_pairs, n_folds=10, far_target=1e-3, prefix="lfw",
                         global_step=None):
    """The same protocol from PREDICT outputs, computed in numpy on the host.

    For devices whose graphs cannot hold a ``py_func`` (Ascend in its default mode): the device
    computes the pair embeddings (``model_fn`` PREDICT on pair records yields ``embeddings1``,
    ``embeddings2``, ``issame``, ``pair_index``, ``weight`` and ``fold`` per pair), the metrics
    are computed here, on the stored folds when the predictions carry them. Returns a dict
    keyed like ``estimator.evaluate()``'s, so reports and exporters take it unchanged.
    """
    predictions = list(predictions)
    result = _host_metrics(predictions, "embeddings1", "embeddings2", num_pairs, n_folds,
                           far_target, prefix)
    if predictions and "single_embeddings1" in predictions[0]:
        result.update(_host_metrics(predictions, "single_embeddings1", "single_embeddings2",
                                    num_pairs, n_folds, far_target, single_prefix(prefix)))
    if global_step is not None:
        result["global_step"] = int(global_step)
    return result


def _host_metrics(predictions, key1, key2, num_pairs, n_folds, far_target, prefix):
    store1 = store2 = None
    store_same = np.zeros([num_pairs], np.int32)
    store_fold = np.zeros([num_pairs], np.int32)
    has_folds = bool(predictions) and "fold" in predictions[0]
    seen = np.zeros([num_pairs], np.int32)
    for item in predictions:
        index = int(item["pair_index"])
        if index < 0 or float(item["weight"]) <= 0:
            continue  # padding
        if index >= num_pairs:
            raise ValueError(f"pair index {index} outside the {num_pairs} pairs of the eval set")
        if store1 is None:
            dim = np.asarray(item[key1]).shape[-1]
            store1 = np.zeros([num_pairs, dim], np.float32)
            store2 = np.zeros([num_pairs, dim], np.float32)
        store1[index], store2[index] = item[key1], item[key2]
        store_same[index] = int(item["issame"])
        if has_folds:
            store_fold[index] = int(item["fold"])
        seen[index] += 1
    if store1 is None:
        raise ValueError("the eval input yielded no pairs")
    metrics = _evaluate_stored(store1, store2, store_same, seen, num_pairs, n_folds, far_target,
                               folds=store_fold if has_folds else None)
    result = {f"{prefix}/{name}": np.float32(metrics[key])
              for name, key in SCALAR_METRICS}
    for name in VECTOR_METRICS:
        result[f"{prefix}/{name}"] = np.asarray(metrics[name], np.float32)
    return result


def single_prefix(prefix):
    """Metric prefix of the same verification on single embeddings (no flip TTA)."""
    return prefix + "_single"


def verification_metrics_fn_builder(num_pairs, n_folds=10, far_target=1e-3, prefix="lfw",
                                    scope="verification_metrics"):
    """Builder of ``metric_fn(embeddings1, embeddings2, issame, pair_index, weight,
    single_embeddings1=None, single_embeddings2=None, fold=None)``.

    Returns a dict of ``(value, update_op)``: ``{prefix}/accuracy``, ``accuracy_std``,
    ``val_far1e-3``, ``val_std``, ``far``, ``auc``, ``eer``, ``threshold`` (scalars) and
    ``fold_accuracy``, ``fold_threshold``, ``tpr``, ``fpr`` (vectors). ``num_pairs`` is the size
    of the eval set (the pair records' manifest has it); every pair must be seen exactly once.
    With flip TTA the model also hands over the single (unflipped) embeddings: the same metrics
    of those come under ``{prefix}_single/``, so a report also gives the threshold for a client
    that embeds each image once. ``fold``: each pair's stored fold (the pair records'
    ``pair/fold``); given, the protocol runs on those folds, otherwise on ``n_folds`` contiguous
    ones. ``scope``: of the local variables (one per builder in a graph).
    """
    if num_pairs < n_folds:
        raise ValueError(f"{num_pairs} pairs cannot make {n_folds} folds")

    def compute(embeddings1, embeddings2, issame, seen, stray, folds, has_folds):
        metrics = _evaluate_stored(embeddings1, embeddings2, issame, seen, num_pairs, n_folds,
                                   far_target, stray, folds=folds if has_folds else None)
        scalars = np.array([metrics[key] for _, key in SCALAR_METRICS], np.float32)
        vectors = [np.asarray(metrics[key], np.float32) for key in VECTOR_METRICS]
        return [scalars] + vectors

    def store_and_evaluate(scope, name_prefix, embeddings1, embeddings2, issame, pair_index,
                           weight, fold=None):
        dim = embeddings1.shape.as_list()[-1]
        rows = num_pairs + 1  # the last row takes the padding
        with tf.variable_scope(scope):
            store1 = _local_variable("embeddings1", [rows, dim], tf.float32)
            store2 = _local_variable("embeddings2", [rows, dim], tf.float32)
            store_same = _local_variable("issame", [rows], tf.int32)
            seen = _local_variable("seen", [rows], tf.int32)
            stray = _local_variable("stray", [], tf.int32)
            store_fold = _local_variable("fold", [rows], tf.int32)
        real = tf.logical_and(pair_index >= 0, weight > 0)
        # An index past the set (records of an older converter) is counted, not scattered out of
        # range: compute() then names the cause instead of a ResourceScatterAdd error.
        inside = tf.logical_and(real, pair_index < num_pairs)
        index = tf.where(inside, pair_index, tf.fill(tf.shape(pair_index), num_pairs))
        updates = [
            tf.assign_add(stray, tf.reduce_sum(tf.cast(tf.logical_and(
                real, tf.logical_not(inside)), tf.int32))),
            tf.scatter_update(store1, index, tf.cast(embeddings1, tf.float32)),
            tf.scatter_update(store2, index, tf.cast(embeddings2, tf.float32)),
            tf.scatter_update(store_same, index, tf.cast(issame, tf.int32)),
            tf.scatter_add(seen, index, tf.ones_like(index)),
        ]
        if fold is not None:
            updates.append(tf.scatter_update(store_fold, index, tf.cast(fold, tf.int32)))
        update_op = tf.group(*updates)
        has_folds = tf.constant(fold is not None)
        outputs = tf.py_func(compute, [store1, store2, store_same, seen, stray, store_fold,
                                       has_folds],
                             [tf.float32] * (1 + len(VECTOR_METRICS)), stateful=True,
                             name=scope.replace("metrics", "evaluate"))
        scalars, vectors = outputs[0], outputs[1:]
        metric_ops = {}
        for i, (name, _) in enumerate(SCALAR_METRICS):
            metric_ops[f"{name_prefix}/{name}"] = (scalars[i], update_op)
        for name, value in zip(VECTOR_METRICS, vectors):
            metric_ops[f"{name_prefix}/{name}"] = (value, update_op)
        return metric_ops

    def metric_fn(embeddings1, embeddings2, issame, pair_index, weight,
                  single_embeddings1=None, single_embeddings2=None, fold=None):
        metric_ops = store_and_evaluate(scope, prefix, embeddings1, embeddings2, issame,
                                        pair_index, weight, fold)
        if single_embeddings1 is not None:
            metric_ops.update(store_and_evaluate(
                scope + "_single", single_prefix(prefix), single_embeddings1,
                single_embeddings2, issame, pair_index, weight, fold))
        return metric_ops

    return metric_fn


def _check_sets(sets):
    sets = [(str(name), int(num_pairs), int(n_folds)) for name, num_pairs, n_folds in sets]
    names = [name for name, _, _ in sets]
    if not sets:
        raise ValueError("no verification sets")
    if len(set(names)) != len(names) or MEAN_PREFIX in names:
        raise ValueError(f"verification set names must be distinct and not {MEAN_PREFIX!r}: "
                         f"{names}")
    return sets


def verification_sets_metrics_fn_builder(sets, far_target=1e-3):
    """:func:`verification_metrics_fn_builder` for several sets evaluated in one pass.

    ``sets``: ``[(name, num_pairs, n_folds)]`` in the order of the input's ``set_index``
    feature (``data_tools.input_fns.pair_sets_input_fn_builder``). Each set has its own store,
    indexed by the pair's index within the set, and its metrics under ``{name}/`` (and
    ``{name}_single/``), exactly those of the set evaluated alone; ``mean/accuracy``,
    ``mean/val_far1e-3``, ``mean/auc`` and ``mean/eer`` average them over the sets.
    """
    sets = _check_sets(sets)
    builders = [verification_metrics_fn_builder(num_pairs, n_folds=n_folds,
                                                far_target=far_target, prefix=name,
                                                scope=f"verification_metrics_{index}")
                for index, (name, num_pairs, n_folds) in enumerate(sets)]
    names = [name for name, _, _ in sets]

    def metric_fn(embeddings1, embeddings2, issame, pair_index, weight, set_index,
                  single_embeddings1=None, single_embeddings2=None, fold=None):
        weight = tf.cast(weight, tf.float32)
        metric_ops = {}
        for index, builder in enumerate(builders):
            in_set = tf.cast(tf.equal(set_index, index), tf.float32)
            metric_ops.update(builder(embeddings1, embeddings2, issame, pair_index,
                                      weight * in_set, single_embeddings1=single_embeddings1,
                                      single_embeddings2=single_embeddings2, fold=fold))
        update_op = tf.group(*[metric_ops[f"{name}/accuracy"][1] for name in names])
        for metric in MEAN_METRICS:
            values = [metric_ops[f"{name}/{metric}"][0] for name in names]
            metric_ops[f"{MEAN_PREFIX}/{metric}"] = (tf.add_n(values) / float(len(values)),
                                                     update_op)
        return metric_ops

    return metric_fn


def verification_sets_on_host(predictions, sets, far_target=1e-3, global_step=None):
    """:func:`verification_on_host` for the PREDICT outputs of several sets (each item has a
    ``set_index``): the dict :func:`verification_sets_metrics_fn_builder`'s ops give."""
    sets = _check_sets(sets)
    by_set = [[] for _ in sets]
    for item in predictions:
        index = int(item["set_index"])
        if not 0 <= index < len(sets):
            raise ValueError(f"set index {index} outside the {len(sets)} verification sets")
        by_set[index].append(item)
    result = {}
    for (name, num_pairs, n_folds), items in zip(sets, by_set):
        result.update(verification_on_host(items, num_pairs, n_folds, far_target, name))
    for metric in MEAN_METRICS:
        result[f"{MEAN_PREFIX}/{metric}"] = np.float32(
            np.mean([result[f"{name}/{metric}"] for name, _, _ in sets]))
    if global_step is not None:
        result["global_step"] = int(global_step)
    return result


def metrics_from_eval_result(eval_result, prefix="lfw"):
    """Turn ``estimator.evaluate()``'s dict back into ``verification.evaluate()``'s layout."""
    metrics = {}
    for name, key in SCALAR_METRICS:
        metrics[key] = float(eval_result[f"{prefix}/{name}"])
    for name in VECTOR_METRICS:
        metrics[name] = [float(v) for v in np.asarray(eval_result[f"{prefix}/{name}"])]
    metrics["n_folds"] = len(metrics["fold_accuracy"])
    single = single_prefix(prefix)
    # The model hands over single embeddings exactly when it flips (model_fn's eval_flip), so
    # their metrics say whether ``threshold`` is a flip-TTA threshold; readers of the report
    # check it against the embeddings they judge (export.embedder.decision_threshold).
    metrics["flip"] = f"{single}/threshold" in eval_result
    if metrics["flip"]:
        # Without flip TTA (one embedding per image, as a plain serving call gives).
        metrics["accuracy_single"] = float(eval_result[f"{single}/accuracy"])
        metrics["threshold_single"] = float(eval_result[f"{single}/threshold"])
    if "global_step" in eval_result:
        metrics["global_step"] = int(eval_result["global_step"])
    return metrics


def report_fn(prefix="lfw"):
    """``report_fn(eval_result, directory) -> {name: path}`` of the best export with one set:
    its report.json and roc.png (nothing when the result has no verification metrics)."""

    def write(eval_result, directory):
        if f"{prefix}/accuracy" not in eval_result:
            return {}
        json_path, png_path = reports.write_report(metrics_from_eval_result(eval_result, prefix),
                                                   directory)
        return {reports.REPORT_JSON: json_path, reports.ROC_PNG: png_path}

    return write
