"""Circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization",
CVPR 2020, arXiv 2002.10857), class level (one proxy per identity) and pair level (in-batch).

With cosine similarities ``s``, margin ``m`` and scale ``gamma``, the paper sets the optima
O_p = 1 + m, O_n = -m and the margins Δp = 1 - m, Δn = m, and weights every similarity by how far
it is from its optimum::

    a_p = relu(O_p - s_p)    a_n = relu(s_n - O_n)     (gradients stopped: eq. 5 and 6)

The loss (eq. 4) is ``log(1 + sum_j exp(gamma a_n^j (s_n^j - Δn)) * sum_i exp(-gamma a_p^i (s_p^i
- Δp)))``. With one positive (the identity's proxy) this is exactly softmax cross-entropy over the
"circle logits" gamma a_p (s_p - Δp) for the true class and gamma a_n (s_n - Δn) for the others.

Everything is computed in float32 with logsumexp / softplus: at gamma = 256 a logit reaches
~1.4e3 and ``exp`` of it overflows even float64, so nothing here exponentiates a raw logit.
Inputs in bfloat16 / float16 (mixed precision) are cast to float32 before normalisation, which
also keeps the sum of squares of large half-precision activations from overflowing.
"""

import numbers

import tensorflow.compat.v1 as tf

__all__ = [
    "circle_logits",
    "class_level_circle_loss",
    "cosine_similarity",
    "l2_normalize",
    "pair_level_circle_loss",
    "pairwise_masks",
    "shifted_circle_logits",
]

# Stands in for "minus infinity" in masked logsumexp rows. Finite, so an all-masked row gives a
# finite (ignored) value and finite gradients; far below any real logit (|logit| < 3 * 512 * 2.25).
_MASKED_LOGIT = -1e9


def _check_hyperparameters(margin, gamma):
    """Validates python-number hyperparameters; tensors (e.g. a gamma warm-up) pass through."""
    if isinstance(margin, numbers.Number) and not 0.0 <= margin < 1.0:
        raise ValueError(f"circle loss margin must be in [0, 1), got {margin!r}")
    if isinstance(gamma, numbers.Number) and not gamma > 0:
        raise ValueError(f"circle loss gamma must be > 0, got {gamma!r}")
    return (tf.cast(margin, tf.float32), tf.cast(gamma, tf.float32))


def _as_float32_matrix(x, what):
    x = tf.convert_to_tensor(x)
    if x.shape.ndims is not None and x.shape.ndims != 2:
        raise ValueError(f"{what} must be a rank-2 tensor, got shape {x.shape}")
    if not x.dtype.is_floating:
        raise TypeError(f"{what} must be floating point, got {x.dtype.name}")
    return tf.cast(x, tf.float32)


def _as_labels(labels):
    labels = tf.convert_to_tensor(labels)
    if labels.shape.ndims is not None and labels.shape.ndims != 1:
        raise ValueError(f"labels must be a rank-1 tensor [batch], got shape {labels.shape}")
    if not labels.dtype.is_integer:
        raise TypeError(f"labels must be integers, got {labels.dtype.name}")
    return labels


def _proxy_shards(proxies):
    """The proxy matrix as a list of [D, C_i] column blocks.

    A partitioned proxy matrix (``tf.get_variable(..., partitioner=...)`` returns a
    ``PartitionedVariable``, which TF does not export publicly, hence the name check) or a python
    list of blocks is kept in blocks, so each block's matmul can run where its shard lives.
    """
    if isinstance(proxies, (list, tuple)):
        shards = list(proxies)
    elif type(proxies).__name__ == "PartitionedVariable":
        shards = list(proxies)
    else:
        shards = [proxies]
    if not shards:
        raise ValueError("proxies: got an empty list of shards")
    return shards


def l2_normalize(x, axis):
    """Casts ``x`` to float32 and L2-normalises it along ``axis`` (zero vectors stay zero)."""
    return tf.nn.l2_normalize(tf.cast(x, tf.float32), axis=axis, epsilon=1e-12)


def _check_sizes(embeddings, block):
    """ValueError unless a [B, D] embedding batch and a [D, C_i] proxy block agree on D."""
    d_emb = tf.dimension_value(embeddings.shape[1]) if embeddings.shape.ndims else None
    d_proxy = tf.dimension_value(block.shape[0]) if block.shape.ndims else None
    if d_emb is not None and d_proxy is not None and d_emb != d_proxy:
        raise ValueError(
            f"embeddings have {d_emb} dimensions but proxies are [{d_proxy}, num_classes]; "
            "proxies must be [embedding_size, num_classes]"
        )


