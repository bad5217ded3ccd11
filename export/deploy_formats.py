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
  L2-normalised. ``quantize="float16"`` stores the weights in float16; ``quantize="int8"`` is
  integer quantisation (int8 weights and activations, float input and output), calibrated on
  faces of the training records (:func:`calibration_pixels`); the ops named in ``float_ops``
  stay in float (by default the final L2 normalisation, whose int8 output scale of 1/128 is
  coarse for the small components of a unit 512-d vector).

The runners (:class:`SavedModelRunner`, :class:`FrozenGraphRunner`, :class:`OnnxRunner`,
:class:`TFLiteRunner`, or :func:`runner_for` a file) all map float32 pixels [N, S, S, 3] in
0..255 to embeddings [N, D]. :func:`check_formats` embeds every pair of pair records with the
SavedModel and with each converted file and returns, per format, the largest absolute difference
of the embeddings, their cosine to the SavedModel's (mean and min) and the verification accuracy
(flip test-time augmentation, as the evaluation). Every model gets the same S x S pixels, resized
outside the models with the training code's resize.

Needs TensorFlow 2 for TFLite (``tf.lite``) and ``tf2onnx`` + ``onnx`` for ONNX; ``onnxruntime``
runs the ONNX models. All are imported only when used; without them a
:class:`MissingDependencyError` says what to install.
"""

import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow.compat.v1 as tf

from data_tools import input_fns, preprocessing, schema
from export import embedder, freeze, serving, verification

QUANTIZE_MODES = ("none", "float16", "int8")
ONNX_INPUT = "pixels"
ONNX_OUTPUT = "embedding"
ONNX_BATCH_DIM = "batch"
DEFAULT_OPSET = 15
DEFAULT_CALIBRATION_IMAGES = 200
# TFLite op names kept in float in an int8 model: the last op, whose int8 output would round the
# unit-length embedding to steps of 1/128 (measured in docs/DEPLOYING.md).
DEFAULT_INT8_FLOAT_OPS = ("L2_NORMALIZATION",)
PARITY_BATCH = 32
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


def _import_onnxruntime():
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError as e:
        raise MissingDependencyError(f"running ONNX models needs onnxruntime ({e}): "
                                     f"{_INSTALL_HINT}") from None
    return onnxruntime


def _tflite():
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
        _import_onnxruntime()
    except MissingDependencyError:
        return False
    return True


def tflite_available():
    try:
        _tflite()
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
        signature = _pixels_signature(meta_graph, saved_model_dir)
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


def _pixels_signature(meta_graph, saved_model_dir):
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
    float32 [batch, D], L2-normalised.
    """
    tf2onnx, onnx = _import_tf2onnx()
    image_size = image_size or model_image_size(saved_model_dir)
    graph_def = frozen_graph_def(saved_model_dir, image_size)
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
    model_proto.doc_string = (f"circle-face embedding from {os.path.abspath(saved_model_dir)}: "
                              f"input {ONNX_INPUT} float32 [batch, {image_size}, {image_size}, 3] "
                              f"RGB 0..255, output {ONNX_OUTPUT} L2-normalised")
    onnx.checker.check_model(model_proto)
    _atomic_bytes(output_path, model_proto.SerializeToString())
    dim = model_proto.graph.output[0].type.tensor_type.shape.dim[1]
    return {"path": output_path, "format": "onnx", "image_size": image_size, "opset": opset,
            "embedding_size": dim.dim_value or None,
            "bytes": os.path.getsize(output_path)}


# ---------------------------------------------------------------------------------------------
# TFLite.
# ---------------------------------------------------------------------------------------------

def _all_batches(graph, dataset, not_parsed):
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
                raise ConvertError(f"{not_parsed} ({_first_line(e.message)})") from None


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
        arrays = _all_batches(graph, dataset, f"--calibration_records {records} are not image "
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
    lite = _tflite()
    image_size = image_size or model_image_size(saved_model_dir)
    graph_def = frozen_graph_def(saved_model_dir, image_size)
    scratch = tempfile.mkdtemp(prefix="convert_")
    data = None
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
                data = _quantize_except(lite, converter, representative_dataset, float_ops)
        if data is None:
            data = converter.convert()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _atomic_bytes(output_path, data)
    info = {"path": output_path, "format": "tflite", "quantize": quantize,
            "image_size": image_size, "bytes": len(data)}
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
                           f"{_first_line(str(e))}") from None


