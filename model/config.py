"""Small typed, self-validating settings, one per concern: backbone, optimisation, runtime.

Each is a frozen namedtuple whose constructor checks its values and resolves defaults, so a
value that is wrong is refused where it enters (``training.params.build_params``, before anything
is written) and every later reader can trust it. The loss head needs no tuple of its own: a
built ``model.heads.Head`` is one (it validates in its constructor, resolves the head's default
margin and scale, and ``head.config`` lists what it runs with); ``model_fn_builder`` receives it
built, the way insightface hands its margin loss to Partial FC.

A new hyperparameter touches its flag, its field here and the line that uses it.
"""

import collections
import json
import math
import numbers

from model import backbones, optimization

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("cpu", "gpu", "npu")
NPU_PRECISION_MODES = ("allow_mix_precision", "allow_fp32_to_fp16", "force_fp16",
                       "must_keep_origin_dtype")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
# The TF_CONFIG task types of a --distribution=multi_worker cluster (no ps: that is the
# estimator's parameter-server training, which TF_CONFIG alone selects).
MULTI_WORKER_TASKS = ("chief", "worker", "evaluator")


def _check(condition, message):
    if not condition:
        raise ValueError(message)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _one_of(value, choices, what):
    _check(value in choices, f"{what} must be one of {', '.join(choices)}, got {value!r}")


def check_distribution(distribution, device):
    """The device/distribution pairs that exist (mirrored and multi_worker are for GPUs and
    CPUs)."""
    _one_of(distribution, DISTRIBUTIONS, "distribution")
    _one_of(device, DEVICES, "device")
    _check(distribution == "none" or device != "npu", f"--distribution={distribution} is for "
           "GPUs and CPUs; Ascend devices train together through HCCL (RANK_ID, RANK_SIZE, "
           "RANK_TABLE_FILE)")


MultiWorkerTask = collections.namedtuple("MultiWorkerTask", ["num_workers", "task_type", "index",
                                                             "is_chief"])

_TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                      '"task": {"type": "worker", "index": 0}}\'')


def multi_worker_task(tf_config):
    """The ``MultiWorkerTask`` of a ``--distribution=multi_worker`` process, from the text of
    its TF_CONFIG; ValueError (one line, with an example) when it does not describe one.

    The cluster lists the training tasks: ``worker`` (and optionally one ``chief``, else worker
    0 is the chief); an ``evaluator`` task may run outside the cluster. ``num_workers`` counts
    the training tasks, all of which train in lockstep.
    """
    _check(bool(tf_config and tf_config.strip()), "--distribution=multi_worker needs TF_CONFIG "
           f"describing the worker cluster and this task, e.g. {_TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(tf_config)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {tf_config!r}") from None
    _check(isinstance(config, dict), f"TF_CONFIG must be a JSON object, got {tf_config!r}")
    cluster, task = config.get("cluster"), config.get("task")
    _check(isinstance(cluster, dict) and isinstance(task, dict), "TF_CONFIG needs \"cluster\" "
           f"and \"task\" objects for --distribution=multi_worker, e.g. {_TF_CONFIG_EXAMPLE}")
    unknown = sorted(set(cluster) - {"chief", "worker"})
    _check("ps" not in cluster, "TF_CONFIG has a \"ps\" job: that is parameter-server "
           "training, which TF_CONFIG alone selects; drop --distribution=multi_worker (or drop "
           "the ps for synchronous all-reduce)")
    _check(not unknown, f"--distribution=multi_worker: TF_CONFIG's cluster may list \"worker\" "
           f"(and one \"chief\") tasks only, not {', '.join(unknown)} (the evaluator runs "
           "outside the cluster)")
    for job in ("chief", "worker"):
        addresses = cluster.get(job, [])
        _check(isinstance(addresses, list) and all(
            isinstance(a, str) and a for a in addresses),
            f"TF_CONFIG cluster.{job} must be a list of \"host:port\" strings, got {addresses!r}")
    _check(len(cluster.get("chief", [])) <= 1, "TF_CONFIG lists more than one chief")
    num_workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    _check(bool(cluster.get("worker")), "--distribution=multi_worker needs a \"worker\" list in "
           f"TF_CONFIG's cluster, e.g. {_TF_CONFIG_EXAMPLE}")
    task_type, index = task.get("type"), task.get("index", 0)
    _one_of(task_type, MULTI_WORKER_TASKS, "TF_CONFIG task type")
    _check(_is_int(index) and index >= 0, f"TF_CONFIG task index must be a non-negative integer, "
           f"got {index!r}")
    if task_type == "evaluator":
        _check(index == 0, "there is one evaluator (TF_CONFIG task index 0)")
    else:
        size = len(cluster.get(task_type, []))
        _check(index < size, f"TF_CONFIG task {task_type} {index} is not in the cluster "
               f"({size} {task_type} task(s))")
    chief = ("chief", 0) if "chief" in cluster else ("worker", 0)
    return MultiWorkerTask(num_workers, task_type, index, (task_type, index) == chief)


