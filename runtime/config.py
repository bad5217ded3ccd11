"""Where and how the graph runs, as one typed, self-validating value: ``RuntimeConfig``.

The device, precision and distribution rules live here, once: which precision fits which device,
which distribution fits which device, how many replicas a run has. The precisions are the
network's (``model.config.PRECISIONS``: what the backbone can compute in); this module says which
device runs which. It asks TensorFlow nothing: the estimator factory checks what this machine
offers (``check_device``).
"""

import collections

from data_tools.checks import check as _check
from data_tools.checks import is_int as _is_int
from data_tools.checks import one_of as _one_of
from model.config import PRECISIONS

DEVICES = ("cpu", "gpu", "npu")
NPU_PRECISION_MODES = ("allow_mix_precision", "allow_fp32_to_fp16", "force_fp16",
                       "must_keep_origin_dtype")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")

__all__ = ["DEVICES", "DISTRIBUTIONS", "NPU_PRECISION_MODES", "PRECISIONS", "RuntimeConfig",
           "check_distribution"]


def check_distribution(distribution, device):
    """The device/distribution pairs that exist (mirrored and multi_worker are for GPUs and
    CPUs)."""
    _one_of(distribution, DISTRIBUTIONS, "distribution")
    _one_of(device, DEVICES, "device")
    _check(distribution == "none" or device != "npu", f"--distribution={distribution} is for "
           "GPUs and CPUs; Ascend devices train together through HCCL (RANK_ID, RANK_SIZE, "
           "RANK_TABLE_FILE)")


class RuntimeConfig(collections.namedtuple(
        "RuntimeConfig", ["device", "precision", "npu_precision_mode", "iterations_per_loop",
                          "distribution", "num_gpus", "num_cpu_devices", "num_workers",
                          "worker_timeout_secs", "num_replicas"])):
    """Where and how the graph runs: device, precision, Ascend loop size, data parallelism.

    The one place that knows which precision fits which device and which distribution fits
    which device; ``num_replicas`` is derived (``num_gpus > 1`` implies ``mirrored`` unless
    ``multi_worker`` is asked for; ``multi_worker`` has ``num_workers`` × the GPUs of a worker,
    or one CPU per worker). ``num_workers`` comes from TF_CONFIG
    (``runtime.cluster.multi_worker_task``);
    ``worker_timeout_secs`` bounds how long a multi-worker step waits for the others.
    """

    __slots__ = ()

    def __new__(cls, device="cpu", precision="fp32", npu_precision_mode="allow_mix_precision",
                iterations_per_loop=1, distribution="none", num_gpus=0, num_cpu_devices=1,
                num_workers=1, worker_timeout_secs=600):
        _one_of(device, DEVICES, "device")
        _one_of(precision, PRECISIONS, "precision")
        _one_of(npu_precision_mode, NPU_PRECISION_MODES, "npu_precision_mode")
        _one_of(distribution, DISTRIBUTIONS, "distribution")
        _check(precision != "bf16" or device == "cpu", "--precision=bf16 is for CPUs (use "
               "fp16 on GPU, --npu_precision_mode on Ascend)")
        _check(precision != "fp16" or device == "gpu", "--precision=fp16 is for GPUs (TensorFlow's "
               "float16 rewrite; use bf16 on CPU, --npu_precision_mode on Ascend)")
        _check(_is_int(iterations_per_loop) and iterations_per_loop >= 1,
               f"iterations_per_loop must be a positive integer, got {iterations_per_loop!r}")
        _check(_is_int(num_gpus) and num_gpus >= 0, "--num_gpus must not be negative")
        _check(_is_int(num_cpu_devices) and num_cpu_devices >= 1,
               "--num_cpu_devices must be at least 1")
        if num_gpus:
            _check(device == "gpu", f"--num_gpus={num_gpus} needs --device=gpu")
        _check(_is_int(num_workers) and num_workers >= 1, "num_workers must be at least 1")
        _check(_is_int(worker_timeout_secs) and worker_timeout_secs >= 0,
               "--worker_timeout_secs must not be negative (0: wait forever)")
        if num_gpus > 1 and distribution == "none":
            distribution = "mirrored"
        _check(num_workers == 1 or distribution == "multi_worker",
               f"{num_workers} workers need --distribution=multi_worker")
        if num_cpu_devices > 1:
            _check(device == "cpu", "--num_cpu_devices is for --device=cpu")
        num_replicas = 1
        check_distribution(distribution, device)
        if distribution == "mirrored":
            if device == "gpu":
                _check(num_gpus >= 1, "--distribution=mirrored --device=gpu needs --num_gpus=N")
                num_replicas = num_gpus
            else:
                _check(num_cpu_devices >= 2, "--distribution=mirrored --device=cpu needs "
                       "--num_cpu_devices=N >= 2")
                num_replicas = num_cpu_devices
        elif distribution == "multi_worker":
            # One replica per worker on CPU (the collective all-reduce spans processes, not
            # CPU devices); on GPU every worker mirrors over its own GPUs.
            _check(num_cpu_devices == 1, "--num_cpu_devices is for --distribution=mirrored; "
                   "a multi_worker CPU worker is one replica")
            num_replicas = num_workers * (num_gpus if device == "gpu" else 1)
            _check(num_replicas >= 1, "--distribution=multi_worker --device=gpu needs "
                   "--num_gpus=N (the GPUs of each worker)")
        return super().__new__(cls, device, precision, npu_precision_mode,
                               int(iterations_per_loop), distribution, int(num_gpus),
                               int(num_cpu_devices), int(num_workers), int(worker_timeout_secs),
                               num_replicas)
