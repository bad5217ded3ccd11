"""Fake ``NPULossScaleOptimizer``: loss scaling around another optimizer, as on Ascend.

The loss is multiplied by the manager's scale before the gradients are taken and the gradients
are divided by it afterwards; the update is applied only when every gradient is finite (the
real class reads the NPU's float-status register; on the CPU ``is_finite`` says the same), and
the manager moves its scale either way. Every call is appended to ``CALLS``.
"""

import tensorflow.compat.v1 as tf

CALLS = []


class NPULossScaleOptimizer(tf.train.Optimizer):
    """``NPULossScaleOptimizer(opt, loss_scale_manager, is_distributed=False)``."""

    def __init__(self, opt, loss_scale_manager, is_distributed=False):
        super().__init__(
            use_locking=False, name=f"NPULossScaleOptimizer{type(opt).__name__}")
        self._opt = opt
        self._loss_scale_manager = loss_scale_manager
        self._is_distributed = is_distributed
        CALLS.append(("__init__", self))

    def compute_gradients(self, loss, var_list=None, gate_gradients=tf.train.Optimizer.GATE_OP,
                          aggregation_method=None, colocate_gradients_with_ops=False,
                          grad_loss=None):
        CALLS.append(("compute_gradients", self))
        loss_scale = self._loss_scale_manager.get_loss_scale()
        if callable(loss):
            loss = loss()
        scaled_loss = loss * tf.cast(loss_scale, loss.dtype.base_dtype)
        grads_and_vars = self._opt.compute_gradients(
            scaled_loss, var_list=var_list, gate_gradients=gate_gradients,
            aggregation_method=aggregation_method,
            colocate_gradients_with_ops=colocate_gradients_with_ops, grad_loss=grad_loss)
        inverse = tf.math.reciprocal(tf.cast(loss_scale, tf.float32))
        return [(None if g is None else g * tf.cast(inverse, g.dtype.base_dtype), v)
                for g, v in grads_and_vars]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        CALLS.append(("apply_gradients", self))
        grads_and_vars = list(grads_and_vars)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                                for g, _ in grads_and_vars if g is not None])

        def apply():
            with tf.control_dependencies([self._opt.apply_gradients(
                    grads_and_vars, global_step=global_step, name=name)]):
                return tf.constant(True)

        # As on the device: an overflowing step changes no variable, not even the global step.
        applied = tf.cond(finite, apply, lambda: tf.constant(False))
        return tf.group(applied, self._loss_scale_manager.update_loss_scale(finite))

    def get_slot(self, *args, **kwargs):
        return self._opt.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._opt.get_slot_names(*args, **kwargs)

    def variables(self, *args, **kwargs):
        return self._opt.variables(*args, **kwargs)
