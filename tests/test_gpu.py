"""Training on a GPU (``-m gpu``; scripts/gpu_check.sh runs these where TensorFlow sees one)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from benchmarks import common, train_step
from runtime import estimator_factory

pytestmark = pytest.mark.gpu


def _gpu_or_skip():
    if not estimator_factory.visible_gpus():  # TF 1.15 and 2.x
        pytest.skip("TensorFlow sees no GPU")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_training_step_runs_on_the_gpu_with_a_finite_falling_loss(precision):
    _gpu_or_skip()
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        features, labels = tf.data.make_one_shot_iterator(
            train_step.synthetic_batches(16, 8, common.IMAGE_SIZE)).get_next()
        spec = common.circle_model_fn("tiny", 8, precision=precision, learning_rate=0.05)(
            features, labels, tf.estimator.ModeKeys.TRAIN)
        init = tf.global_variables_initializer()
    metadata = tf.RunMetadata()
    with tf.Session(graph=graph, config=common.session_config()) as session:
        session.run(init)
        losses = [session.run([spec.train_op, spec.loss])[1] for _ in range(20)]
        session.run(spec.train_op, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                    run_metadata=metadata)
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # one fixed batch: it must fit it
    devices = [stats.device for stats in metadata.step_stats.dev_stats]
    assert any("GPU" in device.upper() for device in devices), devices
