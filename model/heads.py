"""Loss heads: a small callable per head, one registry (``--head``).

A head maps a batch of embeddings and labels to a per-example loss. The proxy heads (insightface
``losses.py`` style) own a [embedding_size, num_classes] proxy matrix, compute cosine logits
against it and turn them into margin logits for softmax cross-entropy:

=======================  ==========================================================  ============
name                     loss                                                        defaults
=======================  ==========================================================  ============
``circle``               class-level circle loss (the paper's face setting)          m 0.25, γ 256
``circle_pair``          pair-level circle loss over the batch; needs P x K batches  m 0.25, γ 256
``circle_combined``      class_weight * class level + pair_weight * pair level       m 0.25, γ 256
``softmax``              normalised softmax: scale * cos, no margin                  s 64
``cosface``              AM-softmax: scale * (cos - m) at the label                  m 0.35, s 64
``arcface``              scale * cos(theta + m) at the label (insightface fallback)  m 0.5, s 64
=======================  ==========================================================  ============

All heads compute in float32 whatever the embeddings' dtype, so the loss and the proxies stay
float32 under mixed precision. ``gamma`` is the circle heads' scale; ``scale`` is the softmax
family's. Each head ignores the hyperparameters it does not use; ``head.config`` says which
values it runs with, for logging.
"""

import collections
import math
import numbers

import tensorflow.compat.v1 as tf

from model import circle_loss

__all__ = ["HEADS", "HeadOutput", "build_head"]

HeadOutput = collections.namedtuple(
    "HeadOutput",
    ["per_example_loss", "positive_similarity", "negative_similarity", "logits", "cosine"],
)
HeadOutput.__doc__ = """What a head returns.

per_example_loss: [B] float32.
positive_similarity: [B] float32, cosine with the example's own proxy (pair head: mean cosine with
  its in-batch positives, 0 when it has none).
negative_similarity: [B] float32, mean cosine with the other proxies (pair head: mean cosine with
  its in-batch negatives, 0 when it has none).
logits: [B, C] float32 margin logits the cross-entropy is taken over, or None for the pair head.
  They depend on the label (the margin applies at the label), so do not take their argmax.
cosine: [B, C] float32 cosine of each example with each proxy, or None for the pair head. Its
  argmax is the nearest proxy: use it for classification accuracy.
"""


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _number(value, what, low, high=None, low_inclusive=True):
    """Checks a python-number hyperparameter; scalar tensors (schedules) pass unchecked."""
    if not isinstance(value, numbers.Number) or isinstance(value, bool):
        return value
    ok_low = value >= low if low_inclusive else value > low
    if not ok_low or (high is not None and not value < high):
        opening = "[" if low_inclusive else "("
        bounds = f"{opening}{low}, {'inf' if high is None else high})"
        raise ValueError(f"{what} must be in {bounds}, got {value!r}")
    return float(value)


def _check_embeddings(embeddings, embedding_size):
    embeddings = tf.convert_to_tensor(embeddings)
    if not embeddings.dtype.is_floating:
        raise TypeError(f"embeddings must be floating point, got {embeddings.dtype.name}")
    if embeddings.shape.ndims is not None and embeddings.shape.ndims != 2:
        raise ValueError(
            f"embeddings must be [batch, {embedding_size}], got shape {embeddings.shape}")
    size = tf.dimension_value(embeddings.shape[-1]) if embeddings.shape.ndims else None
    if size is not None and size != embedding_size:
        raise ValueError(f"the head was built for embedding_size={embedding_size} but the "
                         f"embeddings are {embeddings.shape}")
    return tf.cast(embeddings, tf.float32)


def _mean_where(values, mask):
    """Row-wise mean of ``values`` over ``mask`` (0 for an empty row)."""
    total = tf.reduce_sum(tf.where(mask, values, tf.zeros_like(values)), axis=1)
    count = tf.reduce_sum(tf.cast(mask, tf.float32), axis=1)
    return total / tf.maximum(count, 1.0)


