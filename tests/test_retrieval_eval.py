"""The retrieval EVAL protocol: image records in the pair layout, the injected metric, the
``--eval_protocol=retrieval`` run of estimator_main end to end."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data_tools import input_fns
from evaluation import identification as identification_protocol
from evaluation import retrieval
from evaluation import retrieval_metric as retrieval_eval
from export import embedder as embed
from tests import records_helpers as rh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval_records")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=6, size=SIZE)
    # Held-out identities: 9 images (odd: the last record is paired with itself), 2 shards.
    rh.write_image_records(str(root / "heldout"), num_classes=3, per_class=3, size=SIZE)
    rh.write_pair_records(str(root / "pairs"), num_pairs=10, size=SIZE, n_folds=2)
    return root


def pair_batches(records_dir, batch_size, flip_tta=False):
    with tf.Graph().as_default():
        dataset = input_fns.image_pairs_input_fn_builder(
            str(records_dir), image_size=SIZE, flip_tta=flip_tta, batch_size=batch_size)(
                params={})
        return rh.run_dataset(dataset)


def test_pair_layout_covers_every_record_once(records):
    labels = input_fns.image_record_labels(str(records / "heldout"))
    assert len(labels) == 9
    batches = pair_batches(records / "heldout", batch_size=4, flip_tta=True)
    assert len(batches) == 2  # 5 pairs, padded to 8
    features = {key: np.concatenate([b[0][key] for b in batches]) for key in batches[0][0]}
    assert features["pair_index"].tolist() == [0, 1, 2, 3, 4, -1, -1, -1]
    assert features["weight"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    same = [int(labels[2 * i] == labels[min(2 * i + 1, 8)]) for i in range(5)]
    assert features["issame"][:5].tolist() == same
    np.testing.assert_array_equal(features["image1"][4], features["image2"][4])  # odd last
    np.testing.assert_array_equal(features["image1_flip"], features["image1"][:, :, ::-1])
    assert features["image1"].shape == (8, SIZE, SIZE, 3)


def test_metric_fn_equals_numpy_metrics(records):
    labels = input_fns.image_record_labels(str(records / "heldout"))
    graph = tf.Graph()
    with graph.as_default():
        dataset = input_fns.image_pairs_input_fn_builder(
            str(records / "heldout"), image_size=SIZE, flip_tta=False, batch_size=2)(params={})
        features, _ = tf.data.make_one_shot_iterator(dataset).get_next()
        projection = tf.constant(np.random.RandomState(0).randn(SIZE * SIZE * 3, 8), tf.float32)

        def embed_fn(images):
            return tf.matmul(tf.reshape(images, [-1, SIZE * SIZE * 3]), projection)

        e1, e2 = embed_fn(features["image1"]), embed_fn(features["image2"])
        metric_ops = retrieval_eval.retrieval_metrics_fn_builder(labels, ks=(1, 5, 10))(
            embeddings1=e1, embeddings2=e2, issame=features["issame"],
            pair_index=features["pair_index"], weight=features["weight"])
        update = tf.group(*[op for _, op in metric_ops.values()])
        values = {k: v for k, (v, _) in metric_ops.items()}
        with tf.Session() as session:
            session.run(tf.local_variables_initializer())
            rows = {}
            while True:
                try:
                    a, b, index, _ = session.run([e1, e2, features["pair_index"], update])
                except tf.errors.OutOfRangeError:
                    break
                for i, pair in enumerate(index):
                    if pair >= 0:
                        rows[2 * pair] = a[i]
                        if 2 * pair + 1 < 9:
                            rows[2 * pair + 1] = b[i]
            got = session.run(values)
    expected = retrieval.retrieval_metrics(np.array([rows[i] for i in range(9)]), labels)
    for name in ("recall@1", "recall@5", "recall@10", "r_precision", "map@r"):
        assert got[f"retrieval/{name}"] == pytest.approx(expected[name], abs=1e-6), name
    assert got["retrieval/num_queries"] == 9


def test_metric_fn_refuses_missing_records():
    fn = retrieval_eval.retrieval_metrics_fn_builder([0, 0, 1, 1])
    graph = tf.Graph()
    with graph.as_default():
        ops = fn(embeddings1=tf.ones([1, 3]), embeddings2=tf.ones([1, 3]),
                 issame=tf.constant([1]), pair_index=tf.constant([0]), weight=tf.constant([1.0]))
        value, update = ops["retrieval/map@r"]
        with tf.Session() as session:
            session.run(tf.local_variables_initializer())
            session.run(update)
            with pytest.raises(tf.errors.InvalidArgumentError, match="saw 2 of 4 images"):
                session.run(value)


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "estimator_main.py"] + list(args), cwd=ROOT, env=env,
                          capture_output=True, encoding="utf-8", timeout=600, check=False)


NET = ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
       "--save_checkpoints_steps=10", "--gamma=32", "--eval_batch_size=4",
       "--eval_throttle_secs=0", "--noprogress"]


@pytest.mark.slow
def test_train_and_evaluate_with_the_retrieval_protocol(records, tmp_path):
    model_dir = str(tmp_path / "run")
    proc = run_cli("--mode=train_and_evaluate", "--eval_protocol=retrieval",
                   f"--train_records={records / 'train'}",
                   f"--eval_records={records / 'heldout'}", f"--model_dir={model_dir}",
                   "--train_steps=20", *NET)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert re.search(r"Retrieval at step 20: recall@1 \d\.\d{4}", proc.stdout), proc.stdout
    with open(os.path.join(model_dir, "eval", "report.json")) as f:
        report = json.load(f)
    assert report["protocol"] == "retrieval" and report["global_step"] == 20
    assert report["num_queries"] == 9
    best = os.path.join(model_dir, "export", "best")
    (version,) = [d for d in os.listdir(best) if d.isdigit()][-1:]
    with open(os.path.join(best, version, "assets.extra", "report.json")) as f:
        assert "map@r" in json.load(f)
    assert os.listdir(os.path.join(model_dir, "export", "latest"))
    assert os.listdir(os.path.join(model_dir, "frozen"))
    assert os.path.isdir(os.path.join(model_dir, "eval_retrieval"))

    # The latest export (step 20), run offline with flip TTA on the same records, gives the
    # report's numbers (the best export may be step 10's).
    encoded, identities, _ = identification_protocol.read_image_records(
        identification_protocol.record_files(str(records / "heldout")))
    with embed.load_saved_model(os.path.join(model_dir, "export", "latest")) as embedder:
        embeddings = embedder.embed_bytes(encoded, flip=True)
    offline = retrieval.retrieval_metrics(embeddings, identities)
    for name in ("recall@1", "recall@5", "r_precision", "map@r"):
        assert report[name] == pytest.approx(offline[name], abs=1e-6), name


def test_retrieval_protocol_needs_image_records(records, tmp_path):
    proc = run_cli("--mode=evaluate", "--eval_protocol=retrieval",
                   f"--eval_records={records / 'pairs'}",
                   f"--train_records={records / 'train'}",
                   f"--model_dir={tmp_path / 'run'}", *NET)
    assert proc.returncode == 1
    assert re.search(r"--eval_protocol=retrieval needs image records of held-out identities; "
                     r"--eval_records=\S+ holds pairs records", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
