"""The ``model_fn`` builder: backbone -> L2-normalised embedding -> head, per estimator mode.

* TRAIN: mean per-example head loss + weight decay; momentum SGD (or Adam) on a warm-up +
  piecewise/cosine schedule; a finite-loss guard that stops before a NaN update is applied.
* EVAL on image records (features ``image``): the head's loss and proxy accuracy.
* EVAL on pair records (features ``image1``, ``image2``, ...): embeddings of both images with
  optional flip test-time augmentation, handed to the pluggable ``eval_metrics_fn`` (LFW
  verification, from ``export/``); batch norm in inference mode.
* PREDICT: the L2-normalised ``embedding`` and the serving ``export_outputs``.
"""

import tensorflow.compat.v1 as tf

from model import backbones, heads, hooks, optimization

NON_FINITE_LOSS_MESSAGE = "Non-finite loss at global step"


PRECISIONS = ("fp32", "bf16", "fp16")


def embed(images, backbone, is_training, embedding_size, dropout_rate=0.0,
          compute_dtype=tf.float32):
    """Backbone embeddings (float32, not normalised) of a batch of normalised images.

    ``compute_dtype=tf.bfloat16`` runs the backbone in bfloat16 (its variables stay float32 and
    are cast where used); the embedding comes back as float32, so the head, the loss and the
    proxies never leave float32.
    """
    build = backbones.get_backbone(backbone)
    with tf.variable_scope("backbone", reuse=tf.AUTO_REUSE):
        embeddings = build(tf.cast(images, compute_dtype), is_training=is_training,
                           embedding_size=embedding_size, dropout_rate=dropout_rate)
    return tf.cast(embeddings, tf.float32)


def flip_tta_embeddings(images, flipped, embed_fn):
    """embedding(image) + embedding(flipped image), then L2-normalised.

    Each term is the model's own (normalised) embedding, exactly what the SavedModel serves, so a
    client that adds the served embeddings of an image and of its mirror image gets the
    evaluation's numbers. ``embed_fn`` maps a batch of images to normalised embeddings.
    """
    if flipped is None:
        return embed_fn(images)
    both = embed_fn(tf.concat([images, flipped], axis=0))
    plain, mirrored = tf.split(both, 2, axis=0)
    return tf.nn.l2_normalize(plain + mirrored, axis=1)


def _verification_eval_spec(features, embed_fn, eval_metrics_fn, eval_flip):
    """EVAL on pair records: pair embeddings -> the verification metric ops."""
    batch = tf.shape(features["image1"])[0]
    images = tf.concat([features["image1"], features["image2"]], axis=0)
    flipped = None
    if eval_flip:
        if "image1_flip" not in features:
            raise ValueError("eval_flip needs pair features image1_flip/image2_flip: build the "
                             "pairs input_fn with flip_tta=True")
        flipped = tf.concat([features["image1_flip"], features["image2_flip"]], axis=0)
    embeddings = flip_tta_embeddings(images, flipped, embed_fn)
    embeddings1, embeddings2 = embeddings[:batch], embeddings[batch:]

    weight = tf.cast(features["weight"], tf.float32)
    issame = tf.cast(features["issame"], tf.float32)
    cosine = tf.reduce_sum(embeddings1 * embeddings2, axis=1)
    # A monitoring number only (the verification metrics are what count): matched pairs should
    # have cosine 1, mismatched pairs cosine <= 0.
    pair_loss = issame * (1.0 - cosine) + (1.0 - issame) * tf.nn.relu(cosine)
    loss = tf.reduce_sum(pair_loss * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)

    metric_ops = {}
    if eval_metrics_fn is not None:
        metric_ops.update(eval_metrics_fn(embeddings1=embeddings1, embeddings2=embeddings2,
                                          issame=features["issame"],
                                          pair_index=features["pair_index"],
                                          weight=weight))
    metric_ops["pairs/mean_cosine_same"] = tf.metrics.mean(cosine, weights=weight * issame)
    metric_ops["pairs/mean_cosine_different"] = tf.metrics.mean(
        cosine, weights=weight * (1.0 - issame))
    return tf.estimator.EstimatorSpec(tf.estimator.ModeKeys.EVAL, loss=loss,
                                      eval_metric_ops=metric_ops)


def _finite_loss_guard(loss, global_step):
    """An assertion that fails the step (before any update) when the loss is NaN or Inf.

    The update ops depend on it, so a bad step changes no variable and the last checkpoint stays
    the last good one; the error message names the step.
    """
    return tf.debugging.Assert(tf.math.is_finite(loss),
                               [NON_FINITE_LOSS_MESSAGE, global_step, "loss", loss],
                               name="finite_loss_guard")


def _add_train_summaries(head_output, embeddings, learning_rate):
    tf.summary.scalar("learning_rate", learning_rate)
    tf.summary.scalar("similarity/positive", tf.reduce_mean(head_output.positive_similarity))
    tf.summary.scalar("similarity/negative", tf.reduce_mean(head_output.negative_similarity))
    tf.summary.scalar("norm/embedding", tf.reduce_mean(tf.norm(embeddings, axis=1)))
    proxies = [v for v in tf.trainable_variables() if "proxies" in v.op.name]
    if proxies:
        matrix = tf.concat([tf.convert_to_tensor(p) for p in proxies], axis=1)
        tf.summary.scalar("norm/proxy", tf.reduce_mean(tf.norm(matrix, axis=0)))


