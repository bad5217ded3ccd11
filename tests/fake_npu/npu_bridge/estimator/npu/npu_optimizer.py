"""Fake ``NPUDistributedOptimizer``: HCCL all-reduce of the gradients around an optimizer.

One process stands in for every rank, so the all-reduce mean is the identity; the wrapping and
delegation are what the tests look at. Every call is appended to ``CALLS``.
"""

import tensorflow.compat.v1 as tf

CALLS = []


class NPUDistributedOptimizer(tf.train.Optimizer):
    """``NPUDistributedOptimizer(optimizer, is_weight_update_sharding=False, name=None)``."""

    def __init__(self, optimizer, is_weight_update_sharding=False, name=None):
        if name is None:
            name = f"Distributed{type(optimizer).__name__}"
        super().__init__(use_locking=False, name=name)
        self._optimizer = optimizer
        self._is_weight_update_sharding = is_weight_update_sharding
        CALLS.append(("__init__", self))

    def compute_gradients(self, *args, **kwargs):
        CALLS.append(("compute_gradients", self))
        grads_and_vars = self._optimizer.compute_gradients(*args, **kwargs)
        with tf.name_scope(self.get_name() + "_Allreduce"):
            return [(None if g is None else tf.identity(g), v) for g, v in grads_and_vars]

    def apply_gradients(self, *args, **kwargs):
        CALLS.append(("apply_gradients", self))
        return self._optimizer.apply_gradients(*args, **kwargs)

    def get_slot(self, *args, **kwargs):
        return self._optimizer.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._optimizer.get_slot_names(*args, **kwargs)

    def variables(self, *args, **kwargs):
        return self._optimizer.variables(*args, **kwargs)
