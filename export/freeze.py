"""Frozen GraphDef (.pb) from an exported SavedModel, for Ascend ATC and TF1 inference.

Node names (stable, documented in the README):

* input ``input``: float32 [N, H, W, 3] RGB pixels in 0..255 (N may be left open; ATC wants it
  fixed with ``--input_shape="input:N,112,112,3"``); resizing and normalisation are inside;
* output ``embedding``: float32 [N, D], L2-normalised;
* output ``embedding_norm``: float32 [N], the embedding's norm before normalisation (when the
  SavedModel has it; ONNX and TFLite keep the one ``embedding`` output).

The graph is the SavedModel's pixels signature with its variables turned into constants; the
JPEG/PNG decoding branch is cut away (ATC has no DecodeJpeg), and batch norm is in inference
mode because the SavedModel was built in PREDICT mode.

With ``image_size`` (a static input size) the graph is flat: no If/While/Switch/Merge, no
py_func, no function library. The SavedModel resizes inputs of any size behind a conditional;
here its preprocessing is rebuilt for the one static size from the parameters the serving graph
recorded (``serving.CONFIG_NODE``), so the frozen graph holds the resize ops that size needs, or
none when it is the network's input size.
"""

import json
import os

import tensorflow.compat.v1 as tf

from export import serving

INPUT_NODE = "input"
OUTPUT_NODE = "embedding"
NORM_NODE = "embedding_norm"


def freeze_saved_model(saved_model_dir, output_path, image_size=None):
    """Write the frozen graph of ``saved_model_dir`` to ``output_path``; returns the path.

    ``image_size`` fixes the input's spatial size in the placeholder (ATC likes static shapes);
    None leaves H and W open.
    """
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        meta_graph = tf.saved_model.loader.load(sess, [tf.saved_model.tag_constants.SERVING],
                                                saved_model_dir)
        if serving.PIXELS_SIGNATURE not in meta_graph.signature_def:
            raise ValueError(f"{saved_model_dir} has no {serving.PIXELS_SIGNATURE!r} signature; "
                             "export it with this project's serving input receiver")
        signature = meta_graph.signature_def[serving.PIXELS_SIGNATURE]
        pixels_name = signature.inputs[serving.PIXELS_INPUT].name
        output_names = [signature.outputs[serving.OUTPUT].name]
        if serving.NORM_OUTPUT in signature.outputs:
            output_names.append(signature.outputs[serving.NORM_OUTPUT].name)
        config = _serving_config(sess, graph) if image_size else None
        constant_graph = tf.graph_util.convert_variables_to_constants(
            sess, graph.as_graph_def(), [name.split(":")[0] for name in output_names])

    with tf.Graph().as_default() as graph:
        shape = [None, image_size, image_size, 3] if image_size else [None, None, None, 3]
        pixels = tf.placeholder(tf.float32, shape, name=INPUT_NODE)
        if config is not None:
            # Static input size: the preprocessing again, without the SavedModel's tf.cond.
            input_map = {serving.MODEL_INPUT + ":0": serving.preprocess(pixels, config)}
        else:
            input_map = {pixels_name: pixels}
        outputs = tf.import_graph_def(constant_graph, input_map=input_map,
                                      return_elements=output_names, name="frozen")
        kept = [OUTPUT_NODE, NORM_NODE][:len(outputs)]
        for tensor, node in zip(outputs, kept):
            tf.identity(tensor, name=node)
        graph_def = graph.as_graph_def()
    # Colocation hints (``_class``) count as edges to extract_sub_graph: in TF 1.15 they tie
    # the preprocessing to the JPEG decoding loop, which must go. They mean nothing in a frozen
    # inference graph.
    for node in graph_def.node:
        if "_class" in node.attr:
            del node.attr["_class"]
    pruned = _drop_unused_functions(tf.graph_util.extract_sub_graph(graph_def, kept))

    directory = os.path.dirname(os.path.abspath(output_path))
    tf.io.gfile.makedirs(directory)
    temporary = output_path + ".tmp"
    with tf.io.gfile.GFile(temporary, "wb") as f:
        f.write(pruned.SerializeToString())
    tf.io.gfile.rename(temporary, output_path, overwrite=True)
    return output_path


def _functions_used(nodes, library):
    """Names of the library functions the ``nodes`` call (as ops or through attributes)."""
    names = {f.signature.name for f in library.function}
    used = set()

    def visit(value):
        if value.HasField("func"):
            used.add(value.func.name)
        for func in value.list.func:
            used.add(func.name)

    for node in nodes:
        if node.op in names:
            used.add(node.op)
        for value in node.attr.values():
            visit(value)
    return used


def _drop_unused_functions(graph_def):
    """``graph_def`` with only the library functions its nodes still call (transitively): the
    pruned conditionals and decoding loop of the SavedModel leave their bodies behind."""
    by_name = {f.signature.name: f for f in graph_def.library.function}
    keep, todo = set(), _functions_used(graph_def.node, graph_def.library)
    while todo:
        name = todo.pop()
        if name in keep or name not in by_name:
            continue
        keep.add(name)
        todo |= _functions_used(by_name[name].node_def, graph_def.library)
    functions = [f for f in graph_def.library.function if f.signature.name in keep]
    gradients = [g for g in graph_def.library.gradient if g.function_name in keep]
    del graph_def.library.function[:]
    del graph_def.library.gradient[:]
    graph_def.library.function.extend(functions)
    graph_def.library.gradient.extend(gradients)
    if not functions:
        graph_def.ClearField("library")
    return graph_def


def _serving_config(sess, graph):
    """The preprocessing parameters the serving graph recorded, or None (a SavedModel exported
    before they were: its preprocessing is kept as it is, conditional included)."""
    try:
        graph.get_operation_by_name(serving.MODEL_INPUT)
        node = graph.get_tensor_by_name(serving.CONFIG_NODE + ":0")
    except KeyError:
        return None
    value = sess.run(node)
    return json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)


def load_frozen_graph(path):
    """(graph, input tensor, output tensor) of a frozen graph written by freeze_saved_model."""
    graph_def = tf.GraphDef()
    with tf.io.gfile.GFile(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
    return (graph, graph.get_tensor_by_name(INPUT_NODE + ":0"),
            graph.get_tensor_by_name(OUTPUT_NODE + ":0"))
