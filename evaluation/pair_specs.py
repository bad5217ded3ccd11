"""The pair EVAL/PREDICT specs a protocol hands to ``model_fn`` (``model_fn_builder``'s
``eval_spec_fn``), so that ``model/`` holds the network and its training, not the protocols.

Verification and retrieval both evaluate pairs of images (features ``image1``, ``image2``,
``issame``, ``pair_index``, ``weight``, optional ``fold``, ``set_index``, flipped copies):
* EVAL: embeddings of both images, flip test-time augmentation when asked, handed to the
  protocol's metric function (``fn(embeddings1, embeddings2, issame, pair_index, weight,
  [fold, set_index, single_embeddings1/2])`` -> ``{name: (value, update_op)}``), and two
  monitoring means of the pairs' cosines; batch norm in inference mode (the model's
  ``embed_fn``).
* PREDICT: the pair embeddings with their index, label, weight (and fold, set): what the
  Ascend host path evaluates in numpy (CANN's default mode runs no ``py_func``).
"""

import tensorflow.compat.v1 as tf

PAIR_FEATURE = "image1"  # features holding it are pairs: the protocol's, not the head's


def flip_tta_embeddings(images, flipped, embed_fn, with_single=False):
    """embedding(image) + embedding(flipped image), then L2-normalised.

    Each term is the model's own (normalised) embedding, exactly what the SavedModel serves, so a
    client that adds the served embeddings of an image and of its mirror image gets the
    evaluation's numbers. ``embed_fn`` maps a batch of images to normalised embeddings.
    ``with_single``: also return the plain images' own embeddings (None without ``flipped``).
    """
    if flipped is None:
        plain = embed_fn(images)
        return (plain, None) if with_single else plain
    both = embed_fn(tf.concat([images, flipped], axis=0))
    plain, mirrored = tf.split(both, 2, axis=0)
    combined = tf.nn.l2_normalize(plain + mirrored, axis=1)
    return (combined, plain) if with_single else combined


def pair_embeddings(features, embed_fn, eval_flip):
    """Normalised embeddings of both images of each pair, flip TTA applied when asked:
    ``{"embeddings1", "embeddings2"}``, plus ``single_embeddings1/2`` (no TTA) with flips."""
    batch = tf.shape(features["image1"])[0]
    images = tf.concat([features["image1"], features["image2"]], axis=0)
    flipped = None
    if eval_flip:
        if "image1_flip" not in features:
            raise ValueError("eval_flip needs pair features image1_flip/image2_flip: build the "
                             "pairs input_fn with flip_tta=True")
        flipped = tf.concat([features["image1_flip"], features["image2_flip"]], axis=0)
    embeddings, single = flip_tta_embeddings(images, flipped, embed_fn, with_single=True)
    outputs = {"embeddings1": embeddings[:batch], "embeddings2": embeddings[batch:]}
    if single is not None:
        outputs.update(single_embeddings1=single[:batch], single_embeddings2=single[batch:])
    return outputs


def _set_index(features):
    """``{"set_index": ...}`` when the pairs come from several verification sets, else {}."""
    return {"set_index": features["set_index"]} if "set_index" in features else {}


def _fold(features):
    """``{"fold": ...}``: each pair's stored fold, on which the verification protocol runs (the
    kept pairs of an ``--allow_missing_pairs`` set do not fall into contiguous folds)."""
    return {"fold": features["fold"]} if "fold" in features else {}


def pair_predict_spec(features, embed_fn, eval_flip):
    """PREDICT on pair records: the pair embeddings with their index, label and weight, for a
    verification computed on the host (Ascend: no py_func in a device graph)."""
    predictions = pair_embeddings(features, embed_fn, eval_flip)
    predictions.update(issame=features["issame"], pair_index=features["pair_index"],
                       weight=features["weight"], **_set_index(features), **_fold(features))
    return tf.estimator.EstimatorSpec(tf.estimator.ModeKeys.PREDICT, predictions=predictions)


def pair_eval_spec(features, embed_fn, metrics_fn, eval_flip):
    """EVAL on pair records: pair embeddings -> the protocol's metric ops."""
    pair = pair_embeddings(features, embed_fn, eval_flip)
    embeddings1, embeddings2 = pair["embeddings1"], pair["embeddings2"]

    weight = tf.cast(features["weight"], tf.float32)
    issame = tf.cast(features["issame"], tf.float32)
    cosine = tf.reduce_sum(embeddings1 * embeddings2, axis=1)
    # A monitoring number only (the protocol's metrics are what count): matched pairs should
    # have cosine 1, mismatched pairs cosine <= 0.
    pair_loss = issame * (1.0 - cosine) + (1.0 - issame) * tf.nn.relu(cosine)
    loss = tf.reduce_sum(pair_loss * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)

    metric_ops = {}
    if metrics_fn is not None:
        metric_ops.update(metrics_fn(issame=features["issame"],
                                     pair_index=features["pair_index"], weight=weight,
                                     **_set_index(features), **_fold(features), **pair))
    metric_ops["pairs/mean_cosine_same"] = tf.metrics.mean(cosine, weights=weight * issame)
    metric_ops["pairs/mean_cosine_different"] = tf.metrics.mean(
        cosine, weights=weight * (1.0 - issame))
    return tf.estimator.EstimatorSpec(tf.estimator.ModeKeys.EVAL, loss=loss,
                                      eval_metric_ops=metric_ops)


def pair_spec_fn_builder(metrics_fn=None, eval_flip=True):
    """``eval_spec_fn(features, mode, embed_fn) -> EstimatorSpec or None`` for
    ``model.model_fn.model_fn_builder``: the pair EVAL (``metrics_fn``: None keeps the
    monitoring metrics only, as on the Ascend host path) and PREDICT specs on pair features,
    None for any other input (the head's image EVAL, the serving PREDICT); ``model_fn`` asks
    only outside training."""

    def eval_spec_fn(features, mode, embed_fn):
        if not (isinstance(features, dict) and PAIR_FEATURE in features):
            return None
        if mode == tf.estimator.ModeKeys.PREDICT:
            return pair_predict_spec(features, embed_fn, eval_flip)
        return pair_eval_spec(features, embed_fn, metrics_fn, eval_flip)

    return eval_spec_fn