def cosine_similarity(embeddings, proxies, scale=None):
    """Cosine similarity of every embedding with every proxy.

    Args:
      embeddings: [B, D] float tensor (any float dtype; cast to float32).
      proxies: [D, C] float tensor or variable, one column per class; or a list /
        ``PartitionedVariable`` of [D, C_i] blocks along axis 1 (columns are normalised one by
        one, so normalising block by block is exact).
      scale: None, or a factor applied to the normalised embeddings before the matmul, which
        then returns ``scale * cos`` for B x D multiplies instead of B x C.

    Returns:
      [B, C] float32 tensor of cosines (times ``scale``).
    """
    embeddings = _as_float32_matrix(embeddings, "embeddings")
    normalized = tf.nn.l2_normalize(embeddings, axis=1, epsilon=1e-12)
    if scale is not None:
        normalized *= tf.cast(scale, tf.float32)
    blocks = []
    for i, shard in enumerate(_proxy_shards(proxies)):
        block = _as_float32_matrix(shard, "proxies" if i == 0 else f"proxy shard {i}")
        _check_sizes(embeddings, block)
        blocks.append(tf.matmul(normalized, tf.nn.l2_normalize(block, axis=0, epsilon=1e-12)))
    return blocks[0] if len(blocks) == 1 else tf.concat(blocks, axis=1)


def _label_entries_setter(target, shape):
    """A function ``(matrix, values) -> matrix`` with entry ``target[b]`` set to ``values[b]``.

    Where the static [B, C] size fits int32 this is ``InplaceUpdate`` on the flattened matrix,
    which writes into the matrix's own buffer; ``tensor_scatter_nd_update`` copies the whole
    matrix first (a pass over [B, C] to change B entries; measured 2.8 ms of CPU at [64, 100k]
    against 0 in place). Only for a fresh matrix that no other op reads, as here: the
    element-wise result that the update consumes (see the gradients' control dependencies).
    """
    rows, columns = (tf.dimension_value(d) for d in shape)
    if rows is None or columns is None or rows * columns >= 2 ** 31:
        return lambda matrix, values: tf.tensor_scatter_nd_update(matrix, target, values)
    flat = target[:, 0] * columns + target[:, 1]

    def set_entries(matrix, values):
        updated = tf.raw_ops.InplaceUpdate(x=tf.reshape(matrix, [-1]), i=flat, v=values)
        return tf.reshape(updated, [rows, columns])

    return set_entries


def circle_logits(cos, labels, margin=0.25, gamma=256.0):
    """Class-level circle logits: softmax cross-entropy over them is the class-level loss.

    Args:
      cos: [B, C] cosine similarities (float32).
      labels: [B] int class indices.
      margin: relaxation m (python float or scalar tensor).
      gamma: scale (python float or scalar tensor, e.g. a warm-up schedule).

    Returns:
      [B, C] float32: gamma * a_p * (s_p - (1 - m)) at the label, gamma * a_n * (s_n - m) elsewhere,
      with a_p = relu(1 + m - s_p), a_n = relu(s_n + m) as constants (stopped gradients).
    """
    margin, gamma = _check_hyperparameters(margin, gamma)
    cos = _as_float32_matrix(cos, "cos")
    labels = _as_labels(labels)
    target = tf.stack([tf.range(tf.shape(cos)[0]), tf.cast(labels, tf.int32)], axis=1)
    return _circle_logits_at(cos, target, margin, gamma)


def _circle_logits_at(cos, target, margin, gamma):
    """:func:`circle_logits` given the [B, 2] (row, label) ``target`` entries.

    The negative form over the whole [B, C] matrix, then the B target entries overwritten with
    the positive form: the same logits as a where() over two full-width branches, without
    computing and differentiating a positive branch over C classes (1.08x -> 1.04x the softmax
    head's step time at 100k identities, benchmarks/head_cost.py).

    The gradient is written out rather than derived: with the weights a_p, a_n held constant it
    is ``dy * gamma * a_n`` everywhere but at the targets, ``dy * gamma * a_p`` there. Derived,
    it costs four more passes over [B, C]: the scatter's gradient copies ``dy`` to zero the
    targets, the gather of s_p scatters its gradient into a dense zero [B, C], and the two are
    added; here it is one multiply and an in-place update of B entries.
    """

    @tf.custom_gradient
    def logits(cos):
        weight_n = gamma * tf.nn.relu(cos + margin)  # gamma * a_n, a constant of the gradient
        s_p = tf.gather_nd(cos, target)
        weight_p = gamma * tf.nn.relu(1.0 + margin - s_p)  # gamma * a_p
        set_entries = _label_entries_setter(target, cos.shape)
        value = set_entries(weight_n * (cos - margin), weight_p * (s_p - (1.0 - margin)))

        def gradient(dy):
            # After the forward value: were dy all ones, grappler would make the product an
            # alias of weight_n, which the in-place update then writes into.
            with tf.control_dependencies([value]):
                return set_entries(dy * weight_n, tf.gather_nd(dy, target) * weight_p)

        return value, gradient

    return logits(cos)


