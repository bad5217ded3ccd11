"""Workers read disjoint parts of the training records that together cover all of them, also
with fewer files than workers and no seed (each worker's file order is then its own)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data_tools import input_fns
from tests import records_helpers as rh

NUM_CLASSES, PER_CLASS, SHARDS, WORKERS = 6, 4, 3, 4


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    rh.write_image_records(directory, num_classes=NUM_CLASSES, per_class=PER_CLASS, size=16,
                           num_shards=SHARDS)
    return directory


def records_seen(records, rank, batches, monkeypatch):
    """Distinct (label, image checksum) a worker reads in ``batches`` batches of 2."""
    monkeypatch.setenv("RANK_SIZE", str(WORKERS))
    monkeypatch.setenv("RANK_ID", str(rank))
    input_fn = input_fns.train_input_fn_builder(
        records, image_size=16, random_flip=False, shuffle_buffer=64, seed=None, batch_size=2)
    seen = set()
    with tf.Graph().as_default():
        for features, batch_labels in rh.run_dataset(input_fn(), max_batches=batches):
            for image, label in zip(features["image"], batch_labels):
                seen.add((int(label), round(float(np.abs(image).sum()), 2)))
    return seen


def test_unseeded_workers_split_the_records_exactly(records, monkeypatch):
    total = NUM_CLASSES * PER_CLASS
    # Each worker holds 6 of 24 records; 6 batches of 2 are 2 passes over them.
    parts = [records_seen(records, rank, 6, monkeypatch) for rank in range(WORKERS)]
    for i in range(WORKERS):
        for j in range(i + 1, WORKERS):
            assert not parts[i] & parts[j], f"workers {i} and {j} read the same records"
    assert sum(len(p) for p in parts) == total
