"""Scale-out: mirrored data parallelism on one host (2 CPU devices stand in for GPUs), and
between-graph training from TF_CONFIG (chief, worker, ps, evaluator on 127.0.0.1).

The settings tests run ``build_params`` in-process; training runs the real command line in
subprocesses (the CPU device split and each task's TF_CONFIG must be in place before TensorFlow
starts).
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from google.protobuf import text_format

import estimator_main
from data_tools import input_fns
from model import layers
from runtime import cluster, estimator_factory
from tests import model_helpers
from training.params import ParamsError, build_params

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
import local_cluster  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = estimator_main.FLAGS
SIZE = 32


@pytest.fixture
def params_for(small_records, tmp_path, monkeypatch):
    """``params_for(**flags) -> build_params`` on the global FLAGS (defaults restored after);
    TensorFlow is made to list four GPUs, so GPU settings validate on this CPU."""
    monkeypatch.setattr(estimator_factory, "visible_gpus", lambda: ["GPU"] * 4)

    def build(**settings):
        base = {"mode": "train", "train_records": str(small_records), "model_dir": str(tmp_path),
                "backbone": "tiny", "image_size": SIZE, "embedding_size": 16, "batch_size": 8,
                "train_steps": 5}
        base.update(settings)
        argv = [f"--{k}={v}" for k, v in sorted(base.items())]
        FLAGS.unparse_flags()
        FLAGS(["estimator_main.py"] + argv)
        return build_params(estimator_main.flag_values())

    yield build
    FLAGS.unparse_flags()


@pytest.mark.parametrize("settings,expected", [
    ({}, ("none", 1)),
    ({"distribution": "mirrored", "num_cpu_devices": 2}, ("mirrored", 2)),
    ({"device": "gpu", "num_gpus": 4}, ("mirrored", 4)),  # --num_gpus>1 implies mirrored
    ({"device": "gpu", "num_gpus": 1}, ("none", 1)),
    ({"device": "gpu", "num_gpus": 1, "distribution": "mirrored"}, ("mirrored", 1)),
])
def test_replica_count_from_the_flags(params_for, settings, expected):
    p = params_for(**settings)
    assert (p["distribution"], p["num_replicas"]) == expected


def test_gpu_without_a_visible_gpu_stops_before_anything(params_for, monkeypatch):
    monkeypatch.setattr(estimator_factory, "visible_gpus", lambda: [])
    with pytest.raises(estimator_factory.DeviceUnavailableError, match="sees no GPU"):
        params_for(device="gpu")
    monkeypatch.setattr(estimator_factory, "visible_gpus", lambda: ["GPU"] * 2)
    with pytest.raises(estimator_factory.DeviceUnavailableError, match="sees 2 GPU"):
        params_for(device="gpu", num_gpus=4)


@pytest.mark.parametrize("settings,message", [
    ({"num_gpus": 2}, "needs --device=gpu"),
    ({"device": "gpu", "num_cpu_devices": 2}, "is for --device=cpu"),
    ({"distribution": "mirrored"}, "needs --num_cpu_devices=N >= 2"),
    ({"device": "gpu", "distribution": "mirrored"}, "needs --num_gpus=N"),
    ({"device": "npu", "distribution": "mirrored"}, "through HCCL"),
    ({"distribution": "mirrored", "num_cpu_devices": 3}, "must split evenly over 3 replicas"),
    ({"distribution": "mirrored", "num_cpu_devices": 2, "head": "circle_pair",
      "images_per_identity": 8}, "per-replica batch 4 must be a multiple"),
    ({"distribution": "mirrored", "num_cpu_devices": 2, "proxy_partitions": 2},
     "for parameter servers"),
    ({"num_gpus": -1}, "must not be negative"),
])
def test_inconsistent_distribution_settings_are_rejected(params_for, settings, message):
    with pytest.raises(ParamsError, match=message):
        params_for(**settings)


@pytest.mark.parametrize("device,count", [("cpu", 2), ("gpu", 3)])
def test_mirrored_strategy_spans_the_requested_devices(device, count):
    strategy = estimator_factory.train_distribution("mirrored", device, count)
    assert strategy.num_replicas_in_sync == count
    # The job prefix depends on whether an eager context exists; the devices are what count.
    assert sorted(d.split("/device:")[1] for d in strategy.extended.worker_devices) == sorted(
        f"{device.upper()}:{i}" for i in range(count))


def test_no_strategy_without_distribution_and_none_on_ascend():
    assert estimator_factory.train_distribution("none", "gpu", 8) is None
    with pytest.raises(ValueError, match="HCCL"):
        estimator_factory.train_distribution("mirrored", "npu", 8)
    with pytest.raises(ValueError, match="distribution must be one of"):
        estimator_factory.train_distribution("horovod", "gpu", 2)


def test_session_config_splits_the_host_into_cpu_devices():
    assert estimator_factory.session_config("cpu", "fp32", num_cpu_devices=2).device_count[
        "CPU"] == 2
    assert "CPU" not in estimator_factory.session_config("cpu", "fp32").device_count


@pytest.mark.slow
@pytest.mark.tf1_suite
def test_every_variable_a_replica_updates_has_an_aggregation(small_records, tmp_path):
    """Training under a mirrored strategy (one replica, in this process): every update a
    replica makes to a mirrored variable needs an aggregation, or TF 1.15 refuses it ("You must
    specify an aggregation method to update a MirroredVariable in Replica Context"). The
    batch-norm moving statistics are such updates; the optimizer's and the global step's are
    made by the strategy itself."""
    strategy = estimator_factory.train_distribution("mirrored", "cpu", 1)
    fn = model_helpers.build_model_fn("tiny", "circle", 4, embedding_size=16, gamma=32.0,
                                      total_steps=2, log_every_n_steps=1000)
    estimator = estimator_factory.build_estimator(fn, str(tmp_path), train_distribute=strategy,
                                                  save_checkpoints_steps=100)
    estimator.train(input_fns.train_input_fn_builder(str(small_records), image_size=SIZE,
                                                     batch_size=4, seed=0), max_steps=2)
    assert estimator.get_variable_value("global_step") == 2
    # The statistics moved away from their initial values (the update really ran).
    assert not np.allclose(estimator.get_variable_value(
        "backbone/tiny/features/moving_mean"), 0.0)


def test_batch_norm_statistics_are_created_as_tf_layers_creates_them():
    with tf.Graph().as_default():
        layers.batch_norm(tf.zeros([2, 4, 4, 3]), is_training=True, name="bn")
        statistics = tf.get_collection(tf.GraphKeys.MOVING_AVERAGE_VARIABLES)
        assert sorted(v.op.name for v in statistics) == ["bn/moving_mean", "bn/moving_variance"]
        for variable in statistics:
            assert variable.aggregation == tf.VariableAggregation.MEAN, variable.op.name
            assert variable.synchronization == tf.VariableSynchronization.ON_READ
            assert not variable.trainable and variable not in tf.trainable_variables()


# A minute or more each on 2 cores: make test-slow, and make test-tf1 (TF 1.15's strategy).
@pytest.mark.slow
@pytest.mark.tf1_suite
def test_mirrored_training_on_two_cpu_devices(small_records, tmp_path):
    """Global batch 8 over 2 replicas: each replica's input is 4 images, the second replica's
    ops run on CPU:1, and the shared global step reaches the requested count."""
    model_dir = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, "estimator_main.py", "--mode=train", f"--train_records={small_records}",
         f"--model_dir={model_dir}", "--backbone=tiny", f"--image_size={SIZE}",
         "--embedding_size=16", "--batch_size=8", "--train_steps=6", "--gamma=32",
         "--distribution=mirrored", "--num_cpu_devices=2", "--noprogress",
         "--save_checkpoints_steps=100"],
        cwd=ROOT, env=env, capture_output=True, encoding="utf-8", timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert tf.train.load_variable(model_dir, "global_step") == 6

    graph = tf.GraphDef()
    with open(os.path.join(model_dir, "graph.pbtxt")) as f:
        text_format.Parse(f.read(), graph)
    devices = {node.device.rsplit("device:", 1)[-1] for node in graph.node if node.device}
    assert {"CPU:0", "CPU:1"} <= devices
    batch_dims = [node.attr["output_shapes"].list.shape[0].dim[0].size
                  for node in graph.node if node.op == "IteratorGetNext"]
    assert batch_dims and set(batch_dims) == {4}
    # One gradient per replica is reduced into each variable's single update.
    replica_ops = [node.name for node in graph.node if node.name.startswith("replica_1/")]
    assert replica_ops


@pytest.mark.slow
@pytest.mark.tf1_suite
def test_mirrored_training_equals_single_device_training_at_the_same_global_batch(tmp_path):
    """Two replicas of batch 4 against one device of batch 8, three steps from the same
    checkpoint (tests/_mirrored_equivalence.py, which explains the data): the same loss and the
    same variables, so the replicas' gradients are averaged (not summed, not one of them
    dropped), the learning rate is the single device's and each update is applied once.

    The moving variances are the exception: batch norm folds in the unbiased variance, which
    divides by n - 1 with n the replica's examples, not the global batch's."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8",
               PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "tests._mirrored_equivalence", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, encoding="utf-8",
                          timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = json.loads(proc.stdout.strip().splitlines()[-1])
    single, mirrored = str(tmp_path / "single"), str(tmp_path / "mirrored")
    assert tf.train.load_variable(mirrored, "global_step") == 3
    assert tf.train.load_variable(single, "global_step") == 3
    np.testing.assert_allclose(losses["mirrored"], losses["single"], rtol=1e-4)

    names = sorted(name for name, _ in tf.train.list_variables(single))
    assert names == sorted(name for name, _ in tf.train.list_variables(mirrored))
    initial = os.path.join(single, "model.ckpt-0")
    compared = 0
    for name in names:
        if name == "global_step" or name.endswith("moving_variance"):
            continue
        expected = tf.train.load_variable(single, name)
        change = np.abs(expected - tf.train.load_variable(initial, name)).max()
        difference = np.abs(tf.train.load_variable(mirrored, name) - expected).max()
        # Float32 reduction order aside, the three steps moved both runs alike (a summed
        # gradient would move the mirrored run twice as far, a dropped replica elsewhere).
        assert change > 0 and difference <= 2e-3 * change, (name, difference, change)
        compared += 1
    # Weights, biases, batch-norm parameters and moving means, momentum slots, proxies.
    assert compared >= 60


