"""The Ascend launch environment: HCCL training runs one process per NPU, described by the
``RANK_ID`` and ``RANK_SIZE`` environment variables rather than by ``TF_CONFIG``.

One parser for its readers: the worker shard of the input pipeline (``runtime.cluster``), the
estimator factory's distributed optimizer and the step count of a run (``training.params``). No
TensorFlow here.
"""

import os


def ascend_rank(environ=None):
    """``(rank_id, rank_size)`` of this process; unset or empty variables mean ``(0, 1)``."""
    env = os.environ if environ is None else environ
    return int(env.get("RANK_ID") or 0), int(env.get("RANK_SIZE") or 1)