def shifted_circle_logits(embeddings, labels, proxies, margin=0.25, gamma=256.0,
                          class_major=False):
    """Class-level circle logits plus ``gamma m²``, straight from the embeddings and one proxy
    block: the cosine matrix is never written, only the logits are.

    Softmax cross-entropy does not change when a row's logits all move by one constant, so the
    loss over these logits is the class-level loss. The shift buys the fewest passes over the
    [B, C] matrix. With ``r = relu(s + m)``, a negative's logit ``gamma r (s - m)`` is
    ``gamma r (r - 2m)`` (both are 0 where ``s <= -m``), i.e. ``gamma (r - m)² - gamma m²``. The
    embeddings are scaled by ``sqrt(gamma)`` before the matmul (B x D multiplies), and the
    matmul adds ``sqrt(gamma) m`` and applies the relu in its own output loop (grappler fuses
    MatMul + BiasAdd + Relu into one CPU kernel), so it returns ``sqrt(gamma) r``; one
    ``squared_difference`` then gives the shifted logits, and ``sqrt(gamma) r`` is also the
    gradient of a negative's logit with respect to the scaled cosine (``gamma a_n`` per cosine,
    ``a_n`` held constant). The B positives come from gathering each label's proxy (B x D).

    The gradient is written out, matmuls included: ``dy · sqrt(gamma) r``, ``dy · sqrt(gamma)
    a_p`` at the B labels, through the scaled matmul to both inputs: one multiply over [B, C]
    where :func:`circle_logits` on a cosine matrix costs five passes forward and two backward.

    Args:
      embeddings: [B, D] float; L2-normalised inside.
      labels: [B] int class indices.
      proxies: one proxy block, [D, C] (``class_major`` False) or [C, D]; L2-normalised inside.
      margin, gamma: as :func:`circle_logits`.
      class_major: whether ``proxies`` is [C, D] (one row per class, as Partial FC keeps it).

    Returns:
      (logits + gamma m² [B, C] float32, the cosine of each example with its label's proxy [B],
      gamma m² as a float32 scalar).
    """
    margin, gamma = _check_hyperparameters(margin, gamma)
    labels = tf.cast(_as_labels(labels), tf.int32)
    embeddings = _as_float32_matrix(embeddings, "embeddings")
    proxies = _as_float32_matrix(proxies, "proxies")
    if not class_major:
        _check_sizes(embeddings, proxies)
    normalized = l2_normalize(embeddings, axis=1)
    proxies = l2_normalize(proxies, axis=1 if class_major else 0)
    shift = gamma * tf.square(margin)
    target = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)
    root = tf.sqrt(gamma)

    def own_cosine(normalized, proxies):
        """[B]: each example's cosine with its label's proxy (B x D work)."""
        own = tf.gather(proxies, labels) if class_major else tf.transpose(
            tf.gather(proxies, labels, axis=1))
        return tf.reduce_sum(normalized * own, axis=1)

    # Everything the logits depend on is computed from the function's arguments: a tensor
    # captured from outside that reads a variable would have custom_gradient ask for its
    # gradient too.
    @tf.custom_gradient
    def logits(normalized, proxies):
        s_p = own_cosine(normalized, proxies)
        weight_p = gamma * tf.nn.relu(1.0 + margin - s_p)  # gamma * a_p
        scaled = normalized * root
        relu_scaled = tf.nn.relu(tf.nn.bias_add(  # sqrt(gamma) r
            tf.matmul(scaled, proxies, transpose_b=class_major),
            tf.fill([tf.shape(proxies)[0 if class_major else 1]], root * margin)))
        set_entries = _label_entries_setter(target, relu_scaled.shape)
        value = set_entries(tf.math.squared_difference(relu_scaled, root * margin),
                            weight_p * (s_p - (1.0 - margin)) + shift)

        def gradient(dy):
            # With respect to the scaled cosines sqrt(gamma) s: gamma a / sqrt(gamma).
            with tf.control_dependencies([value]):  # as in _circle_logits_at
                d_scaled_cos = set_entries(dy * relu_scaled,
                                           tf.gather_nd(dy, target) * (weight_p / root))
            if class_major:
                d_proxies = tf.matmul(d_scaled_cos, scaled, transpose_a=True)
                d_scaled = tf.matmul(d_scaled_cos, proxies)
            else:
                d_proxies = tf.matmul(scaled, d_scaled_cos, transpose_a=True)
                d_scaled = tf.matmul(d_scaled_cos, proxies, transpose_b=True)
            return d_scaled * root, d_proxies

        return value, gradient

    return logits(normalized, proxies), own_cosine(normalized, proxies), shift


