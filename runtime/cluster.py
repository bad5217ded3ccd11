"""The cluster this process belongs to, read from its launch environment, and the part of the
training records it reads.

Two launchers describe a cluster: TensorFlow's ``TF_CONFIG`` (the estimator's parameter-server
training, ``--distribution=multi_worker``) and Ascend's ``RANK_ID`` / ``RANK_SIZE``
(``runtime.ascend``). Both are read here and nowhere else: the input pipeline is handed the
result, a ``WorkerShard``, so it reads what it is told instead of the environment (and a test or
a benchmark gives it any shard without faking a cluster). Light on purpose: no TensorFlow, no
network (a launcher may read its cluster before TensorFlow loads).
"""

import collections
import json
import os

from data_tools.checks import check as _check
from data_tools.checks import is_int as _is_int
from data_tools.checks import one_of as _one_of
from data_tools.input_config import WorkerShard
from runtime import ascend

# The TF_CONFIG task types of a --distribution=multi_worker cluster (no ps: that is the
# estimator's parameter-server training, which TF_CONFIG alone selects).
MULTI_WORKER_TASKS = ("chief", "worker", "evaluator")
# The task types that run the training input_fn, each reading its own share of the records.
_TRAINING_TASKS = ("chief", "master", "worker")

__all__ = ["MULTI_WORKER_TASKS", "MultiWorkerTask", "WorkerShard", "evaluator_tf_config",
           "multi_worker_task", "worker_shard"]


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


def worker_shard(tf_config=None, environ=None):
    """The ``WorkerShard`` (index, count) of the training records this process reads.

    A ``TF_CONFIG`` cluster with several training tasks (chief or master, and workers) numbers
    them as the estimator's ``RunConfig`` does (``num_worker_replicas``,
    ``global_id_in_cluster``): the chief first, then the other jobs by name, task by task; an
    evaluator or a ps reads no training records. Otherwise the Ascend rank (one process per NPU,
    ``RANK_ID`` of ``RANK_SIZE``), else the whole set. ``tf_config``: TF_CONFIG's text (None:
    the environment's); ``environ``: the environment (None: ``os.environ``). A distribution
    strategy that splits the input itself (``input_context``) still wins inside the input_fn.
    """
    env = os.environ if environ is None else environ
    text = env.get("TF_CONFIG") if tf_config is None else tf_config
    shard = _tf_config_shard(text) if text and text.strip() else None
    if shard is not None and shard.count > 1:
        return shard
    rank_id, rank_size = ascend.ascend_rank(env)
    if rank_size > 1:
        _check(0 <= rank_id < rank_size,
               f"RANK_ID={rank_id} is not a rank of RANK_SIZE={rank_size} (0 to {rank_size - 1})")
        return WorkerShard(rank_id, rank_size)
    return WorkerShard(0, 1)


def _tf_config_shard(text):
    """The shard of a TF_CONFIG task, or None when it describes no training cluster."""
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {text!r}") from None
    if not isinstance(config, dict):
        return None  # the estimator's RunConfig names what is wrong with it
    cluster, task = config.get("cluster"), config.get("task")
    if not (isinstance(cluster, dict) and cluster and isinstance(task, dict)
            and task.get("type") in _TRAINING_TASKS):
        return None
    chief = "master" if "master" in cluster else "chief"
    count = len(cluster.get("worker", [])) + len(cluster.get(chief, []))
    order = [chief] + [job for job in sorted(cluster) if job not in (chief, "ps")]
    index = 0
    for job in order:
        if job == task["type"]:
            return WorkerShard(index + int(task.get("index", 0)), count)
        index += len(cluster.get(job, []))
    return None