# ---- several hosts: TF_CONFIG, parameter servers, the local cluster -----------------------------


def _cluster(num_ps):
    return {"chief": ["127.0.0.1:2220"], "worker": ["127.0.0.1:2221"],
            "ps": [f"127.0.0.1:{2230 + i}" for i in range(num_ps)]}


def _run_config(monkeypatch, task_type, index=0, num_ps=1):
    """The RunConfig a task builds from TF_CONFIG (parsing only; no server is started)."""
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": _cluster(num_ps), "task": {"type": task_type, "index": index}}))
    return tf.estimator.RunConfig()


@pytest.mark.parametrize("task_type,expected_index", [("chief", 0), ("worker", 1)])
def test_tf_config_workers_read_distinct_files(small_records, monkeypatch, task_type,
                                               expected_index):
    # runtime.cluster numbers the tasks as the estimator's RunConfig does.
    config = _run_config(monkeypatch, task_type)
    shard = cluster.worker_shard()
    assert tuple(shard) == (expected_index, 2)
    assert (shard.index, shard.count) == (config.global_id_in_cluster, config.num_worker_replicas)
    files = input_fns._files(str(small_records))
    counts = input_fns._record_counts(str(small_records), files)
    mine = input_fns.worker_spans(files, counts, shard.count, shard.index)
    other = input_fns.worker_spans(files, counts, 2, 1 - shard.index)
    # Two shard files of equal size over two workers: a whole file each, together all of them.
    assert mine[1:] == ([0], [counts[0]]) and other[1:] == ([0], [counts[1]])
    assert sorted(mine[0] + other[0]) == sorted(files)


