"""Rewrites of the frozen GraphDef before TF Lite (``deploy_formats.convert_tflite``: all three)
and tf2onnx (``deploy_formats.convert_onnx``: :func:`grouped_convolutions`) convert it.

The exported backbones build PReLU as ``relu(x) - alpha * relu(-x)`` (``model.layers.prelu``),
with ``alpha`` of shape [C]. TF Lite's converter fuses a PReLU into its one ``PRELU`` op only in
the form Keras writes, ``relu(x) + (-alpha) * relu(-x)`` with ``alpha`` of shape [1, 1, C]
(measured on TF 2.15: the subtraction, or ``alpha`` of shape [C] or [1, 1, 1, C], stays five ops:
NEG, RELU, RELU, MUL, SUB). Unfused, MobileFaceNet's 33 PReLUs are 165 passes over their
activations; in an int8 model worse, since NEG has no int8 kernel and each one runs in float
between a DEQUANTIZE and a QUANTIZE. :func:`keras_prelu_form` rewrites every match into the
Keras form, the same values to the bit (``a - b`` is ``a + (-b)`` in IEEE arithmetic).

``model.layers.conv2d`` builds a grouped convolution (MobileFaceNet's 64-group ``conv2_dw``,
two channels per group) as a depthwise convolution with a channel multiplier, a reshape, a sum
over each group's inputs and a reshape back, for TF 1.15 and NPUs without grouped ``Conv2D``.
In TF Lite that SUM is not delegated to XNNPACK: it splits the graph in two and runs in TF
Lite's own single-threaded reduction, 4.8 ms of a 14 ms MobileFaceNet on one core (loaded; the
grouped CONV_2D instead: 1.6 ms). :func:`grouped_convolutions` puts back the one grouped
``Conv2D`` of the same kernel, which TF Lite converts to a grouped CONV_2D that XNNPACK runs,
and tf2onnx to one grouped ``Conv`` (instead of a Conv, two Transposes, a ReduceSum and an
unfused BatchNormalization).

The converter fixes the batch at 1, and folds every reshape whose target names the batch as a
dynamic dimension (``model.layers`` keeps the others static: MobileFaceNet's grouped
``conv2_dw``) into a constant shape starting with 1, so that the model cannot be resized to a
larger batch (``Interpreter.resize_tensor_input``: "num_input_elements != num_output_elements").
:func:`batch_free_reshapes` writes -1 there instead, which the reshape infers to the same batch.
"""

import numpy as np
import tensorflow.compat.v1 as tf


def _node_name(tensor_name):
    return tensor_name.split(":")[0].lstrip("^")


def _prelu_matches(graph_def):
    """``(sub, mul, negative_relu, alpha input)`` of every ``relu(x) - alpha * relu(-x)`` whose
    intermediates are used only there (the converter's pattern wants single uses)."""
    nodes = {node.name: node for node in graph_def.node}
    uses = {}
    for node in graph_def.node:
        for name in node.input:
            uses[_node_name(name)] = uses.get(_node_name(name), 0) + 1
    matches = []
    for sub in graph_def.node:
        if sub.op != "Sub" or len(sub.input) != 2:
            continue
        relu, mul = nodes.get(_node_name(sub.input[0])), nodes.get(_node_name(sub.input[1]))
        if relu is None or mul is None or relu.op != "Relu" or mul.op != "Mul":
            continue
        for index in (0, 1):
            negative_relu = nodes.get(_node_name(mul.input[index]))
            if negative_relu is not None and negative_relu.op == "Relu":
                alpha = mul.input[1 - index]
                break
        else:
            continue
        neg = nodes.get(_node_name(negative_relu.input[0]))
        if neg is None or neg.op != "Neg" or neg.input[0] != relu.input[0]:
            continue
        if any(uses.get(node.name) != 1 for node in (relu, mul, negative_relu, neg)):
            continue
        matches.append((sub, mul, negative_relu, alpha))
    return matches


def keras_prelu_form(graph_def):
    """Rewrite (in place) every ``relu(x) - alpha * relu(-x)`` of ``graph_def`` into
    ``relu(x) + reshape(-alpha, [1, 1, C]) * relu(-x)``; returns how many. The new Reshape and
    Neg of the constant ``alpha`` fold away in the converter, which then writes one PRELU."""
    added = []
    matches = _prelu_matches(graph_def)
    for sub, mul, negative_relu, alpha in matches:
        dtype = mul.attr["T"]
        shape = tf.NodeDef(name=mul.name + "/keras_prelu_shape", op="Const")
        shape.attr["dtype"].type = tf.int32.as_datatype_enum
        shape.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([1, 1, -1], np.int32)))
        reshaped = tf.NodeDef(name=mul.name + "/keras_prelu_alpha", op="Reshape",
                              input=[alpha, shape.name])
        reshaped.attr["T"].CopyFrom(dtype)
        reshaped.attr["Tshape"].type = tf.int32.as_datatype_enum
        negated = tf.NodeDef(name=mul.name + "/keras_prelu_negative_alpha", op="Neg",
                             input=[reshaped.name])
        negated.attr["T"].CopyFrom(dtype)
        added.extend([shape, reshaped, negated])
        del mul.input[:]
        mul.input.extend([negative_relu.name, negated.name])
        sub.op = "AddV2"
    graph_def.node.extend(added)
    return len(matches)


