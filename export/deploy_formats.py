"""ONNX and TFLite exports of a SavedModel, runners for every format, and the parity and
accuracy checks on real faces: the library behind ``python -m export.convert``.

Both formats are converted from the SavedModel's float signature (``pixels:serving_default``)
with its variables frozen, the JPEG decoding cut away (export/freeze.py) and the input fixed to
the model's size S x S (read from the graph's resize by :func:`model_image_size`, or given):

* ONNX (tf2onnx, :func:`convert_onnx`): input ``pixels`` float32 [batch, S, S, 3], RGB 0..255,
  dynamic batch; output ``embedding`` float32 [batch, D], L2-normalised. Normalisation is inside
  the model.
* TFLite (:func:`convert_tflite`, the TF1-style converter: the dynamic-shape signature does not
  convert with the TF2 one): input float32 [1, S, S, 3], RGB 0..255; output float32 [1, D],
  L2-normalised; ``Interpreter.resize_tensor_input`` resizes the batch (the reshapes are
  batch-free, ``export.graph_rewrites``). ``quantize="float16"`` stores the weights in float16;
  ``quantize="int8"`` is integer quantisation (int8 weights and activations, float input and
  output), calibrated on faces of the training records (:func:`calibration_pixels`); the ops
  named in ``float_ops`` stay in float (by default the final L2 normalisation, whose int8
  output scale of 1/128 is coarse for the small components of a unit 512-d vector, and PRELU,
  which XNNPACK runs only in float). Every PReLU is one PRELU op (``export.graph_rewrites``).

Running the converted files and checking them against the SavedModel (parity, accuracy) is
``export/format_checks.py``.

Needs TensorFlow 2 for TFLite (``tf.lite``) and ``tf2onnx`` + ``onnx`` for ONNX; ``onnxruntime``
runs the ONNX models. All are imported only when used; without them a
:class:`MissingDependencyError` says what to install.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

from data_tools import input_fns, preprocessing, schema
from export import embedder, freeze, graph_rewrites, native_stderr, onnx_graph, serving

QUANTIZE_MODES = ("none", "float16", "int8")
ONNX_INPUT = "pixels"
ONNX_OUTPUT = "embedding"
ONNX_BATCH_DIM = "batch"
DEFAULT_OPSET = 15
# Measured on a fold-10 model (docs/DEPLOYING.md): 1,000 faces raise the worst face's cosine to
# the float embedding from 0.973 to 0.981 and keep the accuracy (200 lost up to 1.8 points).
DEFAULT_CALIBRATION_IMAGES = 1000
# TFLite op names kept in float in an int8 model: the last op, whose int8 output would round the
# unit-length embedding to steps of 1/128 (measured in docs/DEPLOYING.md); and PRELU, which
# XNNPACK (the interpreter's default delegate, TF 2.15) runs in float but not in int8: an int8
# PRELU falls back to TF Lite's own kernel and cuts the delegated graph at every PReLU
# (MobileFaceNet: 35 XNNPACK partitions, 73 ms per face on one core), a float one between a
# dequantise and a quantise stays inside it (2 partitions, 21 ms; docs/PERFORMANCE.md).
DEFAULT_INT8_FLOAT_OPS = ("L2_NORMALIZATION", "PRELU")
_RESIZE_OPS = ("ResizeBilinear", "ResizeArea", "ResizeBicubic", "ResizeNearestNeighbor")
_INSTALL_HINT = "pip install tf2onnx==1.17.0 onnx==1.17.0 onnxruntime==1.22.1 (or .[onnx])"


class ConvertError(ValueError):
    """An input or environment the converter cannot use: the message says which and why."""


class MissingDependencyError(ConvertError):
    """An optional package (tf2onnx, onnx, onnxruntime, tf.lite) is not installed."""


# ---------------------------------------------------------------------------------------------
# Optional dependencies, imported when used.
# ---------------------------------------------------------------------------------------------

def _import_tf2onnx():
    try:
        import onnx  # noqa: PLC0415
        import tf2onnx  # noqa: PLC0415
    except ImportError as e:
        raise MissingDependencyError(f"ONNX export needs tf2onnx and onnx ({e}): "
                                     f"{_INSTALL_HINT}") from None
    return tf2onnx, onnx


def import_onnxruntime():
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError as e:
        raise MissingDependencyError(f"running ONNX models needs onnxruntime ({e}): "
                                     f"{_INSTALL_HINT}") from None
    return onnxruntime


def tflite_module():
    """``tf.lite`` of TensorFlow 2 (the converter flags used here are not in TF 1.15's)."""
    import tensorflow as tf_root  # noqa: PLC0415
    if not tf_root.__version__.startswith("2.") or not hasattr(tf_root, "lite"):
        raise MissingDependencyError("TFLite export and checks need TensorFlow 2.x (found "
                                     f"{tf_root.__version__}); convert on a TF 2 machine, e.g. pip "
                                     "install tensorflow-cpu==2.15.1")
    return tf_root.lite


def onnx_available():
    """True when tf2onnx, onnx and onnxruntime import (the ONNX path can run)."""
    try:
        _import_tf2onnx()
        import_onnxruntime()
    except MissingDependencyError:
        return False
    return True


def tflite_available():
    try:
        tflite_module()
    except MissingDependencyError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# The SavedModel's float signature, frozen at a fixed size.
# ---------------------------------------------------------------------------------------------

def resolve_model(path):
    """The SavedModel directory of ``path`` (itself or an exporter base's newest export)."""
    try:
        return embedder.find_saved_model(path)
    except embedder.EmbedError as e:
        raise ConvertError(str(e)) from None


def model_image_size(saved_model_dir):
    """The input size S of the model: the square size its pixels signature resizes to.

    Read from the graph: the static shape of the decoded images the ``pixels`` input defaults
    to (export/serving.py), else the constant size of the resize op(s) in the graph and its
    functions (``tf.cond`` branches). A ConvertError asks for ``--image_size`` when the graph
    does not tell.
    """
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        meta_graph = tf.saved_model.loader.load(sess, [tf.saved_model.tag_constants.SERVING],
                                                saved_model_dir)
        signature = pixels_signature(meta_graph, saved_model_dir)
        pixels = graph.get_tensor_by_name(signature.inputs[serving.PIXELS_INPUT].name)
        if pixels.op.type == "PlaceholderWithDefault":
            shape = pixels.op.inputs[0].shape
            if shape.ndims == 4 and shape[1] is not None and shape[1] == shape[2]:
                return int(shape[1])
        graph_def = graph.as_graph_def()
    sizes = set()
    for nodes, key in [(graph_def.node, lambda name: name.split(":")[0])] + [
            (function.node_def, lambda name: name.split(":")[0])
            for function in graph_def.library.function]:
        constants = {node.name: node for node in nodes if node.op == "Const"}
        for node in nodes:
            if node.op in _RESIZE_OPS and len(node.input) > 1:
                const = constants.get(key(node.input[1]))
                if const is not None:
                    sizes.add(tuple(int(v) for v in tf.make_ndarray(const.attr["value"].tensor)))
    square = {size[0] for size in sizes if len(size) == 2 and size[0] == size[1]}
    if len(square) != 1:
        raise ConvertError(f"cannot tell the input size of {saved_model_dir} from its graph "
                           f"(resize sizes found: {sorted(sizes) or 'none'}); pass --image_size")
    return square.pop()


def pixels_signature(meta_graph, saved_model_dir):
    if serving.PIXELS_SIGNATURE not in meta_graph.signature_def:
        raise ConvertError(f"{saved_model_dir} has no {serving.PIXELS_SIGNATURE!r} signature; "
                           "export it with this project's serving input receiver")
    return meta_graph.signature_def[serving.PIXELS_SIGNATURE]


def frozen_graph_def(saved_model_dir, image_size):
    """GraphDef of the pixels signature, variables as constants, input ``input`` [None, S, S, 3]
    (float32 RGB 0..255) and output ``embedding``: export/freeze.py's graph."""
    scratch = tempfile.mkdtemp(prefix="convert_")
    try:
        path = freeze.freeze_saved_model(saved_model_dir, os.path.join(scratch, "frozen.pb"),
                                         image_size=image_size)
        graph_def = tf.GraphDef()
        with open(path, "rb") as f:
            graph_def.ParseFromString(f.read())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return graph_def


def _atomic_bytes(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)
    return path


# ---------------------------------------------------------------------------------------------
# ONNX.
# ---------------------------------------------------------------------------------------------

def convert_onnx(saved_model_dir, output_path, image_size=None, opset=DEFAULT_OPSET):
    """Write the ONNX model of ``saved_model_dir``; returns ``{"path", "image_size", ...}``.

    Input ``pixels`` float32 [batch, S, S, 3] RGB 0..255 (dynamic batch), output ``embedding``
    float32 [batch, D], L2-normalised. PReLU is one ``PRelu`` node (``export.onnx_graph``:
    tf2onnx alone writes five per PReLU); ``prelu_fused`` says how many. A grouped convolution
    is one grouped ``Conv`` (``export.graph_rewrites``); ``grouped_convolutions`` says how many.
    """
    tf2onnx, onnx = _import_tf2onnx()
    image_size = image_size or model_image_size(saved_model_dir)
    graph_def = frozen_graph_def(saved_model_dir, image_size)
    grouped = graph_rewrites.grouped_convolutions(graph_def)
    input_name = freeze.INPUT_NODE + ":0"
    output_name = freeze.OUTPUT_NODE + ":0"
    model_proto, _ = tf2onnx.convert.from_graph_def(
        graph_def, name="circle_face_embedding", input_names=[input_name],
        output_names=[output_name], opset=opset,
        tensors_to_rename={input_name: ONNX_INPUT, output_name: ONNX_OUTPUT})
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = ONNX_BATCH_DIM
    prelu_fused = onnx_graph.fuse_prelu(model_proto)
    model_proto.doc_string = (f"circle-face embedding from {os.path.abspath(saved_model_dir)}: "
                              f"input {ONNX_INPUT} float32 [batch, {image_size}, {image_size}, 3] "
                              f"RGB 0..255, output {ONNX_OUTPUT} L2-normalised")
    onnx.checker.check_model(model_proto)
    _atomic_bytes(output_path, model_proto.SerializeToString())
    dim = model_proto.graph.output[0].type.tensor_type.shape.dim[1]
    return {"path": output_path, "format": "onnx", "image_size": image_size, "opset": opset,
            "embedding_size": dim.dim_value or None, "prelu_fused": prelu_fused,
            "grouped_convolutions": grouped,
            "bytes": os.path.getsize(output_path)}


# ---------------------------------------------------------------------------------------------
# TFLite.
# ---------------------------------------------------------------------------------------------

def all_batches(graph, dataset, not_parsed):
    """Every batch of ``dataset`` (built in ``graph``), read in a session of its own; a record
    that does not parse raises ConvertError("<not_parsed> (<TensorFlow's first line>)")."""
    batch = tf.data.make_one_shot_iterator(dataset).get_next()
    batches = []
    with tf.Session(graph=graph) as sess:
        while True:
            try:
                batches.append(sess.run(batch))
            except tf.errors.OutOfRangeError:
                return batches
            except tf.errors.InvalidArgumentError as e:
                raise ConvertError(f"{not_parsed} ({first_line(e.message)})") from None


def calibration_pixels(records, image_size, count=DEFAULT_CALIBRATION_IMAGES, seed=0):
    """``count`` faces of training records (a records directory or glob) as float32 pixels
    [count, S, S, 3] in 0..255, resized as the serving graph does; drawn with a fixed seed from
    a shuffle of all the records (fewer if the records hold fewer)."""
    try:
        files = input_fns._files(records)
    except ValueError as e:
        raise ConvertError(f"--calibration_records: {e}") from None
    with tf.Graph().as_default() as graph:
        dataset = tf.data.TFRecordDataset(files).shuffle(10000, seed=seed).take(count)
        dataset = dataset.map(lambda serialized: preprocessing.resize(preprocessing.decode_image(
            schema.parse_image_record(serialized)["encoded"]), image_size)).batch(64)
        arrays = all_batches(graph, dataset, f"--calibration_records {records} are not image "
                                               "records of make_tfrecords.py")
    if not arrays:
        raise ConvertError(f"--calibration_records {records} hold no images")
    return np.concatenate(arrays).astype(np.float32)


def convert_tflite(saved_model_dir, output_path, image_size=None, quantize="none",
                   calibration=None, float_ops=DEFAULT_INT8_FLOAT_OPS):
    """Write the TFLite model of ``saved_model_dir``; returns ``{"path", "image_size", ...}``.

    ``quantize``: ``none`` (float32), ``float16`` (float16 weights) or ``int8`` (int8 weights
    and activations with float32 input and output; ``calibration`` is the representative set,
    float32 pixels [N, S, S, 3], e.g. from :func:`calibration_pixels`). With ``int8``, the
    TFLite ops named in ``float_ops`` (e.g. ``L2_NORMALIZATION``, ``FULLY_CONNECTED``) run in
    float between a dequantise and a quantise (TF Lite's selective quantisation); an empty
    ``float_ops`` makes every op int8 (full-integer, for integer-only accelerators).
    """
    if quantize not in QUANTIZE_MODES:
        raise ConvertError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got "
                           f"{quantize!r}")
    if quantize == "int8" and (calibration is None or not len(calibration)):
        raise ConvertError("--quantize=int8 needs calibration images (--calibration_records)")
    lite = tflite_module()
    image_size = image_size or model_image_size(saved_model_dir)
    graph_def = frozen_graph_def(saved_model_dir, image_size)
    prelu_fused = graph_rewrites.keras_prelu_form(graph_def)
    grouped = graph_rewrites.grouped_convolutions(graph_def)
    graph_rewrites.batch_free_reshapes(graph_def)  # resizable to any batch after conversion
    scratch = tempfile.mkdtemp(prefix="convert_")
    data, notes = None, []
    try:
        frozen = os.path.join(scratch, "frozen.pb")
        with open(frozen, "wb") as f:
            f.write(graph_def.SerializeToString())
        # tf here is tensorflow.compat.v1: its TFLiteConverter takes explicit input shapes.
        converter = tf.lite.TFLiteConverter.from_frozen_graph(
            frozen, [freeze.INPUT_NODE], [freeze.OUTPUT_NODE],
            input_shapes={freeze.INPUT_NODE: [1, image_size, image_size, 3]})
        if quantize == "float16":
            converter.optimizations = [lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            samples = np.asarray(calibration, np.float32)

            def representative_dataset():
                for sample in samples:
                    yield [sample[None]]

            converter.optimizations = [lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
            if float_ops:
                with native_stderr.filtered(notes):
                    data = _quantize_except(lite, converter, representative_dataset, float_ops)
        if data is None:
            with native_stderr.filtered(notes):
                data = converter.convert()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _atomic_bytes(output_path, data)
    info = {"path": output_path, "format": "tflite", "quantize": quantize,
            "image_size": image_size, "bytes": len(data), "notes": notes[:1],
            "prelu_fused": prelu_fused, "grouped_convolutions": grouped}
    if quantize == "int8":
        info["calibration_images"] = int(len(calibration))
        info["float_ops"] = list(float_ops or ())
    return info


def _quantize_except(lite, converter, representative_dataset, float_ops):
    """The int8 model with ``float_ops`` left in float: TF Lite's quantisation debugger is the
    converter's entry point for a deny-list (calibrate once, then quantise all other ops)."""
    experimental = lite.experimental
    options = experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    try:
        debugger = experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset, debug_options=options)
        return debugger.get_nondebug_quantized_model()
    except (ValueError, RuntimeError) as e:
        raise ConvertError(f"int8 conversion with {', '.join(float_ops)} in float failed: "
                           f"{first_line(str(e))}") from None


def first_line(text):
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "unknown error"