# ---------------------------------------------------------------------------------------------
# Runners: float32 pixels [N, S, S, 3] in 0..255 -> embeddings [N, D].
# ---------------------------------------------------------------------------------------------

class _SessionRunner:
    """A TF1 session that feeds the pixels to ``self._input`` and fetches ``self._output``."""

    def __call__(self, pixels):
        return self._session.run(self._output, {self._input: np.asarray(pixels, np.float32)})

    def close(self):
        self._session.close()


class SavedModelRunner(_SessionRunner):
    """The SavedModel's pixels signature in a TF1 session (the reference)."""

    name = "SavedModel"

    def __init__(self, saved_model_dir, session_config=None):
        self._graph = tf.Graph()
        self._session = tf.Session(graph=self._graph, config=session_config)
        with self._graph.as_default():
            meta_graph = tf.saved_model.loader.load(
                self._session, [tf.saved_model.tag_constants.SERVING], saved_model_dir)
        try:
            signature = _pixels_signature(meta_graph, saved_model_dir)
        except ConvertError:
            self._session.close()
            raise
        self._input = signature.inputs[serving.PIXELS_INPUT].name
        self._output = signature.outputs[serving.OUTPUT].name


class FrozenGraphRunner(_SessionRunner):
    """A frozen graph of export/freeze.py in a TF1 session."""

    name = "frozen graph"

    def __init__(self, path, session_config=None):
        graph, self._input, self._output = freeze.load_frozen_graph(path)
        self._session = tf.Session(graph=graph, config=session_config)


class OnnxRunner:
    """An ONNX model in ONNX Runtime (CPU)."""

    name = "ONNX Runtime"

    def __init__(self, path, threads=None):
        onnxruntime = _import_onnxruntime()
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(path, sess_options=options,
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, pixels):
        return self._session.run(None, {self._input: np.asarray(pixels, np.float32)})[0]

    def close(self):
        self._session = None


