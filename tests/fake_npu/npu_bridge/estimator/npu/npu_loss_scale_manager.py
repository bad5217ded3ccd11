"""Fake loss-scale managers with the real constructors and the exponential update rule.

``ExponentialUpdateLossScaleManager`` keeps its state in non-trainable float32/int32 variables
(so it is checkpointed, as the real one is): the scale grows by ``incr_ratio`` after
``incr_every_n_steps`` consecutive finite steps and shrinks by ``decr_ratio`` (never below 1)
after ``decr_every_n_nan_or_inf`` non-finite ones, which need not be consecutive.
"""

import tensorflow.compat.v1 as tf

CREATED = []

FLOAT32_MAX = 3.4e38


class FixedLossScaleManager:
    """A constant loss scale."""

    def __init__(self, loss_scale, enable_overflow_check=True):
        if loss_scale < 1:
            raise ValueError("loss scale must be at least 1.")
        self._loss_scale = tf.convert_to_tensor(loss_scale, dtype=tf.float32, name="loss_scale")
        self._enable_overflow_check = enable_overflow_check
        CREATED.append(self)

    def get_enable_overflow_check(self):
        return self._enable_overflow_check

    def get_loss_scale(self):
        return self._loss_scale

    def update_loss_scale(self, finite_grads):
        del finite_grads
        return tf.no_op()


class ExponentialUpdateLossScaleManager:
    """Dynamic loss scale; the constructor's arguments are kept in ``self.arguments``."""

    def __init__(self, init_loss_scale, incr_every_n_steps, decr_every_n_nan_or_inf=2,
                 incr_ratio=2, decr_ratio=0.8):
        if init_loss_scale < 1:
            raise ValueError(f"init_loss_scale must be at least 1, got {init_loss_scale!r}")
        if incr_ratio <= 1 or not 0 < decr_ratio < 1:
            raise ValueError(f"need incr_ratio > 1 and 0 < decr_ratio < 1, got {incr_ratio!r} and "
                             f"{decr_ratio!r}")
        self.arguments = dict(init_loss_scale=init_loss_scale,
                              incr_every_n_steps=incr_every_n_steps,
                              decr_every_n_nan_or_inf=decr_every_n_nan_or_inf,
                              incr_ratio=incr_ratio, decr_ratio=decr_ratio)
        self._incr_every_n_steps = incr_every_n_steps
        self._decr_every_n_nan_or_inf = decr_every_n_nan_or_inf
        self._incr_ratio = float(incr_ratio)
        self._decr_ratio = float(decr_ratio)
        # Named as the real manager names them (tf.contrib's lineage): no scope of their own.
        self._loss_scale = tf.Variable(float(init_loss_scale), trainable=False,
                                       dtype=tf.float32, name="loss_scale")
        self._num_good_steps = tf.Variable(0, trainable=False, dtype=tf.int32,
                                           name="good_steps")
        self._num_bad_steps = tf.Variable(0, trainable=False, dtype=tf.int32, name="bad_steps")
        CREATED.append(self)

    def get_loss_scale(self):
        return self._loss_scale

    def update_loss_scale(self, finite_grads):
        """The op that moves the counters and the scale after a step."""
        scale = tf.convert_to_tensor(self._loss_scale)
        good = tf.where(finite_grads, tf.convert_to_tensor(self._num_good_steps) + 1, 0)
        bad = tf.where(finite_grads, tf.convert_to_tensor(self._num_bad_steps),
                       tf.convert_to_tensor(self._num_bad_steps) + 1)
        grow = tf.logical_and(good >= self._incr_every_n_steps,
                              scale < FLOAT32_MAX / self._incr_ratio)
        shrink = bad >= self._decr_every_n_nan_or_inf
        new_scale = tf.where(grow, scale * self._incr_ratio,
                             tf.where(shrink, tf.maximum(scale * self._decr_ratio, 1.0), scale))
        changed = tf.logical_or(grow, shrink)
        good = tf.where(changed, 0, good)
        bad = tf.where(changed, 0, bad)
        with tf.control_dependencies([new_scale, good, bad]):
            return tf.group(self._loss_scale.assign(new_scale),
                            self._num_good_steps.assign(good),
                            self._num_bad_steps.assign(bad), name="update_loss_scale")
