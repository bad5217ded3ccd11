"""export.graph_rewrites.keras_prelu_form: the exports' ``relu(x) - alpha * relu(-x)`` becomes the
form TF Lite fuses into one PRELU op, with the same values (checked in TensorFlow and in TF Lite
against a numpy PReLU), and nothing else is touched."""

import collections

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from export import deploy_formats, graph_rewrites

ALPHA = np.array([0.25, -0.5, 1.5, 0.0], np.float32)
SHAPE = [1, 5, 5, len(ALPHA)]


def _numpy_prelu(x):
    return np.where(x >= 0, x, ALPHA * x)


def _graph_def(extra_use=False):
    """input -> relu(x) - alpha * relu(-x) (+ 1) -> output, as model.layers.prelu builds it
    (alpha a constant behind an Identity, as a frozen variable is)."""
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, SHAPE, name="input")
        alpha = tf.identity(tf.constant(ALPHA), name="alpha_read")
        negative = tf.nn.relu(-x)
        y = tf.nn.relu(x) - alpha * negative
        if extra_use:  # another user of relu(-x): the converter's pattern would not apply
            y = y + negative
        tf.identity(y + 1.0, name="output")
    return graph.as_graph_def()


def _run(graph_def, x):
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.Session(graph=graph) as session:
            return session.run("output:0", {"input:0": x})


def _inputs():
    x = np.random.RandomState(0).randn(*SHAPE).astype(np.float32) * 3
    x[0, 0, 0] = 0.0  # the kink itself
    return x


def test_rewrite_keeps_every_value_to_the_bit():
    x = _inputs()
    graph_def = _graph_def()
    before = _run(graph_def, x)
    assert graph_rewrites.keras_prelu_form(graph_def) == 1
    ops = collections.Counter(node.op for node in graph_def.node)
    assert ops["Sub"] == 0 and ops["AddV2"] == 2
    after = _run(graph_def, x)
    np.testing.assert_array_equal(after, before)
    np.testing.assert_allclose(after, _numpy_prelu(x) + 1.0, rtol=1e-6)


def test_an_intermediate_used_elsewhere_is_left_alone():
    graph_def = _graph_def(extra_use=True)
    serialized = graph_def.SerializeToString()
    assert graph_rewrites.keras_prelu_form(graph_def) == 0
    assert graph_def.SerializeToString() == serialized


@pytest.mark.skipif(not deploy_formats.tflite_available(), reason="needs TensorFlow 2's tf.lite")
def test_tflite_writes_one_prelu_with_the_same_values(tmp_path):
    graph_def = _graph_def()
    assert graph_rewrites.keras_prelu_form(graph_def) == 1
    path = tmp_path / "frozen.pb"
    path.write_bytes(graph_def.SerializeToString())
    converter = tf.lite.TFLiteConverter.from_frozen_graph(str(path), ["input"], ["output"],
                                                          input_shapes={"input": SHAPE})
    lite = deploy_formats.tflite_module()
    interpreter = lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    assert ops["PRELU"] == 1 and not ops["NEG"] and not ops["RELU"] and not ops["SUB"], ops
    x = _inputs()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    result = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(result, _numpy_prelu(x) + 1.0, rtol=1e-6)


# --- batch-free reshapes -------------------------------------------------------------------------

GROUPED = [4, 4, 6]  # H, W, C of the reshaped input: channels summed in pairs, as conv2_dw


def _grouped_sum_graph_def(extra_use=False):
    """input [N, 4, 4, 6] -> reshape to [N, 4, 4, 3, 2] -> sum over pairs -> [N, 4, 4, 3] -> x2,
    the batch read from the input's Shape as model.layers' reshapes do when it is open."""
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None] + GROUPED, name="input")
        batch = tf.shape(x)[0]
        target = tf.stack([batch, 4, 4, 3, 2])
        y = tf.reduce_sum(tf.reshape(x, target), axis=4)
        y = tf.reshape(y, tf.stack([batch, 4, 4, 3])) * 2.0
        if extra_use:  # the Pack's batch also feeds an op that is not a reshape
            y = y + tf.cast(tf.reduce_sum(target), tf.float32)
        tf.identity(y, name="output")
    return graph.as_graph_def()


def _numpy_grouped(x):
    return x.reshape(len(x), 4, 4, 3, 2).sum(axis=4) * 2.0


def _grouped_inputs(batch):
    return np.random.RandomState(batch).randn(batch, *GROUPED).astype(np.float32)


def test_batch_free_reshapes_keep_the_values():
    graph_def = _grouped_sum_graph_def()
    assert graph_rewrites.batch_free_reshapes(graph_def) == 2
    for batch in (1, 5):
        x = _grouped_inputs(batch)
        np.testing.assert_allclose(_run(graph_def, x), _numpy_grouped(x), rtol=1e-6)


def test_a_pack_with_another_user_is_left_alone():
    graph_def = _grouped_sum_graph_def(extra_use=True)
    # The first reshape's Pack also feeds reduce_sum; the second's is its own.
    assert graph_rewrites.batch_free_reshapes(graph_def) == 1
    x = _grouped_inputs(2)
    np.testing.assert_allclose(_run(graph_def, x), _numpy_grouped(x) + 2 + 4 + 4 + 3 + 2,
                               rtol=1e-6)


