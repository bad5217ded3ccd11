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

What a head takes is declared on its class, so that one declaration feeds every reader:
``hyperparameters`` names the shared settings it uses (``margin``, ``gamma``, ``scale``,
``class_weight``, ``pair_weight``: one flag each, for all heads), and ``options`` holds its own
:class:`HeadOption` s (name, default, check, help). The base class resolves and checks the
options, ``config`` lists both, and the command line (its flags and the ``--margin`` help), the
run spec (``training/run_spec.py``: forwarding, ``params.json``) and the report tables read the
declarations: a new head option is its ``HeadOption`` line (plus the head's use of it).

Partial FC (An et al., "Killing Two Birds with One Stone: Efficient and Robust Training of Face
Recognition CNNs by Partial FC", CVPR 2022), ``partial_fc_rate=r`` < 1 on the class-level heads:
each training step keeps every class of the batch and a uniform sample (without replacement) of
the other classes, ``num_sample = ceil(r * C)`` in all, a Python int, so every shape is static.
The logits and the loss use only the sampled proxies (labels remapped to their place among
them), and the proxies are then stored class-major, ``class_proxies`` [C, D] (as insightface
and embedding tables do), because TensorFlow's sparse updates (IndexedSlices) exist only along
the first axis: the gradient reaches the sampled rows only, and a momentum or SGD step updates
only them. Weight decay applies to the sampled rows only, decayed where gathered
(``HeadOutput.sampled_rows``, which ``model_fn`` adds to its loss), so the update stays sparse.
That is insightface's first Partial FC (v1, MXNet: each step's sampled weights and their momentum
are gathered, updated with weight decay, and written back); its PartialFC_V2 (arcface_torch
``partial_fc_v2.py``) instead keeps the whole local shard a dense parameter of a torch SGD with
``weight_decay``, so every row, sampled or not, decays each step with dense momentum. Ours follows
v1 because a dense decay makes every step touch the whole [C, D] matrix and its momentum, which
is the memory traffic Partial FC is there to save at large C. Under a mirrored strategy each
replica decays the rows it gathered itself: the rows travel on the head's output, not through a
graph collection that every replica's ``model_fn`` would read. With ``r = 1`` (the default)
nothing changes: [D, C] ``proxies``, the same graph as before.
"""

import collections
import math
import numbers

import tensorflow.compat.v1 as tf

from model import circle_loss, partial_fc

__all__ = ["HEADS", "HeadOption", "HeadOutput", "build_head", "declared_options",
           "defaults_text", "partial_fc_num_sample", "users_of"]

HeadOption = collections.namedtuple("HeadOption", ["name", "default", "check", "help"])
HeadOption.__doc__ = """An option a head declares in its ``options``.

name: the keyword of ``build_head``, the flag (``--name``), the key in ``params.json``.
default: used when the option is not given (None); its type is the flag's type.
check: ``check(value, name)`` -> the value the head runs with; ValueError (one line naming the
  option) when it is refused. :func:`number` and :func:`integer` make the usual ones.
help: what it is, for ``--help`` (the head's name and the default are added there).
"""

HeadOutput = collections.namedtuple(
    "HeadOutput",
    ["per_example_loss", "positive_similarity", "negative_similarity", "logits", "cosine",
     "classes", "sampled_rows"],
)
HeadOutput.__new__.__defaults__ = (None, None)
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
classes: None, or under Partial FC sampling the [num_sample] int32 class ids (increasing) whose
  proxies were used: then logits and cosine are [B, num_sample], column j standing for class
  classes[j], and negative_similarity averages over the sampled negatives.
sampled_rows: None, or under Partial FC sampling the [num_sample, D] proxy rows gathered for
  ``classes``: the rows this call decays (``model_fn`` adds their weight decay to the loss; the
  whole class-major matrix is not decayed, or its update would turn dense). Carried on the output
  rather than in a graph collection, so that under a mirrored strategy each replica decays only
  its own gather.
"""


def partial_fc_num_sample(num_classes, rate):
    """Classes a Partial FC step keeps: ceil(rate * num_classes), at least 2, at most all."""
    # round() first: 0.3 * 10 is 3.0000000000000004 in floating point, whose ceil is 4.
    return int(min(num_classes, max(2, math.ceil(round(rate * num_classes, 6)))))


def _partial_fc_rate(value):
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not 0.0 < value <= 1.0):
        raise ValueError(f"partial_fc_rate must be in (0, 1], got {value!r}")
    return float(value)


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


def number(low, high=None, low_inclusive=True):
    """An option check: a real number in [low, high) (``(low, ...`` with ``low_inclusive``
    False; no upper bound with ``high`` None), returned as a float."""
    def check(value, name):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return _number(value, name, low, high, low_inclusive)
    return check


def integer(minimum):
    """An option check: an integer >= ``minimum``."""
    def check(value, name):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        return int(value)
    return check


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


def _class_major_cosine(embeddings, blocks, scale=None):
    """[B, C] cosines (times ``scale``, applied to the [B, D] side) of float32 embeddings with
    class-major [C_i, D] proxy blocks."""
    normalized = tf.nn.l2_normalize(embeddings, axis=1, epsilon=1e-12)
    if scale is not None:
        normalized *= scale
    cos = [tf.matmul(normalized, tf.nn.l2_normalize(tf.convert_to_tensor(block), axis=1,
                                                    epsilon=1e-12), transpose_b=True)
           for block in blocks]
    return cos[0] if len(cos) == 1 else tf.concat(cos, axis=1)


def _target_mask(cos, labels):
    """[B, C] bool: True at each example's label."""
    # tf.range casts its limit in TF 1.15 only when the dtypes agree: build int32, then cast.
    classes = tf.cast(tf.range(tf.shape(cos)[1]), labels.dtype)
    return tf.equal(labels[:, tf.newaxis], classes[tf.newaxis, :])


class Head:
    """Base class: validates the hyperparameters and wraps the computation in scope ``head``.

    Subclasses set ``name``, ``default_margin``, ``default_gamma``, ``needs_pk_batches``,
    ``uses_proxies``, the shared ``hyperparameters`` they use and their own ``options``
    (:class:`HeadOption`), and implement ``_compute(embeddings, labels)``.
    """

    name = None
    needs_pk_batches = False
    uses_proxies = True
    default_margin = None
    default_gamma = None
    hyperparameters = ()  # the shared settings this head uses (its ``config`` lists them)
    options = ()  # HeadOption: this head's own settings, each its own flag

    def __init__(self, num_classes, embedding_size, *, margin=None, gamma=None, scale=64.0,
                 class_weight=1.0, pair_weight=1.0, proxy_partitions=1,
                 proxy_initializer_stddev=0.01, partial_fc_rate=1.0, **options):
        self._set_options(options)
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
        self.partial_fc_rate = _partial_fc_rate(partial_fc_rate)
        if not self.uses_proxies and self.partial_fc_rate < 1.0:
            raise ValueError(f"head {self.name!r} has no class proxies to sample: "
                             f"partial_fc_rate must be 1, got {partial_fc_rate!r}")
        # Partial FC: sample the classes in training (class-major proxies); r = 1 never does.
        self.partial_fc = self.partial_fc_rate < 1.0
        self.num_sample = (partial_fc_num_sample(self.num_classes, self.partial_fc_rate)
                           if self.partial_fc else self.num_classes)
        self._validate()

    def _set_options(self, given):
        """Each declared option, given or its default, checked; an option the head does not
        declare is a TypeError (it would be ignored silently)."""
        declared = [option.name for option in self.options]
        unknown = sorted(set(given) - set(declared))
        if unknown:
            takes = f"; its options: {', '.join(declared)}" if declared else ""
            raise TypeError(f"head {self.name!r} takes no option {unknown[0]!r}{takes}")
        for option in self.options:
            value = given.get(option.name)
            setattr(self, option.name,
                    option.check(option.default if value is None else value, option.name))

    def _validate(self):
        """Head-specific checks of margin / gamma / weights (and of options together)."""

    def _proxy_config(self):
        config = {"proxy_partitions": self.proxy_partitions}
        if self.partial_fc:
            config.update(partial_fc_rate=self.partial_fc_rate, num_sample=self.num_sample)
        return config

    @property
    def config(self):
        """The hyperparameters this head actually uses (for logs, summaries and reports): its
        declared shared ``hyperparameters`` and ``options``, and its proxies' layout."""
        config = {"head": self.name}
        config.update((name, getattr(self, name)) for name in self.hyperparameters)
        config.update((option.name, getattr(self, option.name)) for option in self.options)
        if self.uses_proxies:
            config.update(self._proxy_config())
        return config

    def __repr__(self):
        items = ", ".join(
            f"{key}={value!r}" for key, value in sorted(self.config.items()) if key != "head")
        return f"{type(self).__name__}({items})"

    @property
    def proxy_variable(self):
        """(name, full shape) of the proxy variable in scope ``head``: ``proxies`` [D, C], or
        ``class_proxies`` [C, D] under Partial FC."""
        if self.partial_fc:
            return "class_proxies", [self.num_classes, self.embedding_size]
        return "proxies", [self.embedding_size, self.num_classes]

    def proxies(self):
        """Gets or creates the float32 proxy matrix in the current variable scope (``__call__``
        calls it inside scope ``head``): ``proxies`` [embedding_size, num_classes], or under
        Partial FC ``class_proxies`` [num_classes, embedding_size] (see ``proxy_variable``).

        With ``proxy_partitions > 1`` it is a PartitionedVariable split along the class axis, so
        a very large identity count can be spread over parameter servers.
        """
        name, shape = self.proxy_variable
        class_axis = 0 if self.partial_fc else 1
        partitioner = None
        if self.proxy_partitions > 1:
            partitioner = tf.fixed_size_partitioner(self.proxy_partitions, axis=class_axis)
        return tf.get_variable(
            name,
            shape,
            tf.float32,
            initializer=tf.random_normal_initializer(stddev=self.proxy_initializer_stddev),
            partitioner=partitioner,
        )

    def __call__(self, embeddings, labels, sample=True):
        """Builds the head's graph.

        Args:
          embeddings: [B, embedding_size] float tensor (any float dtype; cast to float32).
          labels: [B] int tensor.
          sample: under Partial FC, sample the classes (training); False scores every class
            (evaluation). Without Partial FC it changes nothing.

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
            return self._compute(embeddings, labels, sample)

    def _compute(self, embeddings, labels, sample):
        raise NotImplementedError


class _ProxyHead(Head):
    """Cosine logits against the proxies in, margin logits out, softmax cross-entropy."""

    def margin_logits(self, cos, labels):
        """[B, C] cosines and [B] labels -> [B, C] float32 logits for cross-entropy."""
        raise NotImplementedError

    def _class_terms(self, embeddings, labels, sample):
        classes = rows = None
        if not self.partial_fc:
            proxies = circle_loss._proxy_shards(self.proxies())  # noqa: SLF001
        elif sample:
            classes, labels = self.sample_classes(labels)
            # Gathered on the devices that hold the shards ("div": fixed_size_partitioner's
            # contiguous blocks); the gradient is IndexedSlices over the sampled rows.
            rows = tf.nn.embedding_lookup(self.proxies(), classes, partition_strategy="div")
            proxies = [rows]
        else:
            proxies = circle_loss._proxy_shards(self.proxies())  # noqa: SLF001
        loss_logits, logits, cos, positive = self._logits(embeddings, labels, proxies, sample)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=loss_logits)
        if positive is None:  # B entries gathered, not a [B, C] mask
            positive = tf.gather_nd(cos, tf.stack(
                [tf.range(tf.shape(labels)[0]), tf.cast(labels, tf.int32)], axis=1))
        columns = self.num_sample if classes is not None else self.num_classes
        negative = (tf.reduce_sum(cos, axis=1) - positive) / float(columns - 1)
        return HeadOutput(loss, positive, negative, logits, cos, classes, rows)

    def _cosine(self, embeddings, proxies, scale=None):
        """[B, C] cosines (times ``scale``) with [D, C_i] or Partial FC's [C_i, D] blocks."""
        if self.partial_fc:
            return _class_major_cosine(embeddings, proxies, scale)
        return circle_loss.cosine_similarity(embeddings, proxies, scale)

    def _logits(self, embeddings, labels, proxies, sample):
        """(logits the cross-entropy takes, ``margin_logits``, cosines, None or the positive
        cosines): the first two differ where a head's loss takes its logits shifted by a
        constant. Graph tensors that nothing fetches are not computed."""
        del sample  # the heads that specialise training use it
        cos = self._cosine(embeddings, proxies)
        logits = self.margin_logits(cos, labels)
        return logits, logits, cos, None

    def sample_classes(self, labels):
        """Partial FC's class sample of one step: :func:`model.partial_fc.sample_classes`."""
        return partial_fc.sample_classes(labels, self.num_classes, self.num_sample,
                                         self.partial_fc_rate)

    def _compute(self, embeddings, labels, sample):
        return self._class_terms(embeddings, labels, sample)


class _CircleParameters:
    """Margin ``m`` in [0, 1] and scale ``gamma`` > 0 of every Circle head (defaults: the paper's
    face setting), checked and reported once for the class-level and the pair-level loss."""

    default_margin = 0.25
    default_gamma = 256.0
    hyperparameters = ("margin", "gamma")

    def _validate(self):
        self.margin = _number(self.margin, "margin", 0.0, 1.0)
        self.gamma = _number(self.gamma, "gamma", 0.0, low_inclusive=False)


class CircleHead(_CircleParameters, _ProxyHead):
    """Class-level circle loss: one proxy per identity."""

    name = "circle"

    def margin_logits(self, cos, labels):
        return circle_loss.circle_logits(cos, labels, self.margin, self.gamma)

    def _logits(self, embeddings, labels, proxies, sample):
        # Training on one proxy block: circle_loss.shifted_circle_logits, a pass over [B, C]
        # forward and one backward (the cosine matrix is then a second matmul, run only when
        # fetched, as summaries do). Evaluation fetches the cosines, so takes the one matmul.
        if (not sample or len(proxies) > 1
                or type(self).margin_logits is not CircleHead.margin_logits):
            return super()._logits(embeddings, labels, proxies, sample)
        shifted, positive, shift = circle_loss.shifted_circle_logits(
            embeddings, labels, proxies[0], self.margin, self.gamma, self.partial_fc)
        return shifted, shifted - shift, self._cosine(embeddings, proxies), positive


class CirclePairHead(_CircleParameters, Head):
    """Pair-level circle loss over the batch (no proxies). Needs P x K batches."""

    name = "circle_pair"
    needs_pk_batches = True
    uses_proxies = False

    def _compute(self, embeddings, labels, sample):
        del sample  # no proxies
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
    hyperparameters = ("margin", "gamma", "class_weight", "pair_weight")

    def _validate(self):
        super()._validate()
        if (isinstance(self.class_weight, float) and isinstance(self.pair_weight, float)
                and self.class_weight == 0.0 and self.pair_weight == 0.0):
            raise ValueError("circle_combined: class_weight and pair_weight are both 0")

    def _compute(self, embeddings, labels, sample):
        class_out = self._class_terms(embeddings, labels, sample)
        pair_loss = circle_loss.pair_level_circle_loss(embeddings, labels, self.margin,
                                                       self.gamma)
        loss = self.class_weight * class_out.per_example_loss + self.pair_weight * pair_loss
        return class_out._replace(per_example_loss=loss)


class SoftmaxHead(_ProxyHead):
    """Normalised softmax: scale * cos, no margin (the baseline on the same embedding)."""

    name = "softmax"
    hyperparameters = ("scale",)

    def margin_logits(self, cos, labels):
        return self.scale * tf.cast(cos, tf.float32)

    def _logits(self, embeddings, labels, proxies, sample):
        if type(self).margin_logits is not SoftmaxHead.margin_logits:
            return super()._logits(embeddings, labels, proxies, sample)
        # The scale applied to the [B, D] side: the matmul returns the logits, and neither
        # pass nor its gradient touches [B, C] more than the matmul does.
        logits = self._cosine(embeddings, proxies, scale=self.scale)
        return logits, logits, logits / self.scale, None


class _AdditiveMarginHead(_ProxyHead):
    """A margin at the label and a fixed scale (CosFace, ArcFace): reported the same way."""

    hyperparameters = ("margin", "scale")


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
               proxy_initializer_stddev=0.01, partial_fc_rate=1.0, **options):
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
      partial_fc_rate: Partial FC, in (0, 1]: each training step uses the batch's classes and a
        uniform sample of the others, ceil(rate * num_classes) in all; 1 (default) uses every
        class. Class-level heads only (circle_pair refuses a rate below 1).
      **options: the options the head declares in its ``options`` (``model.margin_heads``:
        adaface, subcenter_arcface, magface); another is a TypeError.

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
               proxy_initializer_stddev=proxy_initializer_stddev,
               partial_fc_rate=partial_fc_rate, **options)


