"""Run the converted models and check them against the SavedModel: the parity and accuracy
checks of ``python -m export.convert --check_records``.

The runners (:class:`SavedModelRunner`, :class:`FrozenGraphRunner`, :class:`OnnxRunner`,
:class:`TFLiteRunner`, or :func:`runner_for` a file) all map float32 pixels [N, S, S, 3] in
0..255 to embeddings [N, D]. :func:`check_formats` embeds every pair of pair records with the
SavedModel and with each converted file and returns, per format, the largest absolute difference
of the embeddings, their cosine to the SavedModel's (mean and min) and the verification accuracy
(flip test-time augmentation, as the evaluation). Every model gets the same S x S pixels, resized
outside the models with the training code's resize.
"""

import os
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from data_tools import input_fns, manifest, preprocessing, schema
from data_tools.transform import Transform
from evaluation import reports as report
from evaluation import verification
from export import deploy_formats, freeze, native_stderr, serving

PARITY_BATCH = 32


# Runners: float32 pixels [N, S, S, 3] in 0..255 -> embeddings [N, D].

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
            signature = deploy_formats.pixels_signature(meta_graph, saved_model_dir)
        except deploy_formats.ConvertError:
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
        onnxruntime = deploy_formats.import_onnxruntime()
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
    """A TFLite model of :func:`convert_tflite`. It is converted at batch 1; N images are one
    invocation at batch N (the input resized to N when N changes, which this project's
    conversions allow: ``export.graph_rewrites``), or, with ``batched=False`` or a model whose
    reshapes fix the batch at 1, N invocations of one image."""

    name = "TFLite"

    def __init__(self, path, threads=None, batched=True):
        self._path, self._threads = path, threads
        self._open()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.batched = batched

    def _open(self):
        with native_stderr.filtered([]):  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            self._interpreter = deploy_formats.tflite_module().Interpreter(
                model_path=self._path, num_threads=self._threads)
            self._interpreter.allocate_tensors()
        self._batch = 1

    def _resize(self, batch):
        """Resize the input to ``batch``; False (and a fresh interpreter at batch 1: one whose
        allocation failed crashes on the next resize) when the model does not allow it, which
        turns batching off for good."""
        if batch == self._batch:
            return True
        shape = [batch] + list(self._input["shape"][1:])
        try:
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError):
            self.batched = False
            self._interpreter = None
            self._open()
            return False
        self._batch = batch
        return True

    def __call__(self, pixels):
        pixels = np.asarray(pixels, np.float32)
        if len(pixels) > 1 and self.batched and self._resize(len(pixels)):
            self._interpreter.set_tensor(self._input["index"], pixels)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"]).copy()
        if len(pixels) and not self._resize(1):
            raise deploy_formats.ConvertError("the TFLite model does not take one image")
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
        raise deploy_formats.ConvertError(f"{path} does not exist")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".onnx":
        return OnnxRunner(path, threads)
    if extension == ".tflite":
        return TFLiteRunner(path, threads)
    if extension == ".pb":
        return FrozenGraphRunner(path)
    raise deploy_formats.ConvertError(f"cannot run {path}: expected a .onnx, .tflite or .pb file")


def embed_in_batches(runner, pixels, batch_size=PARITY_BATCH, bar=None):
    """``runner`` over ``pixels`` in batches; ``bar`` (a tqdm) advances by each batch."""
    outputs = []
    for i in range(0, len(pixels), batch_size):
        outputs.append(runner(pixels[i:i + batch_size]))
        if bar is not None:
            bar.update(len(outputs[-1]))
    return np.concatenate(outputs)


# Parity and accuracy.

def parity(reference, other):
    """``{"max_abs_diff", "cosine_mean", "cosine_min"}`` of two embedding arrays [N, D]."""
    reference = np.asarray(reference, np.float64)
    other = np.asarray(other, np.float64)
    if reference.shape != other.shape:
        raise deploy_formats.ConvertError(f"embeddings of shape {reference.shape} and "
                                          f"{other.shape} cannot be compared")
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
        raise deploy_formats.ConvertError(f"--check_records: {e}") from None

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
        parts = deploy_formats.all_batches(graph, dataset, f"--check_records {records} are not "
                                           "pair records of make_tfrecords.py --pairs")
    if not parts:
        raise deploy_formats.ConvertError(f"--check_records {records} hold no pairs")
    index, images1, images2, issame, folds = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(index, kind="stable")
    return (images1[order].astype(np.float32), images2[order].astype(np.float32),
            issame[order].astype(bool), folds[order])