class TFLiteRunner:
    """A TFLite model of :func:`convert_tflite`: one image per invocation (fixed batch 1)."""

    name = "TFLite"

    def __init__(self, path, threads=None):
        self._interpreter = _tflite().Interpreter(model_path=path, num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def __call__(self, pixels):
        pixels = np.asarray(pixels, np.float32)
        outputs = []
        for image in pixels:
            self._interpreter.set_tensor(self._input["index"], image[None])
            self._interpreter.invoke()
            outputs.append(self._interpreter.get_tensor(self._output["index"])[0].copy())
        return np.stack(outputs) if outputs else np.zeros((0, 0), np.float32)

    def close(self):
        self._interpreter = None


def runner_for(path, threads=None):
    """The runner of a converted file, by its extension (.onnx, .tflite, .pb)."""
    if not os.path.isfile(path):
        raise ConvertError(f"{path} does not exist")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".onnx":
        return OnnxRunner(path, threads)
    if extension == ".tflite":
        return TFLiteRunner(path, threads)
    if extension == ".pb":
        return FrozenGraphRunner(path)
    raise ConvertError(f"cannot run {path}: expected a .onnx, .tflite or .pb file")


def embed_in_batches(runner, pixels, batch_size=PARITY_BATCH):
    return np.concatenate([runner(pixels[i:i + batch_size])
                           for i in range(0, len(pixels), batch_size)])


# ---------------------------------------------------------------------------------------------
# Parity and accuracy.
# ---------------------------------------------------------------------------------------------

def parity(reference, other):
    """``{"max_abs_diff", "cosine_mean", "cosine_min"}`` of two embedding arrays [N, D]."""
    reference = np.asarray(reference, np.float64)
    other = np.asarray(other, np.float64)
    if reference.shape != other.shape:
        raise ConvertError(f"embeddings of shape {reference.shape} and {other.shape} cannot be "
                           "compared")
    cosine = np.sum(verification.l2_normalize(reference) * verification.l2_normalize(other),
                    axis=1)
    return {"max_abs_diff": float(np.max(np.abs(reference - other))),
            "cosine_mean": float(np.mean(cosine)), "cosine_min": float(np.min(cosine))}


def pair_pixels(records, image_size):
    """Pixels of every pair of pair records, in pair order, resized to S x S as in serving.

    Returns ``(images1, images2, issame, folds)``: float32 [P, S, S, 3] twice, bool [P], int [P].
    """
    try:
        files = input_fns._files(records)
    except ValueError as e:
        raise ConvertError(f"--check_records: {e}") from None

    def parse(serialized):
        record = schema.parse_pair_record(serialized)
        return (record["index"],
                preprocessing.resize(preprocessing.decode_image(record["image1"]["encoded"]),
                                     image_size),
                preprocessing.resize(preprocessing.decode_image(record["image2"]["encoded"]),
                                     image_size),
                record["issame"], record["fold"])

    with tf.Graph().as_default() as graph:
        dataset = tf.data.TFRecordDataset(files).map(parse).batch(64)
        parts = _all_batches(graph, dataset, f"--check_records {records} are not pair records "
                                             "of make_tfrecords.py --pairs")
    if not parts:
        raise ConvertError(f"--check_records {records} hold no pairs")
    index, images1, images2, issame, folds = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(index, kind="stable")
    return (images1[order].astype(np.float32), images2[order].astype(np.float32),
            issame[order].astype(bool), folds[order])


def flip_tta(runner, pixels, batch_size=PARITY_BATCH):
    """Embeddings with flip test-time augmentation, as the evaluation: e(x) + e(mirror x),
    L2-normalised. Also returns the plain embeddings ``e(x)``."""
    plain = embed_in_batches(runner, pixels, batch_size)
    mirrored = embed_in_batches(runner, pixels[:, :, ::-1], batch_size)
    return verification.l2_normalize(plain + mirrored), plain


def check_formats(saved_model_dir, files, records, image_size=None, n_folds=None,
                  threads=None, progress=None):
    """Parity and verification accuracy of each converted file against the SavedModel.

    Every model embeds the same S x S pixels of every pair of ``records``. Returns one dict per
    format, the SavedModel first: ``name, path, accuracy, accuracy_std, auc`` and, for the
    files, ``max_abs_diff, cosine_mean, cosine_min`` (plain embeddings against the SavedModel's)
    and ``max_abs_diff_batch`` (ONNX: the same at batch 32; the other rows run at batch 1 or
    are the reference).
    """
    image_size = image_size or model_image_size(saved_model_dir)
    images1, images2, issame, folds = pair_pixels(records, image_size)
    pixels = np.concatenate([images1, images2])
    num_pairs = len(issame)
    n_folds = n_folds or len(np.unique(folds))
    if n_folds < 2:
        n_folds = 10 if num_pairs >= 10 else 2

    def evaluate(tta):
        metrics = verification.evaluate(tta[:num_pairs], tta[num_pairs:], issame,
                                         n_folds=n_folds)
        return {"accuracy": metrics["accuracy"], "accuracy_std": metrics["accuracy_std"],
                "auc": metrics["auc"], "threshold": metrics["threshold"]}

    rows = []
    reference = SavedModelRunner(saved_model_dir)
    try:
        start = time.perf_counter()
        reference_tta, reference_plain = flip_tta(reference, pixels)
        row = {"name": "SavedModel", "path": saved_model_dir, "images": len(pixels),
               "pairs": num_pairs, "seconds": time.perf_counter() - start}
        row.update(evaluate(reference_tta))
        rows.append(row)
        reference_single = embed_in_batches(reference, pixels[:PARITY_BATCH], 1)
    finally:
        reference.close()
    if progress:
        progress(rows[-1])
    for path in files:
        runner = runner_for(path, threads)
        try:
            start = time.perf_counter()
            batch = PARITY_BATCH if isinstance(runner, OnnxRunner) else 1
            tta, plain = flip_tta(runner, pixels, batch)
            row = {"name": os.path.basename(path), "path": path, "runner": runner.name,
                   "seconds": time.perf_counter() - start}
            row.update(evaluate(tta))
            row.update(parity(reference_plain, plain))
            if isinstance(runner, OnnxRunner):
                row["max_abs_diff_batch"] = row["max_abs_diff"]
                single = embed_in_batches(runner, pixels[:PARITY_BATCH], 1)
                row["max_abs_diff_batch1"] = parity(reference_single, single)["max_abs_diff"]
        finally:
            runner.close()
        rows.append(row)
        if progress:
            progress(row)
    return rows


def _first_line(text):
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "unknown error"
