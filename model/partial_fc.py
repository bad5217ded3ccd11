"""Partial FC's class sampling (An et al., CVPR 2022; see :mod:`model.heads`): which proxies a
training step uses."""

import tensorflow.compat.v1 as tf

__all__ = ["sample_classes"]


def sample_classes(labels, num_classes, num_sample, rate):
    """Partial FC's class sample of one step.

    Every class of ``labels`` and ``num_sample - #classes in the batch`` others drawn
    uniformly without replacement: the first of a random permutation of the classes that
    are not in the batch. O(C) work, no sort and no top_k over the classes.

    Args:
      labels: [B] int class ids.
      num_classes, num_sample: python ints, C and the classes kept per step.
      rate: the ``partial_fc_rate`` that gave ``num_sample``, for the error message.

    Returns:
      (classes, local_labels): [num_sample] int32 increasing class ids, and [B] int32 the
      position of each label in ``classes``.
    """
    labels = tf.cast(labels, tf.int32)
    batch = tf.dimension_value(labels.shape[0])
    # A sample of every class holds any batch.
    fits = num_sample == num_classes
    if batch is not None and batch > num_sample and not fits:
        raise ValueError(
            f"partial_fc_rate={rate} keeps {num_sample} of "
            f"{num_classes} classes per step, fewer than the {batch} examples of the "
            "batch, which may all be different classes: raise partial_fc_rate or lower "
            "the batch size")
    in_batch = tf.scatter_nd(labels[:, tf.newaxis], tf.ones_like(labels),
                             [num_classes]) > 0
    num_positive = tf.reduce_sum(tf.cast(in_batch, tf.int32))
    checks = []
    if batch is None and not fits:
        checks.append(tf.debugging.assert_less_equal(
            num_positive, num_sample, message=f"Partial FC: more classes in the batch "
            f"than the {num_sample} sampled per step"))
    with tf.control_dependencies(checks):
        order = tf.random.shuffle(tf.range(num_classes))
    # Along the permutation: the negatives, counted; the first ones fill the sample.
    negative = tf.logical_not(tf.gather(in_batch, order))
    rank = tf.cumsum(tf.cast(negative, tf.int32))
    taken = tf.logical_and(negative, rank <= num_sample - num_positive)
    keep = tf.logical_or(in_batch, tf.gather(taken, tf.math.invert_permutation(order)))
    # where() lists the kept classes in increasing order; there are exactly num_sample.
    classes = tf.reshape(tf.cast(tf.where(keep), tf.int32), [num_sample])
    return classes, tf.searchsorted(classes, labels)
