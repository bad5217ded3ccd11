"""The margin heads of the recent literature: AdaFace, sub-center ArcFace and MagFace.

They follow the proxy-head pattern of ``model.heads`` (cosine logits against the class proxies,
margin logits, softmax cross-entropy; float32 whatever the embeddings' dtype; static shapes) and
register themselves in ``heads.HEADS``. Each declares the options it takes in ``options``
(``heads.HeadOption``: name, default, check, help): the base class resolves and checks them, and
the command line, the run spec and the reports read the declarations.

=====================  =====================================================  ==================
name                   margin                                                 defaults
=====================  =====================================================  ==================
``adaface``            angular + additive margin scaled by the feature norm   m 0.4, h 0.333,
                       standardised by an EMA of the batch norm statistics    t_alpha 0.01, s 64
``subcenter_arcface``  ArcFace on the nearest of K sub-centres of a class;    K 3, m 0.5, s 64,
                       optionally the dominant sub-centre only after N steps  drop off (75°)
``magface``            ArcFace margin growing with the feature norm, plus     l_a 10, u_a 110,
                       the regulariser g that pushes easy faces' norms up     l_m 0.45, u_m 0.8,
                                                                              λ_g 35, s 64
=====================  =====================================================  ==================

References (the numpy transcriptions in ``tests/test_margin_heads.py`` are written from these):
AdaFace, Kim et al., CVPR 2022, github.com/mk-minchul/AdaFace ``head.py`` (class AdaFace);
sub-center ArcFace, Deng et al., ECCV 2020, github.com/deepinsight/insightface
``recognition/SubCenter-ArcFace/train_parall.py`` (``get_symbol_arcface``) and ``drop.py``;
MagFace, Meng et al., CVPR 2021, github.com/IrvingMeng/MagFace ``models/magface.py``
(MagLinear, MagLoss, SoftmaxBuilder._margin) and ``run/trainer.py`` (loss + λ_g · g).

AdaFace and MagFace read each example's feature norm: the head receives the backbone's
embeddings before L2 normalisation (``model_fn`` passes them so), and the norm is what the
served ``embedding_norm`` reports as a face-quality score.
"""

import math

import tensorflow.compat.v1 as tf
from absl import logging

from model import circle_loss, heads

__all__ = ["AdaFaceHead", "MagFaceHead", "SubCenterArcFaceHead", "MARGIN_HEADS"]


def _real(tensor):
    """float32, or float64 kept (the tests compare the formulas in float64)."""
    tensor = tf.convert_to_tensor(tensor)
    return tensor if tensor.dtype == tf.float64 else tf.cast(tensor, tf.float32)


def _feature_norms(embeddings):
    """[B] Euclidean norms; the floor keeps the gradient finite at a zero embedding."""
    return tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(embeddings), axis=1), 1e-12))


class _NormAwareHead(heads._ProxyHead):  # noqa: SLF001
    """A proxy head whose margin depends on each example's feature norm.

    The base class's ``_class_terms`` (proxies, Partial FC sampling, the loss) calls
    ``margin_logits(cos, labels)``; the norms of the call in progress are kept on the head for
    that call only, so that the sampling code stays in one place.
    """

    def _compute(self, embeddings, labels, sample):
        self._norms, self._training = _feature_norms(embeddings), sample
        try:
            output = self._class_terms(embeddings, labels, sample)
            return self._add_regulariser(output)
        finally:
            self._norms = self._training = None

    def _add_regulariser(self, output):
        return output