def _target_mask(cos, labels):
    """[B, C] bool: True at each example's label."""
    # tf.range casts its limit in TF 1.15 only when the dtypes agree: build int32, then cast.
    classes = tf.cast(tf.range(tf.shape(cos)[1]), labels.dtype)
    return tf.equal(labels[:, tf.newaxis], classes[tf.newaxis, :])


class Head:
    """Base class: validates the hyperparameters and wraps the computation in scope ``head``.

    Subclasses set ``name``, ``default_margin``, ``default_gamma``, ``needs_pk_batches`` and
    ``uses_proxies`` and implement ``_compute(embeddings, labels)``.
    """

    name = None
    needs_pk_batches = False
    uses_proxies = True
    default_margin = None
    default_gamma = None

    def __init__(self, num_classes, embedding_size, *, margin=None, gamma=None, scale=64.0,
                 class_weight=1.0, pair_weight=1.0, proxy_partitions=1,
                 proxy_initializer_stddev=0.01):
        self.embedding_size = _positive_int(embedding_size, "embedding_size")
        if self.uses_proxies:
            self.num_classes = _positive_int(num_classes, "num_classes")
            if self.num_classes < 2:
                raise ValueError(
                    f"head {self.name!r} needs num_classes >= 2, got {self.num_classes}")
        else:
            self.num_classes = num_classes
        self.margin = self.default_margin if margin is None else margin
        self.gamma = self.default_gamma if gamma is None else gamma
        self.scale = _number(scale, "scale", 0.0, low_inclusive=False)
        self.class_weight = _number(class_weight, "class_weight", 0.0)
        self.pair_weight = _number(pair_weight, "pair_weight", 0.0)
        self.proxy_partitions = _positive_int(proxy_partitions, "proxy_partitions")
        if self.uses_proxies and self.proxy_partitions > self.num_classes:
            raise ValueError(f"proxy_partitions={self.proxy_partitions} exceeds "
                             f"num_classes={self.num_classes}")
        self.proxy_initializer_stddev = _number(
            proxy_initializer_stddev, "proxy_initializer_stddev", 0.0, low_inclusive=False)
        self._validate()

    def _validate(self):
        """Head-specific checks of margin / gamma / weights."""

    @property
    def config(self):
        """The hyperparameters this head actually uses (for logs and summaries)."""
        return {"head": self.name}

    def __repr__(self):
        items = ", ".join(
            f"{key}={value!r}" for key, value in sorted(self.config.items()) if key != "head")
        return f"{type(self).__name__}({items})"

    def proxies(self):
        """Gets or creates the [embedding_size, num_classes] float32 proxy matrix ``proxies``
        in the current variable scope (``__call__`` calls it inside scope ``head``).

        With ``proxy_partitions > 1`` it is a PartitionedVariable split along the class axis, so
        a very large identity count can be spread over parameter servers.
        """
        partitioner = None
        if self.proxy_partitions > 1:
            partitioner = tf.fixed_size_partitioner(self.proxy_partitions, axis=1)
        return tf.get_variable(
            "proxies",
            [self.embedding_size, self.num_classes],
            tf.float32,
            initializer=tf.random_normal_initializer(stddev=self.proxy_initializer_stddev),
            partitioner=partitioner,
        )

    def __call__(self, embeddings, labels):
        """Builds the head's graph.

        Args:
          embeddings: [B, embedding_size] float tensor (any float dtype; cast to float32).
          labels: [B] int tensor.

        Returns:
          HeadOutput.
        """
        embeddings = _check_embeddings(embeddings, self.embedding_size)
        labels = tf.convert_to_tensor(labels)
        if labels.shape.ndims is not None and labels.shape.ndims != 1:
            raise ValueError(f"labels must be [batch], got shape {labels.shape}")
        if not labels.dtype.is_integer:
            raise TypeError(f"labels must be integers, got {labels.dtype.name}")
        # AUTO_REUSE: towers that share the proxies (e.g. flipped images) may call a head twice.
        with tf.variable_scope("head", reuse=tf.AUTO_REUSE):
            return self._compute(embeddings, labels)

    def _compute(self, embeddings, labels):
        raise NotImplementedError