def _convert_at_batch_1(graph_def, path):
    path.write_bytes(graph_def.SerializeToString())
    converter = tf.lite.TFLiteConverter.from_frozen_graph(
        str(path), ["input"], ["output"], input_shapes={"input": [1] + GROUPED})
    tflite = path.with_suffix(".tflite")
    tflite.write_bytes(converter.convert())
    return str(tflite)


@pytest.mark.skipif(not deploy_formats.tflite_available(), reason="needs TensorFlow 2's tf.lite")
def test_the_tflite_runner_batches_a_batch_free_model_and_falls_back_otherwise(tmp_path):
    from export import format_checks  # noqa: PLC0415

    free = _grouped_sum_graph_def()
    graph_rewrites.batch_free_reshapes(free)
    x = _grouped_inputs(7)
    expected = _numpy_grouped(x).reshape(7, -1)
    fixed_path = _convert_at_batch_1(_grouped_sum_graph_def(), tmp_path / "fixed.pb")
    free_path = _convert_at_batch_1(free, tmp_path / "free.pb")
    for path, batches in ((free_path, True), (fixed_path, False)):
        runner = format_checks.TFLiteRunner(path)
        # One invocation of 7 (batch-free) or 7 of one (the batch fixed at 1 by the converter).
        result = runner(x).reshape(7, -1)
        assert runner.batched is batches
        np.testing.assert_allclose(result, expected, rtol=1e-5)
        single = runner(x[:1]).reshape(1, -1)  # back to batch 1 after a batch of 7
        np.testing.assert_allclose(single, expected[:1], rtol=1e-5)
        np.testing.assert_allclose(runner(x[:3]).reshape(3, -1), expected[:3], rtol=1e-5)


# --- grouped convolutions ------------------------------------------------------------------------

def _grouped_conv_graph_def(strides=1, padding="SAME"):
    """input [1, 6, 6, 8] -> model.layers.conv2d(filters=12, groups=4) (depthwise + sum, as the
    exports build it) -> output, its variables frozen."""
    from model import layers  # noqa: PLC0415

    with tf.Graph().as_default() as graph:
        tf.set_random_seed(1)
        x = tf.placeholder(tf.float32, [None, 6, 6, 8], name="input")
        y = layers.conv2d(x, 12, 3, strides=strides, padding=padding, groups=4, name="grouped")
        tf.identity(y, name="output")
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            return tf.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), ["output"])


@pytest.mark.skipif(not deploy_formats.tflite_available(), reason="needs TensorFlow 2's tf.lite")
@pytest.mark.parametrize("strides, padding", [(1, "SAME"), (2, 1)])
def test_grouped_convolution_becomes_one_grouped_conv_2d(tmp_path, strides, padding):
    graph_def = _grouped_conv_graph_def(strides, padding)
    x = np.random.RandomState(3).randn(1, 6, 6, 8).astype(np.float32)
    expected = _run(graph_def, x)  # the depthwise + sum chain, in TensorFlow
    assert graph_rewrites.grouped_convolutions(graph_def) == 1
    (conv,) = [node for node in graph_def.node if node.name.endswith("grouped/Reshape_3")]
    assert conv.op == "Conv2D"
    path = tmp_path / "frozen.pb"
    path.write_bytes(graph_def.SerializeToString())
    converter = tf.lite.TFLiteConverter.from_frozen_graph(str(path), ["input"], ["output"],
                                                          input_shapes={"input": [1, 6, 6, 8]})
    interpreter = deploy_formats.tflite_module().Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    assert ops["CONV_2D"] == 1 and not ops["SUM"] and not ops["DEPTHWISE_CONV_2D"], ops
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    result = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


def test_a_depthwise_convolution_is_not_a_grouped_one():
    from model import layers  # noqa: PLC0415

    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None, 6, 6, 8], name="input")
        tf.identity(layers.conv2d(x, 16, 3, groups=8), name="output")  # multiplier 2, no sum
    graph_def = graph.as_graph_def()
    assert graph_rewrites.grouped_convolutions(graph_def) == 0


@pytest.mark.skipif(not deploy_formats.onnx_available(), reason="needs tf2onnx and onnxruntime")
def test_tf2onnx_writes_the_grouped_convolution_as_one_grouped_conv():
    import onnxruntime  # noqa: PLC0415
    import tf2onnx  # noqa: PLC0415

    graph_def = _grouped_conv_graph_def()
    x = np.random.RandomState(4).randn(3, 6, 6, 8).astype(np.float32)
    expected = _run(graph_def, x)
    assert graph_rewrites.grouped_convolutions(graph_def) == 1
    model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=["input:0"],
                                              output_names=["output:0"], opset=15)
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert ops["Conv"] == 1 and not ops["ReduceSum"], ops
    (conv,) = [node for node in model.graph.node if node.op_type == "Conv"]
    assert {a.name: a.i for a in conv.attribute}.get("group") == 4
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    result = session.run(None, {"input:0": x})[0]
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)
