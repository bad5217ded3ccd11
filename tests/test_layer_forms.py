"""The graph forms layers.conv2d and layers.prelu pick for speed (issue 29): grouped
convolutions as one grouped Conv2D in training, bf16 grouped/depthwise convolutions in float32,
bf16 PReLU without selects; each against numpy or the other form."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model import layers
from model.backbones import get_backbone
from runtime import estimator_factory
from tests.test_backbones import _reference_conv


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_native_grouped_conv2d_trains_as_the_depthwise_form(dtype):
    """Same outputs and gradients (input and kernel) from one variable, both graph forms."""
    if dtype == tf.bfloat16 and not estimator_factory.bfloat16_supported():
        pytest.skip("no bfloat16 CPU kernels in this TensorFlow")
    rng = np.random.RandomState(0)
    x = rng.normal(size=(2, 9, 9, 8)).astype(np.float32)
    upstream = rng.normal(size=(2, 5, 5, 12)).astype(np.float32)
    results = []
    for native in (False, True):
        with tf.Graph().as_default():
            tf.set_random_seed(0)
            inputs = tf.constant(x)
            y = layers.conv2d(tf.cast(inputs, dtype), 12, 3, 2, padding=1, groups=4,
                              native_groups=native, name="conv")
            y = tf.cast(y, tf.float32)
            kernel = tf.trainable_variables()[0]
            grads = tf.gradients(y, [inputs, kernel], grad_ys=upstream)
            with tf.Session() as session:
                session.run(tf.global_variables_initializer())
                results.append(session.run([y, kernel] + grads))
    tolerance = 1e-4 if dtype == tf.float32 else 0.05
    for depthwise_form, grouped in zip(*results):
        scale = max(1.0, float(np.abs(depthwise_form).max()))
        np.testing.assert_allclose(grouped / scale, depthwise_form / scale, atol=tolerance)


@pytest.mark.parametrize("groups, native", [(4, False), (4, True), (8, False)])
def test_bf16_grouped_and_depthwise_conv2d_compute_in_float32(groups, native):
    """bf16 in, bf16 out, float32 inside (layers.conv2d says why), numpy's values."""
    if not estimator_factory.bfloat16_supported():
        pytest.skip("no bfloat16 CPU kernels in this TensorFlow")
    x = np.random.RandomState(0).normal(size=(2, 7, 7, 8)).astype(np.float32)
    x = x.astype(tf.bfloat16.as_numpy_dtype).astype(np.float32)
    with tf.Graph().as_default() as graph:
        y = layers.conv2d(tf.cast(tf.constant(x), tf.bfloat16), 8, 3, 2, padding=1,
                          groups=groups, native_groups=native, name="conv")
        assert y.dtype == tf.bfloat16
        convs = [op for op in graph.get_operations()
                 if op.type in ("Conv2D", "DepthwiseConv2dNative")]
        assert convs and all(op.get_attr("T") == tf.float32 for op in convs)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            got, kernel = session.run([tf.cast(y, tf.float32), tf.trainable_variables()[0]])
    expected = _reference_conv(x, kernel, 2, [(1, 1)] * 2, groups)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=2e-2)


def test_mobilefacenet_trains_its_grouped_conv_natively_and_exports_it_depthwise():
    def conv_ops(is_training):
        with tf.Graph().as_default() as graph:
            get_backbone("mobilefacenet")(tf.zeros([2, 112, 112, 3]), is_training=is_training)
            ops = [op for op in graph.get_operations() if "conv2_dw/" in op.name]
        return sorted({op.type for op in ops if "Conv2d" in op.type or "Conv2D" in op.type})

    assert conv_ops(False) == ["DepthwiseConv2dNative"]
    assert conv_ops(True) == (["Conv2D"] if layers.grouped_conv2d_supported()
                              else ["DepthwiseConv2dNative"])


@pytest.mark.parametrize("is_training", [True, False])
def test_bf16_prelu_matches_numpy_without_bf16_selects(is_training):
    """bf16 PReLU (training and inference) has no bfloat16 select, the op TensorFlow's CPU
    runs element by element (see layers.prelu), and gives numpy's values and gradients."""
    if not estimator_factory.bfloat16_supported():
        pytest.skip("no bfloat16 CPU kernels in this TensorFlow")
    rng = np.random.RandomState(0)
    x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    alpha = np.array([0.25, -0.5, 0.0, 2.0], np.float32)
    to_bf16 = tf.bfloat16.as_numpy_dtype
    x = x.astype(to_bf16).astype(np.float32)  # exactly representable inputs
    with tf.Graph().as_default() as graph:
        inputs = tf.constant(x)
        y = layers.prelu(tf.cast(inputs, tf.bfloat16), name="act", is_training=is_training)
        (variable,) = tf.trainable_variables()
        grads = tf.gradients(tf.cast(y, tf.float32), [inputs, variable], grad_ys=upstream)
        selects = [op for op in graph.get_operations() if op.type in ("Select", "SelectV2")
                   and op.get_attr("T") == tf.bfloat16]
        assert selects == []
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            variable.load(alpha, session)
            got, got_dx, got_dalpha = session.run([tf.cast(y, tf.float32)] + grads)
    np.testing.assert_allclose(got, np.where(x > 0, x, alpha * x), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(got_dx, np.where(x > 0, upstream, alpha * upstream), rtol=1e-2,
                               atol=1e-2)
    np.testing.assert_allclose(got_dalpha, (np.minimum(x, 0) * upstream).sum((0, 1, 2)),
                               rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_batch_norm_trains_on_batch_statistics_in_every_dtype(dtype):
    """Training normalises with the batch's own mean and variance and registers the two
    moving-average updates, in bfloat16 as in float32 (a bf16 training graph once normalised
    with the frozen moving statistics and never updated them: a fresh network collapsed to
    zero embeddings). numpy reference: (x - mean) / sqrt(var + eps) * gamma + beta."""
    if dtype == tf.bfloat16 and not estimator_factory.bfloat16_supported():
        pytest.skip("no bfloat16 CPU kernels in this TensorFlow")
    rng = np.random.RandomState(0)
    x = (rng.normal(size=(4, 5, 5, 6)) * 3.0 + 7.0).astype(np.float32)
    with tf.Graph().as_default():
        y = layers.batch_norm(tf.cast(tf.constant(x), dtype), is_training=True, momentum=0.9,
                              name="bn")
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        moving_mean = [v for v in tf.global_variables() if "moving_mean" in v.name][0]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            out = session.run(tf.cast(y, tf.float32))
            session.run(updates)
            mean_after = session.run(moving_mean)
    assert len(updates) == 2
    stored = x if dtype == tf.float32 else rounded_to_bf16(x)
    mean = stored.mean(axis=(0, 1, 2))
    expected = (stored - mean) / np.sqrt(stored.var(axis=(0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-4 if dtype == tf.float32 else 0.05)
    np.testing.assert_allclose(mean_after, 0.1 * mean, rtol=1e-3 if dtype == tf.float32 else 0.02)


def rounded_to_bf16(x):
    """``x`` rounded to bfloat16 and back (the input the bf16 graph normalises)."""
    with tf.Graph().as_default(), tf.Session() as session:
        return session.run(tf.cast(tf.cast(tf.constant(x), tf.bfloat16), tf.float32))