class AdaFaceHead(_NormAwareHead):
    """AdaFace: the margin adapts to image quality, read from the feature norm.

    norm_hat = clip(h (‖z‖ - μ) / (σ + ε), -1, 1) with μ, σ an exponential moving average
    (rate ``t_alpha``) of the batch mean and (unbiased) standard deviation of the norms; the
    target logit is s (cos(θ + g_angle) - g_add) with g_angle = -m norm_hat and
    g_add = m + m norm_hat: high-norm (good) faces get an ArcFace-like angular margin, low-norm
    ones a CosFace-like one, so hard unrecognisable images are not over-weighted.

    As the authors' code: the statistics are updated first and the updated ones are used, the
    norms are clipped to [0.001, 100] and carry no gradient, cosines are clamped to
    [-1 + 1e-3, 1 - 1e-3]. The moving averages are non-trainable float32 variables
    (``head/adaface_batch_mean`` from 20, ``head/adaface_batch_std`` from 100) assigned in
    training only: the assignment is an ``UPDATE_OPS`` op, which ``model_fn`` runs with the
    train op (after the finite-loss guard), and never in evaluation. Under a mirrored or
    multi-worker strategy they are ``VariableAggregation.MEAN`` variables: every replica's
    update is averaged, i.e. the EMA follows the replicas' mean batch statistics (the authors'
    DDP run keeps rank 0's buffers, broadcast at each forward).
    """

    name = "adaface"
    default_margin = 0.4
    hyperparameters = ("margin", "scale")
    options = (
        heads.HeadOption("adaface_h", 0.333, heads.number(0.0),
                         "h, the spread of the norm-adaptive margin"),
        heads.HeadOption("adaface_t_alpha", 0.01,
                         heads.number(0.0, 1.0 + 1e-12, low_inclusive=False),
                         "rate of the moving average of the batch norm statistics"),
    )
    eps = 1e-3
    initial_mean, initial_std = 20.0, 100.0

    def _validate(self):
        self.margin = heads._number(self.margin, "margin", 0.0, math.pi)  # noqa: SLF001

    def _moving_statistics(self):
        def state(name, value):
            return tf.get_variable(
                name, [], tf.float32, initializer=tf.constant_initializer(value),
                trainable=False, aggregation=tf.VariableAggregation.MEAN)
        return (state("adaface_batch_mean", self.initial_mean),
                state("adaface_batch_std", self.initial_std))

    def margin_logits(self, cos, labels):
        return self.adaptive_logits(cos, labels, self._norms, self._training)

    def adaptive_logits(self, cos, labels, norms, training):
        """[B, C] logits of [B, C] cosines, [B] labels and [B] feature norms; ``training``
        adds the moving statistics' update to ``UPDATE_OPS``. Inside variable scope ``head``."""
        cos = _real(cos)
        dtype = cos.dtype
        cos = tf.clip_by_value(cos, -1.0 + self.eps, 1.0 - self.eps)
        norms = tf.clip_by_value(tf.stop_gradient(tf.cast(norms, dtype)), 0.001, 100.0)
        batch = tf.cast(tf.size(norms), dtype)
        mean = tf.reduce_mean(norms)
        # torch.std: the unbiased estimate (a batch of one gives 0, not NaN, here).
        std = tf.sqrt(tf.reduce_sum(tf.square(norms - mean)) / tf.maximum(batch - 1.0, 1.0))
        moving_mean, moving_std = self._moving_statistics()
        alpha = self.adaface_t_alpha
        new_mean = alpha * mean + (1.0 - alpha) * tf.cast(moving_mean, dtype)
        new_std = alpha * std + (1.0 - alpha) * tf.cast(moving_std, dtype)
        if training:
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS,
                                 moving_mean.assign(tf.cast(new_mean, tf.float32)))
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS,
                                 moving_std.assign(tf.cast(new_std, tf.float32)))
        scaler = tf.clip_by_value(
            (norms - new_mean) / (new_std + self.eps) * self.adaface_h, -1.0, 1.0)
        g_angular = (-self.margin * scaler)[:, tf.newaxis]
        g_additive = (self.margin + self.margin * scaler)[:, tf.newaxis]
        theta = tf.acos(cos)
        target_theta = tf.clip_by_value(theta + g_angular, self.eps, math.pi - self.eps)
        target = heads._target_mask(cos, labels)  # noqa: SLF001
        # Off the label the authors' cos(clip(acos(cos))) is cos itself (acos(cos) lies within
        # the clip after the clamp above).
        return self.scale * tf.where(target, tf.cos(target_theta) - g_additive, cos)


