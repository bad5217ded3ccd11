"""Evaluation cost: embedding an LFW-sized pair set with flip TTA, and ``evaluate()``.

Embedding runs the verification input_fn (``pairs_input_fn_builder``: decode, resize, normalise,
flipped copies) and the model's flip-TTA embedding (``flip_tta_embeddings``, batch norm in
inference mode) on pair records of generated 112x112 JPEGs. It is measured on a scaled-down set
(600 pairs: one LFW fold) with the ``tiny`` backbone and extrapolated linearly to 6,000 pairs
(the pass is a fixed cost per pair after the warm-up). ``evaluate()`` runs on 6,000 pairs of
random 512-d embeddings in LFW's layout (10 folds of 300 matched + 300 mismatched pairs).
"""

import argparse
import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from data_tools import input_fns, schema
from evaluation import pair_specs, verification
from model import model_fn as model_fn_lib

LFW_PAIRS = 6000
PAIRS_PER_FOLD = 600
BATCH = 64


def write_pair_records(path, num_pairs, seed=0):
    """One pair-record file of ``num_pairs`` pairs of generated JPEGs in LFW's fold layout."""
    rng = np.random.RandomState(seed)
    with tf.io.TFRecordWriter(path) as writer:
        for index in range(num_pairs):
            images = []
            for side in range(2):
                data = common.jpeg_bytes(common.face_like_pixels(rng))
                images.append({"encoded": data, "format": "jpeg", "height": common.IMAGE_SIZE,
                               "width": common.IMAGE_SIZE, "channels": 3,
                               "identity": f"id{2 * index + side:05d}",
                               "filename": f"{index:05d}_{side}.jpg"})
            issame = (index % PAIRS_PER_FOLD) < PAIRS_PER_FOLD // 2
            writer.write(schema.pair_example(index, index // PAIRS_PER_FOLD, issame, *images))
    return path


def time_embedding(records, num_pairs, backbone, batch):
    """Seconds of one pass embedding every pair (both images and their mirror images)."""
    graph = tf.Graph()
    with graph.as_default():
        dataset = input_fns.pairs_input_fn_builder(records, flip_tta=True, num_pairs=num_pairs,
                                                   batch_size=batch)(params={})
        iterator = tf.data.make_initializable_iterator(dataset)
        features, _ = iterator.get_next()

        def embed_fn(images):
            return tf.nn.l2_normalize(model_fn_lib.embed(images, backbone, False, 512), axis=1)

        images = tf.concat([features["image1"], features["image2"]], axis=0)
        flipped = tf.concat([features["image1_flip"], features["image2_flip"]], axis=0)
        embeddings = pair_specs.flip_tta_embeddings(images, flipped, embed_fn)
        init = tf.global_variables_initializer()
    with tf.Session(graph=graph, config=common.session_config()) as session:
        session.run(init)
        session.run(iterator.initializer)
        session.run(embeddings)  # warm-up
        session.run(iterator.initializer)
        start = time.perf_counter()
        count = 0
        while True:
            try:
                count += session.run(embeddings).shape[0] // 2
            except tf.errors.OutOfRangeError:
                break
        seconds = time.perf_counter() - start
    expected = -(-num_pairs // batch) * batch
    if count != expected:
        raise RuntimeError(f"embedded {count} pairs, expected {expected}")
    return seconds


def time_evaluate(num_pairs=LFW_PAIRS, repeats=3):
    """Seconds of ``verification.evaluate`` on ``num_pairs`` random 512-d pairs (best of)."""
    rng = np.random.RandomState(0)
    embeddings1 = rng.standard_normal((num_pairs, 512)).astype(np.float32)
    embeddings2 = rng.standard_normal((num_pairs, 512)).astype(np.float32)
    issame = (np.arange(num_pairs) % PAIRS_PER_FOLD) < PAIRS_PER_FOLD // 2
    return common.timed(lambda: verification.evaluate(embeddings1, embeddings2, issame),
                        repeats=repeats)


def run(quick=False, workdir=None, backbone="tiny"):
    """Measure and print; returns the JSON dict."""
    measured_pairs = 32 if quick else PAIRS_PER_FOLD
    batch = 16 if quick else BATCH
    with common.scratch_dir(workdir, "bench_eval_") as scratch:
        records = os.path.join(scratch, f"pairs_{measured_pairs}.tfrecord")
        if not os.path.exists(records):
            write_pair_records(records, measured_pairs)
        seconds = time_embedding(records, measured_pairs, backbone, batch)
        per_pair = seconds / measured_pairs
        evaluate_pairs = 600 if quick else LFW_PAIRS
        return common.emit("evaluation", {
            "backbone": backbone, "batch": batch, "flip_tta": True,
            "measured_pairs": measured_pairs,
            "embed_seconds_measured": common.rounded(seconds, 2),
            "embed_images_per_s": common.rounded(4 * measured_pairs / seconds),
            "embed_seconds_6000_pairs_extrapolated": common.rounded(per_pair * LFW_PAIRS, 1),
            "evaluate_pairs": evaluate_pairs,
            "evaluate_seconds": common.rounded(time_evaluate(evaluate_pairs), 3),
        })


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--backbone", default="tiny")
    args = parser.parse_args(argv)
    run(quick=args.quick, workdir=args.workdir, backbone=args.backbone)


if __name__ == "__main__":
    main()