class _ProxyHead(Head):
    """Cosine logits against the proxies in, margin logits out, softmax cross-entropy."""

    def margin_logits(self, cos, labels):
        """[B, C] cosines and [B] labels -> [B, C] float32 logits for cross-entropy."""
        raise NotImplementedError

    def _class_terms(self, embeddings, labels):
        cos = circle_loss.cosine_similarity(embeddings, self.proxies())
        logits = self.margin_logits(cos, labels)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        positive = tf.reduce_sum(
            tf.where(_target_mask(cos, labels), cos, tf.zeros_like(cos)), axis=1)
        negative = (tf.reduce_sum(cos, axis=1) - positive) / float(self.num_classes - 1)
        return HeadOutput(loss, positive, negative, logits, cos)

    def _compute(self, embeddings, labels):
        return self._class_terms(embeddings, labels)


class _CircleParameters:
    """Margin ``m`` in [0, 1] and scale ``gamma`` > 0 of every Circle head (defaults: the paper's
    face setting), checked and reported once for the class-level and the pair-level loss."""

    default_margin = 0.25
    default_gamma = 256.0

    def _validate(self):
        self.margin = _number(self.margin, "margin", 0.0, 1.0)
        self.gamma = _number(self.gamma, "gamma", 0.0, low_inclusive=False)

    @property
    def config(self):
        config = {"head": self.name, "margin": self.margin, "gamma": self.gamma}
        if self.uses_proxies:
            config["proxy_partitions"] = self.proxy_partitions
        return config


class CircleHead(_CircleParameters, _ProxyHead):
    """Class-level circle loss: one proxy per identity."""

    name = "circle"

    def margin_logits(self, cos, labels):
        return circle_loss.circle_logits(cos, labels, self.margin, self.gamma)


class CirclePairHead(_CircleParameters, Head):
    """Pair-level circle loss over the batch (no proxies). Needs P x K batches."""

    name = "circle_pair"
    needs_pk_batches = True
    uses_proxies = False

    def _compute(self, embeddings, labels):
        loss = circle_loss.pair_level_circle_loss(embeddings, labels, self.margin, self.gamma)
        normalized = circle_loss.l2_normalize(embeddings, axis=1)
        sim = tf.matmul(normalized, normalized, transpose_b=True)
        positive_mask, negative_mask = circle_loss.pairwise_masks(labels)
        return HeadOutput(loss, _mean_where(sim, positive_mask), _mean_where(sim, negative_mask),
                          None, None)


class CircleCombinedHead(CircleHead):
    """class_weight * class-level + pair_weight * pair-level circle loss, one proxy matrix.

    The similarities and logits reported are the class-level ones (against the proxies).
    """

    name = "circle_combined"
    needs_pk_batches = True

    def _validate(self):
        super()._validate()
        if (isinstance(self.class_weight, float) and isinstance(self.pair_weight, float)
                and self.class_weight == 0.0 and self.pair_weight == 0.0):
            raise ValueError("circle_combined: class_weight and pair_weight are both 0")

    @property
    def config(self):
        config = super().config
        config.update(class_weight=self.class_weight, pair_weight=self.pair_weight)
        return config

    def _compute(self, embeddings, labels):
        class_out = self._class_terms(embeddings, labels)
        pair_loss = circle_loss.pair_level_circle_loss(embeddings, labels, self.margin,
                                                       self.gamma)
        loss = self.class_weight * class_out.per_example_loss + self.pair_weight * pair_loss
        return class_out._replace(per_example_loss=loss)


class SoftmaxHead(_ProxyHead):
    """Normalised softmax: scale * cos, no margin (the baseline on the same embedding)."""

    name = "softmax"

    @property
    def config(self):
        return {"head": self.name, "scale": self.scale, "proxy_partitions": self.proxy_partitions}

    def margin_logits(self, cos, labels):
        return self.scale * tf.cast(cos, tf.float32)