def declared_options():
    """``{option name: [(head name, HeadOption), ...]}`` over the registered heads, in
    registry order: what the command line defines a flag for and the run spec forwards."""
    declared = collections.OrderedDict()
    for name, cls in HEADS.items():
        for option in cls.options:
            declared.setdefault(option.name, []).append((name, option))
    return declared


def users_of(attribute):
    """The registered heads that use a shared hyperparameter (``"scale"``), by name."""
    return [name for name, cls in HEADS.items() if attribute in cls.hyperparameters]


def defaults_text(attribute):
    """The heads' defaults of a shared hyperparameter (``"margin"``: each head's
    ``default_margin``), for its flag's help: ``circle 0.25, ..., magface: none``."""
    parts, unused = [], []
    for name, cls in HEADS.items():
        default = getattr(cls, "default_" + attribute, None)
        if attribute not in cls.hyperparameters:
            unused.append(name)
        elif default is not None:
            parts.append(f"{name} {default:g}")
    return ", ".join(parts) + (f"; not used by {', '.join(unused)}" if unused else "")


# The margin heads (AdaFace, sub-center ArcFace, MagFace) subclass the ones above and register
# themselves in HEADS when imported.
from model import margin_heads  # noqa: E402,F401  pylint: disable=wrong-import-position