def model_fn_builder(backbone, head, num_classes, embedding_size=512, dropout_rate=0.0,
                     margin=None, gamma=None, scale=64.0, class_weight=1.0, pair_weight=1.0,
                     proxy_partitions=1, optimizer="momentum", learning_rate=0.1, momentum=0.9,
                     weight_decay=5e-4, total_steps=1000, warmup_steps=0, schedule="piecewise",
                     decay_boundaries=(0.5, 0.7, 0.9), decay_factor=0.1, eval_flip=True,
                     eval_metrics_fn=None, optimizer_wrapper=None, precision="fp32",
                     check_finite_loss=True, log_every_n_steps=100, show_progress=False,
                     model_dir=None):
    """Return ``model_fn(features, labels, mode)`` bound to these settings.

    Args:
      backbone, head: registry names (``model.backbones``, ``model.heads``).
      num_classes: identities in the training set (the proxy matrix is [embedding_size, C]).
      margin, gamma, scale, class_weight, pair_weight, proxy_partitions: head settings; None
        margin/gamma take the head's defaults (Circle: m = 0.25, gamma = 256).
      optimizer, learning_rate, momentum, weight_decay, total_steps, warmup_steps, schedule,
        decay_boundaries, decay_factor: training (see ``model.optimization``).
      eval_flip: flip test-time augmentation in verification EVAL.
      eval_metrics_fn: ``fn(embeddings1, embeddings2, issame, pair_index, weight)`` -> dict of
        ``(value, update_op)``; the evaluation protocol, supplied by the caller (``export/``).
      optimizer_wrapper: ``fn(optimizer) -> optimizer``, e.g. the Ascend loss-scale and
        distributed wrappers from the estimator factory.
      precision: ``fp32``; ``bf16``: the backbone computes in bfloat16 (AMX/AVX-512 CPUs)
        while head, loss, proxies and optimizer state stay float32; ``fp16``: TensorFlow's GPU
        float16 graph rewrite with dynamic loss scaling.
      check_finite_loss: stop with an error naming the step when the loss is NaN/Inf.
      log_every_n_steps, show_progress, model_dir: logging, tqdm bar, summaries location.
    """
    if precision not in PRECISIONS:
        raise ValueError("precision must be one of %s, got %r" % (PRECISIONS, precision))
    compute_dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    head_fn = heads.build_head(head, num_classes=num_classes, embedding_size=embedding_size,
                              margin=margin, gamma=gamma, scale=scale,
                              class_weight=class_weight, pair_weight=pair_weight,
                              proxy_partitions=proxy_partitions)

    def model_fn(features, labels, mode):
        is_training = mode == tf.estimator.ModeKeys.TRAIN

        def normalised_embeddings(images):
            return tf.nn.l2_normalize(
                embed(images, backbone, is_training, embedding_size, dropout_rate,
                      compute_dtype), axis=1)

        if mode == tf.estimator.ModeKeys.EVAL and "image1" in features:
            return _verification_eval_spec(features, normalised_embeddings, eval_metrics_fn,
                                           eval_flip)

        images = features["image"] if isinstance(features, dict) else features
        embeddings = embed(images, backbone, is_training, embedding_size, dropout_rate,
                           compute_dtype)
        normalised = tf.nn.l2_normalize(embeddings, axis=1, name="embedding")

        if mode == tf.estimator.ModeKeys.PREDICT:
            predictions = {"embedding": normalised}
            return tf.estimator.EstimatorSpec(
                mode, predictions=predictions,
                export_outputs={
                    tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
                        tf.estimator.export.PredictOutput(predictions)})

        labels = tf.cast(labels, tf.int32)
        head_output = head_fn(embeddings, labels)
        loss = tf.reduce_mean(head_output.per_example_loss)

        if mode == tf.estimator.ModeKeys.EVAL:
            metric_ops = {
                "similarity/positive": tf.metrics.mean(head_output.positive_similarity),
                "similarity/negative": tf.metrics.mean(head_output.negative_similarity),
            }
            if head_output.cosine is not None:
                metric_ops["classification/accuracy"] = tf.metrics.accuracy(
                    labels, tf.argmax(head_output.cosine, axis=1, output_type=tf.int32))
            return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metric_ops)

        global_step = tf.train.get_or_create_global_step()
        total_loss = loss + optimization.weight_decay_loss(weight_decay)
        lr = optimization.learning_rate_schedule(
            global_step, learning_rate, total_steps, warmup_steps=warmup_steps,
            schedule=schedule, decay_boundaries=decay_boundaries, decay_factor=decay_factor)
        opt = optimization.build_optimizer(optimizer, lr, momentum=momentum)
        if precision == "fp16":
            opt = tf.train.experimental.enable_mixed_precision_graph_rewrite(opt)
        if optimizer_wrapper is not None:
            opt = optimizer_wrapper(opt)

        dependencies = list(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
        if check_finite_loss:
            dependencies.append(_finite_loss_guard(total_loss, global_step))
        with tf.control_dependencies(dependencies):
            train_op = opt.minimize(total_loss, global_step=global_step)

        _add_train_summaries(head_output, embeddings, lr)
        tf.summary.scalar("loss/head", loss)
        tf.summary.scalar("loss/total", total_loss)
        # Under a mirrored strategy the model_fn sees one replica's batch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch_size = (images.shape.as_list()[0] or 0) * replicas
        training_hooks = [tf.train.LoggingTensorHook(
            {"step": global_step, "loss": loss, "lr": lr,
             "s_p": tf.reduce_mean(head_output.positive_similarity),
             "s_n": tf.reduce_mean(head_output.negative_similarity)},
            every_n_iter=log_every_n_steps)]
        if batch_size:
            training_hooks.append(hooks.ExamplesPerSecondHook(
                batch_size, every_n_steps=log_every_n_steps, output_dir=model_dir))
        if show_progress:
            training_hooks.append(hooks.ProgressBarHook(total_steps, loss))
        return tf.estimator.EstimatorSpec(mode, loss=total_loss, train_op=train_op,
                                          training_hooks=training_hooks)

    return model_fn