def batch_free_reshapes(graph_def):
    """Rewrite (in place) every Reshape whose target shape is a Pack of constants but for one
    computed dimension (the batch, read from a tensor's Shape) so that dimension is -1;
    returns how many. With every other dimension fixed, -1 infers the value the computed one
    had for every input the reshape accepted before, so the values do not change; but the
    converted TFLite model's reshapes then follow a batch resized after conversion."""
    nodes = {node.name: node for node in graph_def.node}
    # A Pack may feed only reshapes' shapes: another user would see the -1.
    other_uses = {_node_name(name) for node in graph_def.node
                  for index, name in enumerate(node.input)
                  if node.op != "Reshape" or index != 1}
    added, rewritten, seen = [], 0, set()
    for reshape in graph_def.node:
        if reshape.op != "Reshape" or len(reshape.input) != 2:
            continue
        pack = nodes.get(_node_name(reshape.input[1]))
        if pack is None or pack.op != "Pack" or pack.name in seen or pack.name in other_uses:
            continue
        seen.add(pack.name)
        computed = [index for index, name in enumerate(pack.input)
                    if nodes.get(_node_name(name)) is None
                    or nodes[_node_name(name)].op != "Const"]
        if len(computed) != 1 or pack.attr["T"].type != tf.int32.as_datatype_enum:
            continue
        minus_one = tf.NodeDef(name=f"{pack.name}/batch_free_{computed[0]}", op="Const")
        minus_one.attr["dtype"].type = tf.int32.as_datatype_enum
        minus_one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.int32(-1)))
        added.append(minus_one)
        pack.input[computed[0]] = minus_one.name
        rewritten += 1
    graph_def.node.extend(added)
    return rewritten


def _const_value(nodes, name):
    node = nodes.get(_node_name(name))
    if node is None or node.op != "Const":
        return None
    return tf.make_ndarray(node.attr["value"].tensor)


def _single_input(nodes, node, op, index=0):
    found = nodes.get(_node_name(node.input[index])) if len(node.input) > index else None
    return found if found is not None and found.op == op else None


def grouped_convolutions(graph_def):
    """Rewrite (in place) every grouped convolution built by ``model.layers.conv2d`` as
    ``reshape(sum(reshape(depthwise_conv2d(x, reshape(transpose(reshape(kernel))))), 4))``
    into ``conv2d(x, kernel)`` with the kernel ``[kh, kw, in / groups, filters]`` that the chain
    started from (TensorFlow's grouped ``Conv2D``: input channel ``g·ipg + j`` feeds output
    ``g·opg + k`` through ``kernel[:, :, j, g·opg + k]``, what the chain computes); returns how
    many. The final reshape becomes the Conv2D, under its name, so its users are untouched;
    the chain before it is left to the converter's pruning."""
    nodes = {node.name: node for node in graph_def.node}
    rewritten = 0
    for last in graph_def.node:
        if last.op != "Reshape":
            continue
        total = _single_input(nodes, last, "Sum")
        grouped = total is not None and _single_input(nodes, total, "Reshape")
        depthwise = grouped and _single_input(nodes, grouped, "DepthwiseConv2dNative")
        flat = depthwise and _single_input(nodes, depthwise, "Reshape", 1)
        transpose = flat and _single_input(nodes, flat, "Transpose")
        split = transpose and _single_input(nodes, transpose, "Reshape")
        if not split:
            continue
        axis = _const_value(nodes, total.input[1])
        perm = _const_value(nodes, transpose.input[1])
        split_shape = _const_value(nodes, split.input[1])
        if (axis is None or perm is None or split_shape is None or len(split_shape) != 5
                or int(np.ravel(axis)[0]) not in (4, -2) or total.attr["keep_dims"].b
                or list(perm) != [0, 1, 3, 2, 4]
                or depthwise.attr["data_format"].s not in (b"", b"NHWC")):
            continue
        conv = tf.NodeDef(name=last.name, op="Conv2D",
                          input=[depthwise.input[0], split.input[0]])
        conv.attr["T"].CopyFrom(depthwise.attr["T"])
        for key in ("strides", "padding", "dilations", "explicit_paddings"):
            if key in depthwise.attr:
                conv.attr[key].CopyFrom(depthwise.attr[key])
        conv.attr["data_format"].s = b"NHWC"
        conv.attr["use_cudnn_on_gpu"].b = True
        last.CopyFrom(conv)
        rewritten += 1
    return rewritten