class MagFaceHead(_NormAwareHead):
    """MagFace: an ArcFace margin that grows with the feature norm, and a regulariser on it.

    With a = clip(‖z‖, l_a, u_a): m(a) = (u_m - l_m) / (u_a - l_a) (a - l_a) + l_m, the target
    logit s cos(θ + m(a)) where cos θ > 0 and s cos θ elsewhere (MagLinear's default
    ``easy_margin=True``), and the loss CE + λ_g g(a), g(a) = a / u_a² + 1 / a (per example:
    its batch mean is the authors' ``loss_id + lambda_g * loss_g``). The margin's gradient
    reaches the norm, as in the authors' code; outside [l_a, u_a] the clip stops it.

    The norm is then a quality score (MagFace's point): easy, frontal faces get large norms.
    Partial FC: the authors' code scores every class (``parallel_maglinear`` splits them over
    GPUs, no sampling); here ``partial_fc_rate < 1`` samples the negatives as for ArcFace:
    margin and g depend on the example only, so the formula is the same on the sampled columns.
    """

    name = "magface"
    hyperparameters = ("scale",)
    options = (
        heads.HeadOption("magface_lower_norm", 10.0, heads.number(0.0, low_inclusive=False),
                         "l_a, lower bound of the feature norm"),
        heads.HeadOption("magface_upper_norm", 110.0, heads.number(0.0, low_inclusive=False),
                         "u_a, upper bound of the feature norm"),
        heads.HeadOption("magface_lower_margin", 0.45, heads.number(0.0, math.pi),
                         "l_m, margin at the lower norm"),
        heads.HeadOption("magface_upper_margin", 0.8, heads.number(0.0, math.pi),
                         "u_m, margin at the upper norm"),
        heads.HeadOption("magface_lambda_g", 35.0, heads.number(0.0),
                         "weight of the norm regulariser g"),
    )

    def _validate(self):
        # No fixed margin: it runs from l_m to u_m with the norm. Like every head with a
        # hyperparameter it does not use, MagFace ignores ``margin`` (a recipe's --margin).
        self.margin = None
        if not self.magface_lower_norm < self.magface_upper_norm:
            raise ValueError(f"magface_lower_norm={self.magface_lower_norm} must be below "
                             f"magface_upper_norm={self.magface_upper_norm}")
        if not self.magface_lower_margin <= self.magface_upper_margin:
            raise ValueError(f"magface_lower_margin={self.magface_lower_margin} must not exceed "
                             f"magface_upper_margin={self.magface_upper_margin}")
        # The authors' trainer warns below this λ_g: g must outweigh the margin's pull for the
        # norm to have a unique optimum (their Theorem; 22.6 at the defaults).
        if isinstance(self.scale, float):
            low, high = self.magface_lower_norm, self.magface_upper_norm
            slope = (self.magface_upper_margin - self.magface_lower_margin) / (high - low)
            least = self.scale * slope * high ** 2 * low ** 2 / (high ** 2 - low ** 2)
            if self.magface_lambda_g < least:
                logging.warning("magface: lambda_g=%g is below %g, the least for which the "
                                "norm has a unique optimum (MagFace, Theorem 1)",
                                self.magface_lambda_g, least)

    def _clipped(self, norms):
        return tf.clip_by_value(norms, self.magface_lower_norm, self.magface_upper_norm)

    def margin_logits(self, cos, labels):
        return self.magnitude_logits(cos, labels, self._norms)

    def magnitude_logits(self, cos, labels, norms):
        """[B, C] logits of [B, C] cosines, [B] labels and [B] feature norms."""
        cos = tf.clip_by_value(_real(cos), -1.0, 1.0)
        low, high = self.magface_lower_norm, self.magface_upper_norm
        margin = ((self.magface_upper_margin - self.magface_lower_margin) / (high - low)
                  * (self._clipped(tf.cast(norms, cos.dtype)) - low)
                  + self.magface_lower_margin)[:, tf.newaxis]
        # The floor keeps sqrt's gradient finite where |cos| rounds to 1.
        sin = tf.sqrt(tf.maximum(1.0 - tf.square(cos), 1e-12))
        cos_theta_m = cos * tf.cos(margin) - sin * tf.sin(margin)
        target_logit = tf.where(cos > 0.0, cos_theta_m, cos)
        target = heads._target_mask(cos, labels)  # noqa: SLF001
        return self.scale * tf.where(target, target_logit, cos)

    def regulariser(self, norms):
        """[B] λ_g g(a) of [B] feature norms."""
        norms = self._clipped(_real(norms))
        return self.magface_lambda_g * (norms / self.magface_upper_norm ** 2 + 1.0 / norms)

    def _add_regulariser(self, output):
        return output._replace(per_example_loss=output.per_example_loss
                               + self.regulariser(self._norms))


