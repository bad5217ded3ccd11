"""export.onnx_graph.fuse_prelu: tf2onnx's five-node PReLU becomes one PRelu with the same
values (checked in ONNX Runtime against a numpy PReLU), and nothing else is touched."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
helper = onnx.helper

from export import onnx_graph  # noqa: E402

CHANNELS = 4
SLOPE = np.array([0.25, -0.5, 1.5, 0.0], np.float32).reshape(CHANNELS, 1, 1)


def _relu_form_model(extra_output=None, slope_first=False):
    """x [N, C, 3, 3] -> relu(x) - slope * relu(-x) -> Add(·, 1): tf2onnx's layout of it."""
    mul_inputs = ["slope", "r2"] if slope_first else ["r2", "slope"]
    nodes = [helper.make_node("Relu", ["x"], ["r1"]), helper.make_node("Neg", ["x"], ["n"]),
             helper.make_node("Relu", ["n"], ["r2"]), helper.make_node("Mul", mul_inputs, ["m"]),
             helper.make_node("Sub", ["r1", "m"], ["p"]),
             helper.make_node("Add", ["p", "one"], ["y"])]
    shape = ["n", CHANNELS, 3, 3]
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info(extra_output, onnx.TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes, "prelu", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        outputs,
        initializer=[onnx.numpy_helper.from_array(SLOPE, "slope"),
                     onnx.numpy_helper.from_array(np.ones([1], np.float32), "one")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def _run(model, x):
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


@pytest.mark.parametrize("slope_first", [False, True])
def test_relu_form_becomes_one_prelu_with_the_same_values(slope_first):
    model = _relu_form_model(slope_first=slope_first)
    assert onnx_graph.fuse_prelu(model) == 1
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["PRelu", "Add"]
    x = np.random.RandomState(0).standard_normal((2, CHANNELS, 3, 3)).astype(np.float32)
    expected = np.where(x >= 0, x, SLOPE * x) + 1.0  # PReLU, written independently
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-6, atol=1e-6)


def test_an_intermediate_used_elsewhere_is_left_alone():
    model = _relu_form_model(extra_output="r2")
    assert onnx_graph.fuse_prelu(model) == 0
    assert len(model.graph.node) == 6


def test_relu_minus_anything_else_is_left_alone():
    model = _relu_form_model()
    model.graph.node[1].op_type = "Abs"  # relu(x) - slope * relu(|x|): not a PReLU
    assert onnx_graph.fuse_prelu(model) == 0
