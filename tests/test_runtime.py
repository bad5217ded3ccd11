"""runtime/: where a process stands in its cluster (TF_CONFIG, the Ascend rank) and the part of
the training records it reads, checked against the numbering of TensorFlow's own RunConfig."""

import json
import os
import subprocess
import sys
import types

import pytest
import tensorflow.compat.v1 as tf

from data_tools.input_config import InputConfig, WorkerShard
from runtime import ascend, cluster, estimator_factory

CHIEF_CLUSTER = {"chief": ["h:0"], "worker": ["h:1", "h:2", "h:3"], "ps": ["h:8", "h:9"]}
MASTER_CLUSTER = {"master": ["h:0"], "worker": ["h:1", "h:2"]}


def tf_config(cluster_spec, task_type, index=0):
    return json.dumps({"cluster": cluster_spec, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("cluster_spec,task_type,index", [
    (CHIEF_CLUSTER, "chief", 0), (CHIEF_CLUSTER, "worker", 0), (CHIEF_CLUSTER, "worker", 2),
    (MASTER_CLUSTER, "master", 0), (MASTER_CLUSTER, "worker", 1),
])
def test_tf_config_tasks_are_numbered_as_the_run_config_numbers_them(monkeypatch, cluster_spec,
                                                                     task_type, index):
    # The reference: the estimator's RunConfig, which the input_fn read before the shard was
    # computed here (parsing only, no server starts).
    text = tf_config(cluster_spec, task_type, index)
    monkeypatch.setenv("TF_CONFIG", text)
    run_config = tf.estimator.RunConfig()
    expected = WorkerShard(run_config.global_id_in_cluster, run_config.num_worker_replicas)
    assert cluster.worker_shard(text, environ={}) == expected
    assert cluster.worker_shard() == expected  # the environment's TF_CONFIG


@pytest.mark.parametrize("cluster_spec,task_type,index,expected", [
    (CHIEF_CLUSTER, "chief", 0, (0, 4)),
    (CHIEF_CLUSTER, "worker", 2, (3, 4)),  # the chief is task 0, workers follow
    ({"worker": ["h:1", "h:2", "h:3"]}, "worker", 1, (1, 3)),  # workers only: worker 0 leads
    (MASTER_CLUSTER, "worker", 0, (1, 3)),
])
def test_tf_config_shards_by_hand(cluster_spec, task_type, index, expected):
    assert tuple(cluster.worker_shard(tf_config(cluster_spec, task_type, index), {})) == expected


@pytest.mark.parametrize("text", [
    tf_config(CHIEF_CLUSTER, "evaluator"),  # evaluates checkpoints, reads no training records
    tf_config(CHIEF_CLUSTER, "ps", 1),
    tf_config({"worker": ["h:1"]}, "worker"),  # a cluster of one
    json.dumps({"task": {"type": "worker", "index": 0}}),  # no cluster: local
    "  ",
])
def test_tasks_that_share_nothing_read_everything_or_their_ascend_rank(text):
    assert cluster.worker_shard(text, {}) == WorkerShard(0, 1)
    assert cluster.worker_shard(text, {"RANK_ID": "2", "RANK_SIZE": "3"}) == WorkerShard(2, 3)


@pytest.mark.parametrize("environ,expected", [
    ({}, (0, 1)), ({"RANK_ID": "", "RANK_SIZE": ""}, (0, 1)), ({"RANK_SIZE": "1"}, (0, 1)),
    ({"RANK_ID": "3", "RANK_SIZE": "8"}, (3, 8)), ({"RANK_ID": "0", "RANK_SIZE": "2"}, (0, 2)),
])
def test_ascend_ranks_are_shards(environ, expected):
    assert tuple(cluster.worker_shard(environ=environ)) == expected


def test_a_tf_config_cluster_wins_over_the_ascend_rank():
    text = tf_config(CHIEF_CLUSTER, "worker", 1)
    assert cluster.worker_shard(text, {"RANK_ID": "1", "RANK_SIZE": "8"}) == WorkerShard(2, 4)
    assert cluster.worker_shard(None, {"TF_CONFIG": text, "RANK_ID": "1", "RANK_SIZE": "8"}) == \
        WorkerShard(2, 4)


@pytest.mark.parametrize("environ,message", [
    ({"RANK_ID": "8", "RANK_SIZE": "8"}, "RANK_ID=8 is not a rank of RANK_SIZE=8"),
    ({"TF_CONFIG": "{cluster:"}, "TF_CONFIG is not valid JSON"),
])
def test_a_bad_launch_environment_fails_in_one_line(environ, message):
    with pytest.raises(ValueError, match=message) as info:
        cluster.worker_shard(environ=environ)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("index,count", [(2, 2), (-1, 2), (0, 0), (0.5, 2), (True, 2)])
def test_a_shard_outside_its_count_is_refused(index, count):
    with pytest.raises(ValueError, match="worker shard"):
        WorkerShard(index, count)


@pytest.mark.parametrize("environ,rank", [
    ({}, (0, 1)), ({"RANK_ID": "", "RANK_SIZE": ""}, (0, 1)),
    ({"RANK_ID": "3", "RANK_SIZE": "8"}, (3, 8))])
def test_one_rank_parser_for_the_shard_and_the_factory(environ, rank):
    # The worker shard and the estimator factory's HCCL optimizer read RANK_ID / RANK_SIZE
    # through it alike.
    assert ascend.ascend_rank(environ) == rank
    assert estimator_factory.ascend_rank is ascend.ascend_rank


def test_reading_the_cluster_loads_no_tensorflow():
    # A launcher may ask where it stands before TensorFlow loads (and quicker than it does).
    code = ("import sys; from runtime import cluster; cluster.worker_shard(environ={}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'model', 'training', 'export')))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True, cwd=root, env=dict(os.environ, PYTHONPATH=root))
    assert result.stdout.strip() == "[]"


def test_training_hands_the_input_fn_the_shard_of_this_process(monkeypatch):
    # The composition layer asks runtime where this process stands and binds the answer.
    from training import builders  # noqa: PLC0415 - loads the whole composition layer

    bound = {}
    monkeypatch.setattr(builders.input_fns, "train_input_fn_builder",
                        lambda records, **settings: bound.update(settings))
    monkeypatch.setattr(builders, "build_configs", lambda p: types.SimpleNamespace(
        input=InputConfig(image_size=32, batch_size=4)))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("RANK_ID", "1")
    monkeypatch.setenv("RANK_SIZE", "2")
    builders.train_input_fn({"train_records": "records", "num_classes": 3})
    assert bound["worker_shard"] == WorkerShard(1, 2)