def flip_tta(runner, pixels, batch_size=PARITY_BATCH, show_progress=False, name=None):
    """Embeddings with flip test-time augmentation, as the evaluation: e(x) + e(mirror x),
    L2-normalised. Also returns the plain embeddings ``e(x)``. ``show_progress``: a tqdm bar
    on stderr over the 2 x N images (a TFLite model runs one image at a time: minutes)."""
    with tqdm(total=2 * len(pixels), desc=f"check {name or runner.name}", unit="image",
              disable=not show_progress, file=sys.stderr, leave=False) as bar:
        plain = embed_in_batches(runner, pixels, batch_size, bar)
        mirrored = embed_in_batches(runner, pixels[:, :, ::-1], batch_size, bar)
    return verification.l2_normalize(plain + mirrored), plain


def check_records_transform(saved_model_dir, records, allow_mismatch=False):
    """Print the transform of the check records; refuse (one line) records converted otherwise
    than the model's evaluation records, whose accuracy would not be the model's."""
    try:
        records_transform = Transform.from_manifest(manifest.read_manifest(records))
    except manifest.ManifestError as e:
        raise deploy_formats.ConvertError(f"--check_records: {e}") from None
    model_record = report.read_transform(os.path.join(saved_model_dir, "assets.extra"))
    model_transform = Transform.from_dict(model_record)
    described = records_transform.describe() if records_transform else "none"
    print(f"transform: {described} (the check records' conversion; the model's: "
          f"{model_transform.describe() if model_transform else 'none'}"
          f"{'' if model_record is not None else ', no transform.json'})", file=sys.stderr)
    if model_record is not None and records_transform != model_transform and not allow_mismatch:
        model_described = model_transform.describe() if model_transform else "none"
        raise deploy_formats.ConvertError(
            f"--check_records {records} were converted with {described}, the model's records "
            f"with {model_described}: convert the pairs as the model's records were, or pass "
            "--allow_transform_mismatch")


def check_formats(saved_model_dir, files, records, image_size=None, n_folds=None,
                  threads=None, progress=None, show_progress=False):
    """Parity and verification accuracy of each converted file against the SavedModel.

    Every model embeds the same S x S pixels of every pair of ``records``. Returns one dict per
    format, the SavedModel first: ``name, path, accuracy, accuracy_std, auc`` and, for the
    files, ``max_abs_diff, cosine_mean, cosine_min`` (plain embeddings against the SavedModel's)
    and ``max_abs_diff_batch`` (ONNX: the same at batch 32; the other rows run at batch 1 or
    are the reference). ``show_progress``: progress bars on stderr while each format embeds.
    """
    image_size = image_size or deploy_formats.model_image_size(saved_model_dir)
    if show_progress:
        print(f"reading the pairs of {records} ...", file=sys.stderr, flush=True)
    images1, images2, issame, folds = pair_pixels(records, image_size)
    pixels = np.concatenate([images1, images2])
    num_pairs = len(issame)
    stored = len(np.unique(folds))
    # The stored folds (as the training evaluation uses them) unless another number is asked
    # for, or the records hold one fold only: then contiguous folds.
    fold_ids = folds if stored >= 2 and n_folds in (None, stored) else None
    n_folds = n_folds or stored
    if n_folds < 2:
        n_folds = 10 if num_pairs >= 10 else 2

    def evaluate(tta):
        metrics = verification.evaluate(tta[:num_pairs], tta[num_pairs:], issame,
                                         n_folds=n_folds, folds=fold_ids)
        return {"accuracy": metrics["accuracy"], "accuracy_std": metrics["accuracy_std"],
                "auc": metrics["auc"], "threshold": metrics["threshold"]}

    rows = []
    reference = SavedModelRunner(saved_model_dir)
    try:
        start = time.perf_counter()
        reference_tta, reference_plain = flip_tta(reference, pixels,
                                                  show_progress=show_progress)
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
            tta, plain = flip_tta(runner, pixels, batch, show_progress=show_progress,
                                  name=os.path.basename(path))
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