class BackboneConfig(collections.namedtuple(
        "BackboneConfig", ["name", "embedding_size", "image_size", "dropout_rate",
                           "precision", "grayscale"])):
    """The network: registry name, embedding size, input side (default: the backbone's own),
    dropout before the embedding, the compute precision of the backbone (``bf16`` runs it
    in bfloat16; head, loss and proxies stay float32), and ``grayscale``: every input face is
    turned to gray inside the model (training, evaluation, every export), for models trained
    on grayscale faces, so that colour photos reach them as their training faces looked."""

    __slots__ = ()

    def __new__(cls, name, embedding_size=512, image_size=None, dropout_rate=0.0,
                precision="fp32", grayscale=False):
        backbones.get_backbone(name)  # ValueError listing the valid names
        image_size = backbones.default_image_size(name) if image_size is None else image_size
        backbones.check_image_size(name, image_size)
        _check(_is_int(embedding_size) and embedding_size > 0,
               f"embedding_size must be a positive integer, got {embedding_size!r}")
        _check(_is_number(dropout_rate) and 0.0 <= dropout_rate < 1.0,
               f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        _one_of(precision, PRECISIONS, "precision")
        _check(isinstance(grayscale, bool), f"grayscale must be true or false, got {grayscale!r}")
        return super().__new__(cls, name, int(embedding_size), int(image_size),
                               float(dropout_rate), precision, grayscale)


class OptimizationConfig(collections.namedtuple(
        "OptimizationConfig", ["optimizer", "learning_rate", "momentum", "weight_decay",
                               "total_steps", "warmup_steps", "schedule", "decay_boundaries",
                               "decay_factor"])):
    """Optimizer, learning-rate schedule (``model.optimization``) and weight decay."""

    __slots__ = ()

    def __new__(cls, optimizer="momentum", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
                total_steps=1000, warmup_steps=0, schedule="piecewise",
                decay_boundaries=(0.5, 0.7, 0.9), decay_factor=0.1):
        _one_of(optimizer, optimization.OPTIMIZERS, "optimizer")
        _one_of(schedule, optimization.SCHEDULES, "schedule")
        _check(_is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0,
               f"learning_rate must be positive, got {learning_rate!r}")
        _check(_is_number(momentum) and 0.0 <= momentum < 1.0,
               f"momentum must be in [0, 1), got {momentum!r}")
        _check(_is_number(weight_decay) and 0.0 <= weight_decay < 1.0,
               f"weight_decay must be in [0, 1), got {weight_decay!r}")
        _check(_is_int(total_steps) and total_steps > 0,
               f"the total of training steps must be positive, got {total_steps!r}")
        _check(_is_int(warmup_steps) and 0 <= warmup_steps < total_steps,
               f"warmup_steps must be in [0, total steps = {total_steps!r}), got {warmup_steps!r}")
        boundaries = tuple(float(b) for b in decay_boundaries)
        _check(all(0.0 < b < 1.0 for b in boundaries) and list(boundaries) == sorted(boundaries),
               "decay_boundaries must be increasing fractions in (0, 1), got "
               f"{list(decay_boundaries)}")
        _check(_is_number(decay_factor) and 0.0 < decay_factor <= 1.0,
               f"decay_factor must be in (0, 1], got {decay_factor!r}")
        return super().__new__(cls, optimizer, float(learning_rate), float(momentum),
                               float(weight_decay), int(total_steps), int(warmup_steps),
                               schedule, boundaries, float(decay_factor))


def evaluator_tf_config(tf_config):
    """The TF_CONFIG text the evaluator of a multi-worker cluster gives its RunConfig.

    The estimator's RunConfig refuses a cluster without a ``chief`` task (its parameter-server
    convention: "If "cluster" is set in TF_CONFIG, it must have one "chief" node"), and a
    workers-only cluster has none; worker 0 is the chief there, so it is listed as such. The
    evaluator never connects to the cluster (it reads checkpoints from model_dir), so only the
    validation sees the change.
    """
    config = json.loads(tf_config)
    cluster = dict(config["cluster"])
    if "chief" not in cluster:
        cluster["chief"], cluster["worker"] = cluster["worker"][:1], cluster["worker"][1:]
        if not cluster["worker"]:
            del cluster["worker"]
    return json.dumps({"cluster": cluster, "task": {"type": "evaluator", "index": 0}})


class RuntimeConfig(collections.namedtuple(
        "RuntimeConfig", ["device", "precision", "npu_precision_mode", "iterations_per_loop",
                          "distribution", "num_gpus", "num_cpu_devices", "num_workers",
                          "worker_timeout_secs", "num_replicas"])):
    """Where and how the graph runs: device, precision, Ascend loop size, data parallelism.

    The one place that knows which precision fits which device and which distribution fits
    which device; ``num_replicas`` is derived (``num_gpus > 1`` implies ``mirrored`` unless
    ``multi_worker`` is asked for; ``multi_worker`` has ``num_workers`` × the GPUs of a worker,
    or one CPU per worker). ``num_workers`` comes from TF_CONFIG (``multi_worker_task``);
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