class _AdditiveMarginHead(_ProxyHead):
    """A margin at the label and a fixed scale (CosFace, ArcFace): reported the same way."""

    @property
    def config(self):
        return {"head": self.name, "margin": self.margin, "scale": self.scale,
                "proxy_partitions": self.proxy_partitions}


class CosFaceHead(_AdditiveMarginHead):
    """CosFace / AM-softmax: scale * (cos - m) at the label, scale * cos elsewhere."""

    name = "cosface"
    default_margin = 0.35

    def _validate(self):
        self.margin = _number(self.margin, "margin", 0.0)

    def margin_logits(self, cos, labels):
        cos = tf.cast(cos, tf.float32)
        target = _target_mask(cos, labels)
        return self.scale * tf.where(target, cos - self.margin, cos)


class ArcFaceHead(_AdditiveMarginHead):
    """ArcFace: scale * cos(theta + m) at the label, scale * cos elsewhere.

    As insightface (no "easy margin"): past theta = pi - m, cos(theta + m) would rise again as the
    angle grows, so there the target logit falls back to cos(theta) - m sin(m) (insightface's
    ``th`` = cos(pi - m) switch and ``mm`` = m sin(m) penalty), which keeps decreasing in theta.
    """

    name = "arcface"
    default_margin = 0.5

    def _validate(self):
        self.margin = _number(self.margin, "margin", 0.0, math.pi)

    def margin_logits(self, cos, labels):
        cos = tf.cast(cos, tf.float32)
        margin = tf.cast(self.margin, tf.float32)
        cos_m, sin_m = tf.cos(margin), tf.sin(margin)
        threshold = tf.cos(math.pi - margin)
        mm = tf.sin(math.pi - margin) * margin
        # The floor keeps sqrt's gradient finite where |cos| rounds to 1.
        sin = tf.sqrt(tf.maximum(1.0 - tf.square(cos), 1e-12))
        cos_theta_plus_m = cos * cos_m - sin * sin_m
        target_logit = tf.where(cos > threshold, cos_theta_plus_m, cos - mm)
        return self.scale * tf.where(_target_mask(cos, labels), target_logit, cos)


HEADS = collections.OrderedDict(
    (cls.name, cls)
    for cls in (CircleHead, CirclePairHead, CircleCombinedHead, SoftmaxHead, CosFaceHead,
                ArcFaceHead)
)


def build_head(name, num_classes, embedding_size, *, margin=None, gamma=None, scale=64.0,
               class_weight=1.0, pair_weight=1.0, proxy_partitions=1,
               proxy_initializer_stddev=0.01):
    """Builds the head registered under ``name``.

    Args:
      name: one of ``HEADS`` (circle, circle_pair, circle_combined, softmax, cosface, arcface).
      num_classes: number of identities (proxies); unused by circle_pair.
      embedding_size: embedding dimension D.
      margin: margin m; None for the head's default (circle 0.25, cosface 0.35, arcface 0.5).
      gamma: circle heads' scale; None for 256.
      scale: softmax / cosface / arcface scale.
      class_weight, pair_weight: circle_combined's weights of the class- and pair-level losses.
      proxy_partitions: split the proxy matrix into this many variables along the class axis.
      proxy_initializer_stddev: stddev of the proxies' normal initializer.

    Returns:
      a Head; ``head(embeddings, labels)`` returns a HeadOutput.
    """
    try:
        cls = HEADS[name]
    except KeyError:
        valid = ", ".join(HEADS)
        raise ValueError(f"unknown head {name!r}; valid heads: {valid}") from None
    return cls(num_classes, embedding_size, margin=margin, gamma=gamma, scale=scale,
               class_weight=class_weight, pair_weight=pair_weight,
               proxy_partitions=proxy_partitions,
               proxy_initializer_stddev=proxy_initializer_stddev)
