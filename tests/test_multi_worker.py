"""--distribution=multi_worker: synchronous training across worker processes
(MultiWorkerMirroredStrategy through the estimator's distribute coordinator, TF_CONFIG).

The settings tests run in-process and are fast. The training tests start real worker processes
on 127.0.0.1 (free ports) through scripts/local_cluster.py and are marked slow: each process
builds TensorFlow's graph on a shared 2-core machine, so a run takes a minute or more.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

import estimator_main
from data_tools import input_fns
from data_tools.input_config import WorkerShard
from model import hooks
from runtime import cluster as runtime_cluster
from runtime import estimator_factory
from training import run_record
from training.params import ParamsError, build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import local_cluster  # noqa: E402

FLAGS = estimator_main.FLAGS
SIZE = 32
WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}


def tf_config(cluster, task_type="worker", index=0):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


# ---- TF_CONFIG and settings (fast) -------------------------------------------------------------


@pytest.mark.parametrize("cluster,task,expected", [
    (WORKERS, ("worker", 0), (2, "worker", 0, True)),
    (WORKERS, ("worker", 1), (2, "worker", 1, False)),
    (WORKERS, ("evaluator", 0), (2, "evaluator", 0, False)),
    (dict(WORKERS, chief=["127.0.0.1:2221"]), ("chief", 0), (3, "chief", 0, True)),
    (dict(WORKERS, chief=["127.0.0.1:2221"]), ("worker", 0), (3, "worker", 0, False)),
    ({"worker": ["127.0.0.1:2222"]}, ("worker", 0), (1, "worker", 0, True)),
])
def test_the_task_is_read_from_tf_config(cluster, task, expected):
    assert tuple(runtime_cluster.multi_worker_task(tf_config(cluster, *task))) == expected


@pytest.mark.parametrize("text,message", [
    (None, "needs TF_CONFIG describing the worker cluster"),
    ("  ", "needs TF_CONFIG describing the worker cluster"),
    ("{cluster:", "not valid JSON"),
    ("[]", "must be a JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), 'needs "cluster" and "task"'),
    (tf_config({"chief": ["127.0.0.1:1"]}, "chief"), 'needs a "worker" list'),
    (tf_config(dict(WORKERS, ps=["127.0.0.1:1"])), "parameter-server training"),
    (tf_config(dict(WORKERS, master=["127.0.0.1:1"])), "not master"),
    (tf_config({"worker": "127.0.0.1:2222"}), "must be a list"),
    (tf_config(WORKERS, "worker", 2), "worker 2 is not in the cluster"),
    (tf_config(WORKERS, "worker", -1), "non-negative integer"),
    (tf_config(WORKERS, "ps", 0), "task type must be one of"),
    (tf_config(WORKERS, "evaluator", 1), "one evaluator"),
    (tf_config(dict(WORKERS, chief=["a:1", "b:2"]), "chief"), "more than one chief"),
])
def test_a_tf_config_that_is_no_worker_cluster_is_named(text, message):
    with pytest.raises(ValueError, match=message):
        runtime_cluster.multi_worker_task(text)


def test_the_evaluator_runconfig_sees_worker_0_as_the_chief(monkeypatch):
    """tf.estimator.RunConfig refuses a cluster without a chief; the evaluator's view names
    worker 0 (the chief of a workers-only cluster) as such, and RunConfig accepts it."""
    view = json.loads(runtime_cluster.evaluator_tf_config(tf_config(WORKERS, "evaluator")))
    assert view == {"cluster": {"chief": ["127.0.0.1:2222"], "worker": ["127.0.0.1:2223"]},
                    "task": {"type": "evaluator", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", tf_config(WORKERS, "evaluator"))
    with pytest.raises(ValueError, match="chief"):
        tf.estimator.RunConfig()
    monkeypatch.setenv("TF_CONFIG", json.dumps(view))
    assert tf.estimator.RunConfig().task_type == "evaluator"


@pytest.fixture
def params_for(small_records, tmp_path, monkeypatch):
    """``params_for(tf_config_text, **flags) -> build_params`` (global FLAGS restored after)."""
    monkeypatch.setattr(estimator_factory, "visible_gpus", lambda: ["GPU"] * 4)

    def build(config_text, **settings):
        if config_text is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", config_text)
        base = {"mode": "train", "train_records": str(small_records), "model_dir": str(tmp_path),
                "backbone": "tiny", "image_size": SIZE, "embedding_size": 16, "batch_size": 8,
                "train_steps": 5, "distribution": "multi_worker"}
        base.update(settings)
        FLAGS.unparse_flags()
        FLAGS(["estimator_main.py"] + [f"--{k}={v}" for k, v in sorted(base.items())
                                        if v is not None])
        return build_params(estimator_main.flag_values())

    yield build
    FLAGS.unparse_flags()


def test_the_global_batch_splits_over_every_worker(params_for):
    p = params_for(tf_config(WORKERS, "worker", 1))
    assert (p["distribution"], p["num_workers"], p["num_replicas"]) == ("multi_worker", 2, 2)
    assert p["worker_timeout_secs"] == 600
    # Epochs count the global batch: 32 images, batch 8 over both workers -> 4 steps per epoch.
    p = params_for(tf_config(WORKERS), train_steps=None, train_epochs=2)
    assert p["train_steps"] == 8
    # GPU workers mirror over all their GPUs: 2 workers × 4 GPUs.
    p = params_for(tf_config(WORKERS), device="gpu", num_gpus=4)
    assert (p["distribution"], p["num_replicas"]) == ("multi_worker", 8)


@pytest.mark.parametrize("config_text,settings,message", [
    (None, {}, "needs TF_CONFIG"),
    (tf_config(dict(WORKERS, ps=["127.0.0.1:1"])), {}, "parameter-server training"),
    (tf_config(WORKERS), {"batch_size": 9, "images_per_identity": 0},
     "must split evenly over 2 replicas"),
    (tf_config(WORKERS), {"head": "circle_pair", "images_per_identity": 8},
     "per-replica batch 4 must be a multiple"),
    (tf_config(WORKERS), {"proxy_partitions": 2}, "for parameter servers"),
    (tf_config(WORKERS), {"num_cpu_devices": 2}, "a multi_worker CPU worker is one replica"),
    (tf_config(WORKERS), {"device": "npu"}, "through HCCL"),
    (tf_config(WORKERS), {"mode": "export"}, "is for training"),
    (tf_config(WORKERS, "evaluator"), {}, "evaluator task needs --mode=train_and_evaluate"),
    (tf_config(WORKERS), {"device": "gpu"}, "needs --num_gpus=N"),
])
def test_inconsistent_multi_worker_settings_are_rejected(params_for, config_text, settings,
                                                         message):
    with pytest.raises(ParamsError, match=message):
        params_for(config_text, **settings)


def test_gpu_workers_use_every_visible_gpu(params_for):
    with pytest.raises(estimator_factory.DeviceUnavailableError, match="CUDA_VISIBLE_DEVICES"):
        params_for(tf_config(WORKERS), device="gpu", num_gpus=2)


def test_a_tf_config_without_the_flag_is_not_taken_for_a_multi_worker_run(params_for):
    """Without --distribution=multi_worker a cluster is the estimator's own business
    (parameter-server training), as before."""
    p = params_for(tf_config(WORKERS), distribution="none")
    assert (p["distribution"], p["num_workers"], p["num_replicas"]) == ("none", 1, 1)


@pytest.mark.parametrize("cluster,task,writes", [
    (WORKERS, ("worker", 0), True),  # no chief job: worker 0 is the chief
    (WORKERS, ("worker", 1), False),
    (WORKERS, ("evaluator", 0), False),
    (dict(WORKERS, chief=["127.0.0.1:1"]), ("chief", 0), True),
    (dict(WORKERS, chief=["127.0.0.1:1"]), ("worker", 0), False),
    (dict(WORKERS, chief=["127.0.0.1:1"], ps=["127.0.0.1:3"]), ("worker", 0), False),
])
def test_only_the_chief_writes_the_run_record(monkeypatch, cluster, task, writes):
    monkeypatch.setenv("TF_CONFIG", tf_config(cluster, *task))
    assert run_record.writes_run_record() is writes


def test_the_timeout_reaches_the_session_config():
    config = estimator_factory.session_config("cpu", "fp32", operation_timeout_secs=20)
    assert config.operation_timeout_in_ms == 20000
    assert estimator_factory.session_config("cpu", "fp32").operation_timeout_in_ms == 0


def test_a_recreated_session_is_refused():
    hook = hooks.NoSessionRecoveryHook()
    hook.after_create_session(None, None)
    with pytest.raises(hooks.WorkerLostError, match="session was lost"):
        hook.after_create_session(None, None)


def test_each_worker_reads_its_own_files_with_the_per_replica_batch(small_records):
    """MultiWorkerMirroredStrategy calls the input_fn once per worker with an InputContext:
    worker i of 2 reads shard file i (no example twice in an epoch) in batches of global / 2."""
    files = input_fns._files(str(small_records))
    counts = input_fns._record_counts(str(small_records), files)
    assert counts[0] == counts[1]  # two equal shard files: one whole file per worker
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        assert input_fns.pipeline_shard(None, context) == WorkerShard(worker, 2)
        mine, skips, takes = input_fns.worker_spans(files, counts, 2, worker)
        assert len(mine) == 1 and skips == [0] and takes == [counts[0]]
        seen.append(mine)
        input_fn = input_fns.train_input_fn_builder(str(small_records), image_size=SIZE, seed=0)
        with tf.Graph().as_default():
            dataset = input_fn({"batch_size": 8}, input_context=context)
            assert tf.data.get_output_shapes(dataset)[1].as_list() == [4]
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == sorted(files)


# ---- two worker processes on 127.0.0.1 (slow) ---------------------------------------------------

TASK_FLAGS = ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
              "--gamma=32", "--eval_batch_size=4", "--eval_throttle_secs=0"]


@pytest.mark.slow
def test_two_workers_train_in_lockstep_to_exactly_the_requested_step(small_records, small_pairs,
                                                                      tmp_path):
    """scripts/local_cluster.py --distribution=multi_worker: two workers and an evaluator. Both
    workers exit 0, the chief's checkpoint is at exactly --train_steps (one synchronous step
    moves the shared step once, not once per worker), only the chief wrote the run record and
    the evaluator reported and exported."""
    model_dir = str(tmp_path / "run")
    steps = 10
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, os.path.join("scripts", "local_cluster.py"),
         "--distribution=multi_worker", "--num_workers=2", f"--train_records={small_records}",
         f"--eval_records={small_pairs}", f"--model_dir={model_dir}", f"--train_steps={steps}",
         "--timeout=400", "--"] + TASK_FLAGS + ["--save_checkpoints_steps=5"],
        cwd=ROOT, env=env, capture_output=True, encoding="utf-8", timeout=460, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 workers trained in lockstep to step 10 exactly" in proc.stdout
    assert tf.train.load_variable(model_dir, "global_step") == steps
    logs = os.path.join(str(tmp_path), "run_logs")
    for worker in range(2):
        assert local_cluster.logged_steps(os.path.join(logs, f"worker_{worker}.log"))[-1] == \
            steps - 1
    with open(os.path.join(model_dir, "runs.jsonl")) as fh:
        assert len(fh.read().splitlines()) == 1
    # Worker 1 runs the same saving steps (every worker must), into its own directory.
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "tmp_worker_1")).endswith(
        f"-{steps}")
    assert os.path.exists(os.path.join(model_dir, "eval", "report.json"))


def _wait_for_step(log_path, step, proc, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(s >= step for s in local_cluster.logged_steps(log_path)):
            return True
        time.sleep(1)
    return False


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_and_a_restart_resumes(small_records, tmp_path):
    """Killing worker 1 makes worker 0 exit non-zero with one clear line (instead of retrying
    or waiting forever); starting both again resumes from the last checkpoint and finishes at
    exactly the requested step."""
    model_dir = str(tmp_path / "run")
    log_dir = str(tmp_path / "logs")
    os.makedirs(log_dir)
    argv = local_cluster.task_argv(
        str(small_records), None, model_dir, 10 ** 6,
        ["--distribution=multi_worker", "--worker_timeout_secs=30",
         "--save_checkpoints_steps=10"] + TASK_FLAGS)
    cluster = local_cluster.multi_worker_cluster(2)
    procs, handles = [], []
    try:
        for index in range(2):
            proc, handle, _ = local_cluster.start(("worker", index), cluster, argv, log_dir)
            procs.append(proc)
            handles.append(handle)
        chief_log = os.path.join(log_dir, "worker_0.log")
        assert _wait_for_step(chief_log, 25, procs[0], 300), open(chief_log).read()[-3000:]
        local_cluster.stop(procs[1])
        killed_at = time.time()
        code = procs[0].wait(timeout=150)
        waited = time.time() - killed_at
    finally:
        for proc in procs:
            local_cluster.stop(proc)
        for handle in handles:
            handle.close()
    with open(chief_log) as fh:
        log = fh.read()
    assert code == 1, log[-3000:]
    assert "multi-worker training stopped" in log and "restart all of them" in log, log[-3000:]
    assert waited < 120
    checkpoint, step = local_cluster.final_step(model_dir)
    assert step and step % 10 == 0

    # Both again, same model_dir (new ports): resume from that checkpoint, stop at step + 5.
    target = step + 5
    problems, logs = local_cluster.run_multi_worker(
        str(small_records), None, model_dir, ["--save_checkpoints_steps=10"] + TASK_FLAGS, target,
        num_workers=2, timeout=400, log_dir=str(tmp_path / "logs_restart"))
    assert not problems, problems
    for path in logs.values():
        with open(path) as fh:
            assert f"Restoring parameters from {checkpoint}" in fh.read()
    assert local_cluster.final_step(model_dir)[1] == target