def test_proxy_shards_are_placed_on_different_parameter_servers(monkeypatch, tmp_path):
    """The estimator's own device function (replica_device_setter from TF_CONFIG) puts the
    [D, C] proxy matrix, split in 3 along the classes, on ps 0, 1 and 2, and no task holds it
    whole."""
    num_classes, dim = 9, 16
    config = _run_config(monkeypatch, "worker", num_ps=3)
    fn = model_helpers.build_model_fn("tiny", "circle", num_classes, embedding_size=dim,
                                      proxy_partitions=3, total_steps=10, check_finite_loss=False)
    estimator = tf.estimator.Estimator(fn, model_dir=str(tmp_path), config=config)
    with tf.Graph().as_default(), tf.device(estimator._device_fn):
        images = tf.zeros([4, SIZE, SIZE, 3])
        fn({"image": images}, tf.constant([0, 3, 5, 8]), tf.estimator.ModeKeys.TRAIN)
        device = {v.op.name: v.device for v in tf.global_variables()}
        shape = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    parts = [f"head/proxies/part_{i}" for i in range(3)]
    assert [shape[name] for name in parts] == [[dim, num_classes // 3]] * 3
    # The round robin starts wherever the backbone's variables left it; what matters is that
    # the three slices sit on three different ps and each momentum slot stays with its slice.
    assert sorted(device[name] for name in parts) == [f"/job:ps/task:{i}" for i in range(3)]
    assert all(device[name + "/Momentum"] == device[name] for name in parts)
    assert "head/proxies" not in device
    others = [name for name in device if "/proxies/" not in name]
    assert others and all(device[name].startswith("/job:ps/") for name in others)


@pytest.mark.slow
def test_local_cluster_trains_evaluates_and_exports(small_records, small_pairs, tmp_path):
    """scripts/local_cluster.py: ps + chief + worker + evaluator on 127.0.0.1."""
    root = tmp_path
    model_dir = str(root / "run")
    steps = 600
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, os.path.join("scripts", "local_cluster.py"),
         f"--train_records={small_records}", f"--eval_records={small_pairs}",
         f"--model_dir={model_dir}", f"--train_steps={steps}", "--timeout=200", "--",
         "--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
         "--gamma=32", "--eval_batch_size=4", "--eval_throttle_secs=0",
         "--save_checkpoints_steps=300", "--proxy_partitions=2"],
        cwd=ROOT, env=env, capture_output=True, encoding="utf-8", timeout=260, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = os.path.join(root, "run_logs")
    chief = local_cluster.logged_steps(os.path.join(logs, "chief_0.log"))
    worker = local_cluster.logged_steps(os.path.join(logs, "worker_0.log"))
    # Both tasks ran training steps on the one shared counter, at the same time: while the
    # worker trained, the chief took steps in between the worker's.
    assert len(chief) > 10 and len(worker) > 10
    assert max(chief + worker) >= steps - 1
    between = set(range(min(worker), max(worker))) - set(worker)
    assert len(between & set(chief)) > 10
    assert tf.train.load_variable(model_dir, "global_step") >= steps
    # The proxies were trained as two [16, 2] partitions (the single ps holds both); the
    # checkpoint stores them as slices of one [16, 4] tensor.
    assert dict(tf.train.list_variables(model_dir))["head/proxies"] == [16, 4]
    with open(os.path.join(model_dir, "graph.pbtxt")) as f:
        graph = text_format.Parse(f.read(), tf.GraphDef())
    parts = {node.name: node.device for node in graph.node
             if node.op in ("VarHandleOp", "VariableV2") and "/proxies/part_" in node.name
             and "Momentum" not in node.name}
    assert parts == {"head/proxies/part_0": "/job:ps/task:0",
                     "head/proxies/part_1": "/job:ps/task:0"}
    assert "lfw/accuracy" in local_cluster.eval_tags(model_dir)
    with open(os.path.join(model_dir, "eval", "report.json")) as f:
        report = json.load(f)
    # The 10 synthetic pairs are easy: trained models separate all of them (1.0 measured after
    # these 600 steps, and already after 20 steps elsewhere); a collapsed or constant embedding
    # scores about 0.5. One pair of slack.
    assert report["accuracy"] >= 0.9, report["fold_accuracy"]
    assert glob.glob(os.path.join(model_dir, "export", "best", "*", "saved_model.pb"))
    assert glob.glob(os.path.join(model_dir, "frozen", "embedding_*.pb"))


def _processes_mentioning(text):
    """Pids of live processes whose command line contains ``text``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to list processes")
def test_local_cluster_stops_every_task_when_it_times_out(small_records, small_pairs, tmp_path):
    model_dir = str(tmp_path / "never_finishes")
    problems, logs = local_cluster.run_cluster(
        str(small_records), str(small_pairs), model_dir,
        ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8"],
        train_steps=10 ** 6, timeout=4)
    assert problems and "did not finish within 4 s" in problems[0]
    assert sorted(logs) == [("chief", 0), ("evaluator", 0), ("ps", 0), ("worker", 0)]
    assert _processes_mentioning(model_dir) == []
