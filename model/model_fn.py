"""The ``model_fn`` builder: backbone -> L2-normalised embedding -> head, per estimator mode.

* TRAIN: mean per-example head loss + weight decay; momentum SGD (or Adam) on a warm-up +
  piecewise/cosine schedule; a finite-loss guard that stops before a NaN update is applied.
* EVAL on image records (features ``image``): the head's loss and proxy accuracy.
* EVAL and PREDICT on the evaluation protocol's records (pairs): the spec the protocol
  supplies (``eval_spec_fn``, from ``evaluation/``: its metric ops on the embeddings of both
  images, flip TTA, the pair PREDICT of the Ascend host path); batch norm in inference mode.
* PREDICT: the L2-normalised ``embedding``, its norm before normalisation ``embedding_norm``
  and the serving ``export_outputs`` (both keys).
"""

import tensorflow.compat.v1 as tf

from model import backbones, distillation, hooks
from model import config as model_config
from model import optimization as optimization_lib

NON_FINITE_LOSS_MESSAGE = "Non-finite loss at global step"



# ITU-R BT.601 luma, the weights of PIL's "L" mode (what a grayscale JPEG such as LFW-a's was
# made with); they sum to 1, so a gray pixel stays itself and the normalisation (the same
# affine map on every channel) commutes with the conversion.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_gray(images):
    """``images`` [B, H, W, 3] with every channel replaced by the luma of the pixel."""
    luma = tf.tensordot(images, tf.constant(LUMA_WEIGHTS, images.dtype), axes=[[3], [0]])
    return tf.tile(luma[..., None], [1, 1, 1, 3])


def embed(images, backbone, is_training, embedding_size, dropout_rate=0.0,
          compute_dtype=tf.float32, grayscale=False):
    """Backbone embeddings (float32, not normalised) of a batch of normalised images.

    ``compute_dtype=tf.bfloat16`` runs the backbone in bfloat16 (its variables stay float32 and
    are cast where used); the embedding comes back as float32, so the head, the loss and the
    proxies never leave float32. ``grayscale``: the backbone sees the luma of each pixel in all
    three channels (:func:`to_gray`).
    """
    if grayscale:
        images = to_gray(images)
    build = backbones.get_backbone(backbone)
    with tf.variable_scope("backbone", reuse=tf.AUTO_REUSE):
        embeddings = build(tf.cast(images, compute_dtype), is_training=is_training,
                           embedding_size=embedding_size, dropout_rate=dropout_rate)
    return tf.cast(embeddings, tf.float32)


def _finite_loss_guard(loss, global_step):
    """An assertion that fails the step (before any update) when the loss is NaN or Inf.

    The optimizer's update and every op of ``UPDATE_OPS`` (batch-norm moving statistics) run
    after it (see :func:`_guarded_updates`), so a bad step changes no variable, not even the
    moving statistics, and the last checkpoint stays the last good one; the error message names
    the step.
    """
    return tf.debugging.Assert(tf.math.is_finite(loss),
                               [NON_FINITE_LOSS_MESSAGE, global_step, "loss", loss],
                               name="finite_loss_guard")


def _guarded_updates(update_ops, guard):
    """Make each update op wait for ``guard``.

    Depending on a group is not enough: the moving-average assignments of batch norm are ready
    as soon as the batch moments are, and would run beside a failing guard. A control input on
    each op itself orders them after it.
    """
    for update in update_ops:
        op = getattr(update, "op", update)
        if guard not in op.control_inputs:
            op._add_control_input(guard)  # noqa: SLF001 (no public API edits an existing op)
    return update_ops


def _add_train_summaries(head_output, embeddings, learning_rate):
    tf.summary.scalar("learning_rate", learning_rate)
    if head_output is not None:
        tf.summary.scalar("similarity/positive",
                          tf.reduce_mean(head_output.positive_similarity))
        tf.summary.scalar("similarity/negative",
                          tf.reduce_mean(head_output.negative_similarity))
    tf.summary.scalar("norm/embedding", tf.reduce_mean(tf.norm(embeddings, axis=1)))
    # [D, C] "proxies" (one column per class) or Partial FC's [C, D] "class_proxies".
    for name, class_axis in (("/proxies", 1), ("/class_proxies", 0)):
        parts = [v for v in tf.trainable_variables()
                 if ("/" + v.op.name).endswith(name) or name + "/part_" in v.op.name]
        if parts:
            matrix = tf.concat([tf.convert_to_tensor(p) for p in parts], axis=class_axis)
            tf.summary.scalar("norm/proxy", tf.reduce_mean(tf.norm(matrix, axis=1 - class_axis)))