class SubCenterArcFaceHead(heads._ProxyHead):  # noqa: SLF001
    """Sub-center ArcFace: K proxies per class, the class's cosine is the nearest one's.

    Noisy samples of a class gather on non-dominant sub-centres instead of pulling the dominant
    one, which makes the head robust to label noise. The logits are insightface's
    ``get_symbol_arcface`` with ``loss_K`` sub-centres: the proxies are the rows c K + k of a
    [C K, D] matrix (insightface's ``fc7`` weight), the cosines [B, C K] are reshaped to
    [B, C, K] and maxed over K, and the target logit is s cos(arccos(cos) + m), without the
    plain ArcFace head's fallback past θ = π - m (the reference has none).

    Stored [D, C K] ``proxies`` (column c K + k), or under Partial FC ``class_proxies`` [C K, D]
    whose K rows of each sampled class are gathered (a sparse update, as for the other heads).

    ``subcenter_drop_step`` N > 0: insightface drops non-dominant sub-centres in a second run
    (``drop.py``: the dominant sub-centre of a class is the one most of its images are nearest
    to; images farther than 75° from it are dropped; the network is retrained with K = 1). Here,
    in one run: until step N each training example counts for its nearest sub-centre (a
    non-trainable [C, K] ``head/subcenter_counts``, ``VariableAggregation.SUM`` across replicas);
    from step N a class's cosine is its dominant sub-centre's, and an example farther than
    ``subcenter_drop_angle`` from its class's dominant sub-centre contributes no loss.
    """

    name = "subcenter_arcface"
    default_margin = 0.5
    hyperparameters = ("margin", "scale")
    options = (
        heads.HeadOption("subcenters", 3, heads.integer(1), "sub-centres K per class"),
        heads.HeadOption("subcenter_drop_step", 0, heads.integer(0),
                         "from this step, each class keeps its dominant sub-centre and examples "
                         "farther than --subcenter_drop_angle from it give no loss (0: never)"),
        heads.HeadOption("subcenter_drop_angle", 75.0,
                         heads.number(0.0, 180.0, low_inclusive=False), "drop angle in degrees"),
    )

    def _validate(self):
        self.margin = heads._number(self.margin, "margin", 0.0, math.pi)  # noqa: SLF001

    @property
    def proxy_variable(self):
        rows = self.num_classes * self.subcenters
        if self.partial_fc:
            return "class_proxies", [rows, self.embedding_size]
        return "proxies", [self.embedding_size, rows]

    def _subcenter_cosines(self, embeddings, labels, sample):
        """([B, n, K] cosines, classes or None, local labels, gathered rows or None) of the n
        scored classes; the rows are the [n K, D] proxies a Partial FC step gathered (their
        weight decay travels on ``HeadOutput.sampled_rows``)."""
        k = self.subcenters
        if not self.partial_fc:
            return (tf.reshape(circle_loss.cosine_similarity(embeddings, self.proxies()),
                               [-1, self.num_classes, k]), None, labels, None)
        if not sample:
            shards = circle_loss._proxy_shards(self.proxies())  # noqa: SLF001
            cos = heads._class_major_cosine(embeddings, shards)  # noqa: SLF001
            return tf.reshape(cos, [-1, self.num_classes, k]), None, labels, None
        classes, local = self.sample_classes(labels)
        rows = tf.reshape(classes[:, tf.newaxis] * k + tf.range(k)[tf.newaxis, :], [-1])
        gathered = tf.nn.embedding_lookup(self.proxies(), rows, partition_strategy="div")
        cos = heads._class_major_cosine(embeddings, [gathered])  # noqa: SLF001
        return tf.reshape(cos, [-1, self.num_sample, k]), classes, local, gathered

    def _dominant(self, sub_cos, labels, local, classes, sample):
        """Cosines [B, n] of the dominant sub-centres, and the [B] weights of the examples
        (0: dropped), both switched on at ``subcenter_drop_step``."""
        k = self.subcenters
        counts = tf.get_variable("subcenter_counts", [self.num_classes, k], tf.float32,
                                 initializer=tf.zeros_initializer(), trainable=False,
                                 aggregation=tf.VariableAggregation.SUM)
        # The Estimator creates the global step before model_fn; created here it would land
        # in scope head/.
        step = tf.train.get_global_step()
        if step is None:
            raise ValueError("subcenter_drop_step needs the global step: create it before the "
                             "head (tf.train.get_or_create_global_step(); the Estimator does)")
        # 0 before the drop, 1 from it on (a blend, not a scalar-condition where: TF 1.15's
        # where needs a condition of the values' shape).
        dropping = tf.cast(step >= self.subcenter_drop_step, tf.float32)
        # Static depth (Ascend): the scored classes, all of them or the Partial FC sample.
        label_column = tf.one_hot(local, tf.dimension_value(sub_cos.shape[1]), dtype=tf.float32)
        own = tf.reduce_sum(sub_cos * label_column[:, :, tf.newaxis], axis=1)  # [B, K]
        if sample:
            nearest = tf.argmax(own, axis=1, output_type=tf.int32)
            index = tf.stack([tf.cast(labels, tf.int32), nearest], axis=1)
            votes = tf.scatter_nd(index, tf.ones_like(nearest, tf.float32),
                                  [self.num_classes, k])
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS,
                                 counts.assign_add((1.0 - dropping) * votes))
        dominant = tf.argmax(counts, axis=1, output_type=tf.int32)  # [C]
        if classes is not None:
            dominant = tf.gather(dominant, classes)
        column = tf.one_hot(dominant, k, dtype=tf.float32)  # [n, K]
        dominant_cos = tf.reduce_sum(sub_cos * column[tf.newaxis], axis=2)
        own_dominant = tf.reduce_sum(own * tf.gather(column, local), axis=1)
        near = tf.cast(own_dominant > math.cos(math.radians(self.subcenter_drop_angle)),
                       tf.float32)
        return dominant_cos, dropping, 1.0 - dropping * (1.0 - near)

    def _class_terms(self, embeddings, labels, sample):
        sub_cos, classes, local, gathered = self._subcenter_cosines(embeddings, labels, sample)
        cos = tf.reduce_max(sub_cos, axis=2)
        weight = None
        if self.subcenter_drop_step:
            dominant_cos, dropping, weight = self._dominant(sub_cos, labels, local, classes,
                                                            sample)
            cos = dropping * dominant_cos + (1.0 - dropping) * cos
        logits = self.margin_logits(cos, local)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=local, logits=logits)
        if weight is not None:
            loss *= weight
        positive = tf.reduce_sum(
            tf.where(heads._target_mask(cos, local), cos, tf.zeros_like(cos)), axis=1)  # noqa: SLF001
        columns = self.num_sample if classes is not None else self.num_classes
        negative = (tf.reduce_sum(cos, axis=1) - positive) / float(columns - 1)
        return heads.HeadOutput(loss, positive, negative, logits, cos, classes, gathered)

    def margin_logits(self, cos, labels):
        cos = _real(cos)
        # cos(arccos(c) + m) = c cos m - sin(arccos c) sin m; the floor keeps sqrt's gradient
        # finite where |c| rounds to 1 (arccos's is infinite there).
        sin = tf.sqrt(tf.maximum(1.0 - tf.square(cos), 1e-12))
        margin = tf.cast(self.margin, cos.dtype)
        target_logit = cos * tf.cos(margin) - sin * tf.sin(margin)
        return self.scale * tf.where(heads._target_mask(cos, labels), target_logit, cos)  # noqa: SLF001


MARGIN_HEADS = (AdaFaceHead, SubCenterArcFaceHead, MagFaceHead)

# Registered here as well as by ``model.heads`` (which imports this module at its end), so that
# either import order leaves all heads in ``heads.HEADS``.
for _cls in MARGIN_HEADS:
    heads.HEADS[_cls.name] = _cls
