"""Partial FC under a mirrored strategy: each replica decays the proxy rows it gathered itself.

Two replicas (2 CPU devices of one session) call the model_fn. Replica 0's batch holds classes
0-3, replica 1's classes 4-7; with 8 classes at rate 0.5 each replica samples exactly its
batch's 4 classes, so which rows a replica's loss may touch is known. The gradient of replica
k's training loss (head loss + weight decay) with respect to the class-major proxies must be
zero on the other replica's rows: the loss of a replica depends only on its own gather.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from runtime import estimator_factory
from tests import model_helpers

SIZE = 32
NUM_CLASSES = 8
PER_REPLICA = 4
WEIGHT_DECAY = 0.5  # large, so a foreign row's decay gradient is plain to see


def _replica_batches():
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (2, PER_REPLICA, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.arange(2 * PER_REPLICA, dtype=np.int32).reshape(2, PER_REPLICA)
    return images, labels


def test_each_replica_decays_only_the_proxy_rows_it_sampled():
    strategy = estimator_factory.train_distribution("mirrored", "cpu", 2)
    fn = model_helpers.build_model_fn(
        "tiny", "circle", NUM_CLASSES, embedding_size=16, gamma=32.0, learning_rate=0.1,
        total_steps=10, warmup_steps=0, weight_decay=WEIGHT_DECAY, partial_fc_rate=0.5,
        log_every_n_steps=1000, check_finite_loss=False)
    all_images, all_labels = _replica_batches()
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        images, labels = tf.constant(all_images), tf.constant(all_labels)

        def replica_loss():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            spec = fn({"image": tf.gather(images, replica)}, tf.gather(labels, replica),
                      tf.estimator.ModeKeys.TRAIN)
            return spec.loss

        with strategy.scope():
            tf.train.get_or_create_global_step()
            per_replica = strategy.extended.call_for_each_replica(replica_loss)
        losses = strategy.experimental_local_results(per_replica)
        assert len(losses) == 2
        proxies = [v for v in tf.global_variables() if "class_proxies" in v.op.name
                   and "Momentum" not in v.op.name]
        # Every replica's copy of the mirrored variable (the replica reads its own).
        copies = []
        for variable in proxies:
            copies += list(getattr(variable, "values", None) or
                           strategy.experimental_local_results(variable))
        gradients = []
        for loss in losses:
            parts = [tf.convert_to_tensor(g) for g in tf.gradients(loss, copies)
                     if g is not None]
            gradients.append(tf.add_n(parts))
        config = estimator_factory.session_config("cpu", "fp32", num_cpu_devices=2)
        with tf.Session(config=config) as session:
            session.run(tf.global_variables_initializer())
            values = session.run(gradients)
    for replica, gradient in enumerate(values):
        own = all_labels[replica]
        foreign = all_labels[1 - replica]
        assert np.abs(gradient[foreign]).max() == 0.0, (replica, np.abs(gradient[foreign]).max())
        assert np.all(np.abs(gradient[own]).max(axis=1) > 0), replica