def _head_and_distillation_losses(features, labels, embeddings, head_fn, distill, is_training):
    """``(head output or None, head loss, distillation loss or None, student-teacher cosine)``.

    The head's loss is the mean per-example loss (0 with ``--head=none``); the distillation
    term (float32) is built only when its weight is positive, so λ = 0 leaves today's graph.
    """
    if head_fn is None and (distill is None or not distill.enabled):
        raise ValueError("no head and no distillation term: nothing to train or evaluate on "
                         "image records (--head=none needs --distill_weight > 0)")
    if head_fn is not None:
        labels = tf.cast(labels, tf.int32)
        # Partial FC samples the classes in training; evaluation scores every class.
        head_output = head_fn(embeddings, labels, sample=is_training)
        head_loss = tf.reduce_mean(head_output.per_example_loss)
    else:
        # Created only here: an extra op before the head's would shift op-seeded initialisers.
        head_output, head_loss = None, tf.constant(0.0)
    distill_loss = cosine = None
    if distill is not None and distill.enabled:
        teacher = features.get(distillation.TEACHER_FEATURE) if isinstance(features, dict) \
            else None
        distill_loss, cosine = distillation.distillation_loss(embeddings, teacher, distill)
    return head_output, head_loss, distill_loss, cosine


def model_fn_builder(backbone, head, optimization, eval_spec_fn=None, optimizer_wrapper=None,
                     check_finite_loss=True, log_every_n_steps=100, show_progress=False,
                     model_dir=None, host_logging=False, distill=None, loss_record_path=None):
    """Return ``model_fn(features, labels, mode)`` bound to these settings.

    Args:
      backbone: a ``model.config.BackboneConfig`` (network, embedding size, input side,
        dropout, precision: ``bf16`` runs the backbone in bfloat16 in training while head, loss,
        proxies and optimizer state stay float32 (evaluation and exports compute in float32);
        ``fp16`` is TensorFlow's GPU float16 graph rewrite with
        dynamic loss scaling).
      head: a built ``model.heads.Head`` (``heads.build_head``): validated, defaults resolved.
      optimization: a ``model.config.OptimizationConfig``.
      eval_spec_fn: ``fn(features, mode, embed_fn) -> EstimatorSpec or None``: the evaluation
        protocol's EVAL and PREDICT specs on its own records (``evaluation.protocol``'s
        ``eval_spec_fn``, supplied by the caller as the metric function was), given the
        model's normalised, inference-mode ``embed_fn``; None (or a None spec) leaves the
        features to the head's image EVAL and the serving PREDICT.
      optimizer_wrapper: ``fn(optimizer) -> optimizer``, e.g. the Ascend loss-scale and
        distributed wrappers from the estimator factory.
      check_finite_loss: stop with an error naming the step when the loss is NaN/Inf.
      log_every_n_steps, show_progress, model_dir: logging, tqdm bar, summaries location.
      host_logging: no training hooks that fetch graph tensors (the Ascend estimator runs
        ``iterations_per_loop`` steps on the device per session call and refuses such hooks);
        loss, s_p and s_n still reach the summaries.
      distill: a ``model.distillation.DistillationConfig``: adds λ × the distillation term
        between the student's embedding and the feature ``teacher_embedding`` (None or λ = 0:
        no term). ``head`` may then be None (``--head=none``): the term alone.
      loss_record_path: a JSON-lines file (the run record's ``runs.jsonl``) that gets, at the
        end of training, the last step's head, distillation and total losses.
    """
    if not isinstance(backbone, model_config.BackboneConfig):
        raise TypeError(f"backbone must be a model.config.BackboneConfig, got {backbone!r}")
    if not isinstance(optimization, model_config.OptimizationConfig):
        raise TypeError("optimization must be a model.config.OptimizationConfig, got "
                        f"{optimization!r}")
    if head is not None and not callable(head):
        raise TypeError(f"head must be a built head (model.heads.build_head), got {head!r}")
    precision = backbone.precision
    training_dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    head_fn = head
    opt_config = optimization

    def model_fn(features, labels, mode):
        is_training = mode == tf.estimator.ModeKeys.TRAIN
        # bf16 is a training speed-up: evaluation and every export compute in float32, so the
        # accuracy a run reports is that of the graph it serves, and a SavedModel runs (and
        # converts to TFLite/ONNX) alike whichever precision trained it and on CPUs without
        # bfloat16 units. The variables are float32 in both.
        compute_dtype = training_dtype if is_training else tf.float32

        def normalised_embeddings(images):
            return tf.nn.l2_normalize(
                embed(images, backbone.name, is_training, backbone.embedding_size,
                      backbone.dropout_rate, compute_dtype, backbone.grayscale), axis=1)

        if eval_spec_fn is not None and not is_training:
            spec = eval_spec_fn(features, mode, normalised_embeddings)
            if spec is not None:
                return spec

        images = features["image"] if isinstance(features, dict) else features
        embeddings = embed(images, backbone.name, is_training, backbone.embedding_size,
                           backbone.dropout_rate, compute_dtype, backbone.grayscale)
        normalised = tf.nn.l2_normalize(embeddings, axis=1, name="embedding")

        if mode == tf.estimator.ModeKeys.PREDICT:
            # The norm before normalisation: insightface's N1 template pooling weights faces by
            # it, and it is the usual face-quality signal of margin-loss models.
            norm = tf.norm(embeddings, axis=1, name="embedding_norm")
            predictions = {"embedding": normalised, "embedding_norm": norm}
            return tf.estimator.EstimatorSpec(
                mode, predictions=predictions,
                export_outputs={
                    tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
                        tf.estimator.export.PredictOutput(predictions)})

        head_output, loss, distill_loss, teacher_cosine = _head_and_distillation_losses(
            features, labels, embeddings, head_fn, distill, is_training)
        objective = loss
        if distill_loss is not None:
            objective = loss + distill.weight * distill_loss

        if mode == tf.estimator.ModeKeys.EVAL:
            metric_ops = {}
            if head_output is not None:
                metric_ops["similarity/positive"] = tf.metrics.mean(
                    head_output.positive_similarity)
                metric_ops["similarity/negative"] = tf.metrics.mean(
                    head_output.negative_similarity)
                if head_output.cosine is not None:
                    metric_ops["classification/accuracy"] = tf.metrics.accuracy(
                        tf.cast(labels, tf.int32),
                        tf.argmax(head_output.cosine, axis=1, output_type=tf.int32))
            if distill_loss is not None:
                metric_ops["loss/distillation"] = tf.metrics.mean(distill_loss)
                metric_ops["distillation/teacher_cosine"] = tf.metrics.mean(teacher_cosine)
            return tf.estimator.EstimatorSpec(mode, loss=objective, eval_metric_ops=metric_ops)

        global_step = tf.train.get_or_create_global_step()
        # This replica's own Partial FC rows (under a mirrored strategy each replica samples
        # and decays its own).
        sampled_rows = [] if head_output is None or head_output.sampled_rows is None \
            else [head_output.sampled_rows]
        total_loss = objective + optimization_lib.weight_decay_loss(
            opt_config.weight_decay, rows=sampled_rows)
        lr = optimization_lib.learning_rate_schedule(
            global_step, opt_config.learning_rate, opt_config.total_steps,
            warmup_steps=opt_config.warmup_steps, schedule=opt_config.schedule,
            decay_boundaries=opt_config.decay_boundaries, decay_factor=opt_config.decay_factor)
        opt = optimization_lib.build_optimizer(opt_config.optimizer, lr,
                                               momentum=opt_config.momentum)
        if precision == "fp16":
            opt = tf.train.experimental.enable_mixed_precision_graph_rewrite(opt)
        if optimizer_wrapper is not None:
            opt = optimizer_wrapper(opt)

        dependencies = list(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
        if check_finite_loss:
            guard = _finite_loss_guard(total_loss, global_step)
            dependencies = _guarded_updates(dependencies, guard) + [guard]
        with tf.control_dependencies(dependencies):
            train_op = opt.minimize(total_loss, global_step=global_step)

        _add_train_summaries(head_output, embeddings, lr)
        tf.summary.scalar("loss/head", loss)
        tf.summary.scalar("loss/total", total_loss)
        losses = {"loss/head": loss, "loss/total": total_loss}
        if distill_loss is not None:
            tf.summary.scalar("loss/distillation", distill_loss)
            tf.summary.scalar("distillation/teacher_cosine", teacher_cosine)
            losses["loss/distillation"] = distill_loss
        # Under a mirrored strategy the model_fn sees one replica's batch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch_size = (images.shape.as_list()[0] or 0) * replicas
        training_hooks = []
        if not host_logging:
            logged = {"step": global_step, "loss": loss, "lr": lr}
            if head_output is not None:
                logged.update(s_p=tf.reduce_mean(head_output.positive_similarity),
                              s_n=tf.reduce_mean(head_output.negative_similarity))
            if distill_loss is not None:
                logged["distill"] = distill_loss
            training_hooks.append(tf.train.LoggingTensorHook(logged,
                                                             every_n_iter=log_every_n_steps))
            if loss_record_path:
                training_hooks.append(hooks.LossRecordHook(loss_record_path, losses))
        if batch_size:
            # Reads only the global step: exact under Ascend loops too (it counts step deltas).
            training_hooks.append(hooks.ExamplesPerSecondHook(
                batch_size, every_n_steps=log_every_n_steps, output_dir=model_dir))
        if show_progress:
            training_hooks.append(hooks.ProgressBarHook(
                opt_config.total_steps, None if host_logging else loss))
        return tf.estimator.EstimatorSpec(mode, loss=total_loss, train_op=train_op,
                                          training_hooks=training_hooks)

    return model_fn
