"""Train the same model for a few steps on one device and mirrored over two CPU devices.

Run as ``python -m tests._mirrored_equivalence OUT_DIR`` (a fresh process: the two CPU devices
must exist before TensorFlow starts). Writes ``OUT_DIR/single`` and ``OUT_DIR/mirrored`` model
directories, both trained ``STEPS`` steps at global batch ``2 * PER_REPLICA`` from the same initial
checkpoint, and prints a JSON line with each model's training loss on a fixed labelled batch.

The data make the two runs comparable exactly. Batch norm normalises each replica's batch with
that batch's own statistics, so a mirrored step equals a single-device step over the same global
batch only when the two replicas' images have the statistics of the whole batch. Here both
replicas of a step get the same images (so their statistics are the global batch's) with
different labels (so their gradients differ, and the average of the two is what the single device
computes over the concatenated batch).
"""

import json
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

from runtime import estimator_factory
from tests import model_helpers

SIZE = 32
NUM_CLASSES = 4
PER_REPLICA = 4
STEPS = 3


def model_function():
    return model_helpers.build_model_fn("tiny", "circle", NUM_CLASSES, embedding_size=16,
                                        gamma=32.0, learning_rate=0.1, total_steps=STEPS,
                                        warmup_steps=0, weight_decay=5e-4,
                                        log_every_n_steps=1000)


def step_data():
    """Per step: images [PER_REPLICA, S, S, 3] and the two replicas' labels."""
    rng = np.random.RandomState(0)
    steps = []
    for _ in range(STEPS):
        images = rng.uniform(-1, 1, (PER_REPLICA, SIZE, SIZE, 3)).astype(np.float32)
        first = rng.randint(0, NUM_CLASSES, PER_REPLICA).astype(np.int32)
        second = (first + 1 + rng.randint(0, NUM_CLASSES - 1, PER_REPLICA)) % NUM_CLASSES
        steps.append((images, first, second.astype(np.int32)))
    return steps


def input_fn(params=None, input_context=None):
    """Per-replica batches (images, first labels), (images, second labels), ... under a
    strategy; the two concatenated per step otherwise."""
    images, labels = [], []
    for step_images, first, second in step_data():
        if input_context is not None:
            images += [step_images, step_images]
            labels += [first, second]
        else:
            images.append(np.concatenate([step_images, step_images]))
            labels.append(np.concatenate([first, second]))
    dataset = tf.data.Dataset.from_tensor_slices(({"image": np.stack(images)}, np.stack(labels)))
    return dataset.repeat()


def training_loss(model_dir):
    """The training loss (batch statistics, weight decay included) of the latest checkpoint
    on a fixed batch; evaluation would normalise with the moving variances, which differ."""
    rng = np.random.RandomState(1)
    images = rng.uniform(-1, 1, (2 * PER_REPLICA, SIZE, SIZE, 3)).astype(np.float32)
    labels = (np.arange(2 * PER_REPLICA) % NUM_CLASSES).astype(np.int32)
    with tf.Graph().as_default():
        spec = model_function()({"image": tf.constant(images)}, tf.constant(labels),
                                tf.estimator.ModeKeys.TRAIN)
        with tf.Session() as session:
            tf.train.Saver().restore(session, tf.train.latest_checkpoint(model_dir))
            return float(session.run(spec.loss))


def write_initial_checkpoint(model_dir):
    """Step 0 of both runs: the same weights (graph-level seeds would differ between the two
    graphs, whose op counts differ)."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        images = tf.zeros([2 * PER_REPLICA, SIZE, SIZE, 3])
        labels = tf.zeros([2 * PER_REPLICA], tf.int32)
        model_function()({"image": images}, labels, tf.estimator.ModeKeys.TRAIN)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.train.Saver().save(session, os.path.join(model_dir, "model.ckpt"), global_step=0)


def main(out_dir):
    losses = {}
    for name in ("single", "mirrored"):
        model_dir = os.path.join(out_dir, name)
        write_initial_checkpoint(model_dir)
        strategy = (estimator_factory.train_distribution("mirrored", "cpu", 2)
                    if name == "mirrored" else None)
        estimator = estimator_factory.build_estimator(
            model_function(), model_dir, train_distribute=strategy,
            num_cpu_devices=2 if strategy else 1, save_checkpoints_steps=STEPS)
        estimator.train(input_fn, max_steps=STEPS)
        losses[name] = training_loss(model_dir)
    print(json.dumps(losses))


if __name__ == "__main__":
    main(sys.argv[1])
