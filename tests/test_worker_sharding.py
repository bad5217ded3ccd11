"""Workers read disjoint parts of the training records that together cover all of them, also
with fewer files than workers and no seed (each worker's file order is then its own), and every
worker holds an equal share, so synchronous steps show every image equally often."""

import collections
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data_tools import input_fns
from data_tools.input_config import WorkerShard
from tests import records_helpers as rh

NUM_CLASSES, PER_CLASS, SHARDS, WORKERS = 6, 4, 3, 4


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    rh.write_image_records(directory, num_classes=NUM_CLASSES, per_class=PER_CLASS, size=16,
                           num_shards=SHARDS)
    return directory


def records_seen(records, rank, batches):
    """Distinct (label, image checksum) a worker reads in ``batches`` batches of 2."""
    input_fn = input_fns.train_input_fn_builder(
        records, image_size=16, random_flip=False, shuffle_buffer=64, seed=None, batch_size=2,
        worker_shard=WorkerShard(rank, WORKERS))
    seen = set()
    with tf.Graph().as_default():
        for features, batch_labels in rh.run_dataset(input_fn(), max_batches=batches):
            for image, label in zip(features["image"], batch_labels):
                seen.add((int(label), round(float(np.abs(image).sum()), 2)))
    return seen


def test_unseeded_workers_split_the_records_exactly(records):
    total = NUM_CLASSES * PER_CLASS
    # Each worker holds 6 of 24 records; 6 batches of 2 are 2 passes over them.
    parts = [records_seen(records, rank, 6) for rank in range(WORKERS)]
    for i in range(WORKERS):
        for j in range(i + 1, WORKERS):
            assert not parts[i] & parts[j], f"workers {i} and {j} read the same records"
    assert sum(len(p) for p in parts) == total


def worker_spans_cover(counts, workers):
    """Per worker: the set of global record positions its spans read."""
    files = [f"f{i}" for i in range(len(counts))]
    starts = dict(zip(files, np.cumsum([0] + list(counts))[:-1]))
    parts = []
    for rank in range(workers):
        names, skips, takes = input_fns.worker_spans(files, counts, workers, rank)
        parts.append({starts[n] + skip + i for n, skip, take in zip(names, skips, takes)
                      for i in range(take)})
    return parts


@pytest.mark.parametrize("counts,workers", [
    ([10] * 10, 4), ([7, 1, 30, 2, 2], 3), ([5], 5), ([3, 3], 4), (list(range(1, 12)), 8)])
def test_worker_spans_are_equal_disjoint_and_cover_every_record(counts, workers):
    parts = worker_spans_cover(counts, workers)
    total = sum(counts)
    assert sorted(len(p) for p in parts) in (
        [total // workers] * (workers - total % workers)
        + [total // workers + 1] * (total % workers),)
    assert set().union(*parts) == set(range(total)) and sum(map(len, parts)) == total
    with pytest.raises(ValueError, match="3 training records cannot be shared by 4 workers"):
        input_fns.worker_spans(["a", "b"], [1, 2], 4, 0)


@pytest.fixture(scope="module")
def ten_shards(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("ten"))
    rh.write_image_records(directory, num_classes=10, per_class=10, size=16, num_shards=10)
    return directory


@pytest.mark.parametrize("with_manifest", [True, False])
def test_ten_shards_on_four_workers_show_every_image_equally_often(ten_shards, with_manifest):
    """10 files of 10 records on 4 synchronous workers, 100 steps of 5 images each: every
    image's exposure (times seen / the mean over all images) is 1. By whole files the workers
    held 3, 3, 2 and 2 files: exposure 0.83 / 0.83 / 1.25 / 1.25. Without a manifest (a glob
    pattern) the records are counted first, with the same split."""
    records = ten_shards if with_manifest else os.path.join(ten_shards, "*.tfrecord")
    steps, per_worker = 100, 5
    seen = collections.Counter()
    held = []
    for rank in range(4):
        context = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=rank,
                                             num_replicas_in_sync=4)
        input_fn = input_fns.train_input_fn_builder(
            records, image_size=16, random_flip=False, shuffle_buffer=200, seed=rank,
            batch_size=4 * per_worker)
        mine = collections.Counter()
        with tf.Graph().as_default():
            for features, labels in rh.run_dataset(input_fn(input_context=context),
                                                   max_batches=steps):
                assert len(labels) == per_worker
                for image, label in zip(features["image"], labels):
                    mine[(int(label), np.asarray(image).tobytes())] += 1
        held.append(len(mine))
        seen.update(mine)
    assert len(seen) == 100 and held == [25, 25, 25, 25]
    mean = 4 * steps * per_worker / 100.0
    exposure = np.array(sorted(seen.values())) / mean
    np.testing.assert_array_equal(exposure, np.ones(100))