def class_level_circle_loss(embeddings, labels, proxies, margin=0.25, gamma=256.0):
    """Class-level circle loss per example.

    Args:
      embeddings: [B, D] float (float32, bfloat16 or float16); L2-normalised inside.
      labels: [B] int class indices in [0, C).
      proxies: [D, C] class proxies (one column per identity), or a list / PartitionedVariable
        of [D, C_i] blocks along axis 1; L2-normalised inside.
      margin: relaxation m; O_p = 1 + m, O_n = -m, Δp = 1 - m, Δn = m.
      gamma: scale.

    Returns:
      [B] float32 per-example loss.
    """
    shards = _proxy_shards(proxies)
    if len(shards) == 1:
        logits = shifted_circle_logits(embeddings, labels, shards[0], margin, gamma)[0]
    else:
        logits = circle_logits(cosine_similarity(embeddings, proxies), labels, margin, gamma)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=_as_labels(labels), logits=logits)


def pairwise_masks(labels):
    """Positive / negative pair masks of a batch.

    Returns:
      (positive, negative): [B, B] bool; positive[i, j] when j != i has the same label as i,
      negative[i, j] when the labels differ.
    """
    labels = _as_labels(labels)
    same = tf.equal(labels[:, tf.newaxis], labels[tf.newaxis, :])
    not_self = tf.logical_not(tf.cast(tf.eye(tf.shape(labels)[0]), tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def _masked_logsumexp(logits, mask):
    """Row-wise logsumexp over the entries where ``mask`` holds.

    Masked entries are replaced (not added to) by a finite very negative constant, so the
    gradient reaching them is exactly zero and an all-masked row stays finite.
    """
    masked = tf.where(mask, logits, tf.fill(tf.shape(logits), _MASKED_LOGIT))
    return tf.math.reduce_logsumexp(masked, axis=1)


def pair_level_circle_loss(embeddings, labels, margin=0.25, gamma=256.0):
    """Pair-level (in-batch) circle loss per anchor.

    Every batch element is an anchor; its positives are the other elements with its label and its
    negatives the elements with another label. Needs P x K batches (P identities, K >= 2 images).

    Args:
      embeddings: [B, D] float (float32, bfloat16 or float16); L2-normalised inside.
      labels: [B] int identities.
      margin: relaxation m.
      gamma: scale.

    Returns:
      [B] float32: softplus(logsumexp_j gamma a_n^j (s_n^j - Δn) + logsumexp_i -gamma a_p^i
      (s_p^i - Δp)); exactly 0 (with zero gradient) for an anchor without a positive or without a
      negative in the batch.
    """
    margin, gamma = _check_hyperparameters(margin, gamma)
    normalized = l2_normalize(_as_float32_matrix(embeddings, "embeddings"), axis=1)
    labels = _as_labels(labels)
    sim = tf.matmul(normalized, normalized, transpose_b=True)
    positive_mask, negative_mask = pairwise_masks(labels)
    alpha_p = tf.stop_gradient(tf.nn.relu(1.0 + margin - sim))
    alpha_n = tf.stop_gradient(tf.nn.relu(sim + margin))
    positive_term = _masked_logsumexp(-gamma * alpha_p * (sim - (1.0 - margin)), positive_mask)
    negative_term = _masked_logsumexp(gamma * alpha_n * (sim - margin), negative_mask)
    valid = tf.logical_and(
        tf.reduce_any(positive_mask, axis=1), tf.reduce_any(negative_mask, axis=1)
    )
    # Exactly 0 whatever _MASKED_LOGIT is; both branches are finite, so the unselected one's
    # zero gradient cannot turn into NaN (0 * inf).
    loss = tf.nn.softplus(positive_term + negative_term)
    return tf.where(valid, loss, tf.zeros_like(loss))
