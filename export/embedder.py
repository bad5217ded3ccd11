"""Embed and verify faces with an exported SavedModel: the library behind ``export.embed``.

:func:`load_saved_model` finds and loads a SavedModel (a SavedModel directory, or an exporter's
base directory holding timestamped SavedModels: the newest is used) with the TF1 loader, so this
runs on TF 1.15 as on TF 2.x. The :class:`Embedder` calls its ``serving_default`` signature:
``image_bytes`` (JPEG/PNG bytes, any size) in, L2-normalised ``embedding`` out, on bytes
(:meth:`Embedder.embed_bytes`), image files (:meth:`Embedder.embed_files`), an identity-folder
tree (:func:`embed_folder`); :mod:`export.pair_verification` verifies pairs files with it.

Flip test-time augmentation (``flip=True``): the embedding of an image plus that of its mirror
image, L2-normalised. With this project's SavedModels the decoded, resized batch is fetched from
the graph and fed back mirrored through the ``pixels`` signature (flipped after the resize, as the
evaluation input flips). Any other SavedModel gets the mirror image made in TensorFlow with the
decoder the serving graph uses and re-encoded losslessly as PNG, so the model sees exactly the
flipped pixels.

``with_norm=True`` also returns the embedding's norm before normalisation (the SavedModel's
``embedding_norm`` output: insightface's N1 template weight and a face-quality signal) as
:class:`NormedEmbeddings`. With flip TTA the unnormalised embedding is the mean of the image's
and its mirror's pre-normalisation embeddings, and the norm is that mean's norm: on the scale of
the one-image norm (a mirror-symmetric face gets the same number with or without flip, so one
quality threshold serves both), and proportional to insightface's flip feature (it adds the two
raw features, F2), so N1 pooling with it is insightface's exactly (a common factor cancels
when the templates are normalised). Faces whose mirror embeds elsewhere get a smaller norm.

The decision threshold of a two-image comparison comes from the caller or from the verification
report the training run wrote (``report.json``, see :func:`decision_threshold`): in
``<savedmodel>/assets.extra/``, then in ``eval/`` under each of the four parent directories of the
SavedModel.

A :class:`~data_tools.transform.Transform` (the converter's crop box, size or 5-point
alignment) is applied to image files before they are sent, with the converter's own code
(``data_tools.image_files.transform_image``: crop, centre square, PIL Lanczos, lossless PNG;
``data_tools.alignment.raw_faces`` for aligned faces), so that raw photos become the pictures
the records hold. ``Transform`` is re-exported here for older callers.
``assets.extra/transform.json`` holds the transform of the evaluation records the model was
exported with (:meth:`Embedder.transform`); ``export.pair_verification.evaluate_pairs`` users
pass it to reproduce the report's accuracy on the raw frames.
"""

import collections
import io
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image
from tqdm import tqdm

from data_tools import image_files, preprocessing
from data_tools.fileio import atomic_write
from data_tools.transform import Transform
from evaluation import reports as report
from evaluation import verification
from export import export_dirs, serving

SIGNATURE = "serving_default"
# The serving signature's keys, as export/serving.py writes them.
INPUT_KEY = serving.BYTES_INPUT
OUTPUT_KEY = serving.OUTPUT
NORM_KEY = serving.NORM_OUTPUT
REPORT_PARENT_LEVELS = 4
ASSETS_EXTRA = "assets.extra"

# File signatures of the formats TensorFlow's decode_image reads; anything else goes through PIL.
_TF_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
# Pillow < 7 raises a plain OSError for unknown formats.
_UNIDENTIFIED = getattr(Image, "UnidentifiedImageError", OSError)


class EmbedError(ValueError):
    """An input the embedder cannot use: the message says which and why."""


class SavedModelNotFoundError(EmbedError):
    """The model path holds no SavedModel."""


class ImageDecodeError(EmbedError):
    """Images that cannot be read or decoded; ``.files`` lists ``(name, reason)``."""

    def __init__(self, files):
        self.files = list(files)
        listed = "\n  ".join(f"{name}: {reason}" for name, reason in self.files)
        super().__init__(f"cannot use {len(self.files)} image(s):\n  {listed}")


class NormedEmbeddings(collections.namedtuple("NormedEmbeddings",
                                              ["embeddings", "unnormalised"])):
    """``embeddings`` [N, D] as without ``with_norm``; ``unnormalised`` [N, D]: the embedding
    before normalisation (with flip: the mean of the image's and its mirror's); ``norms`` [N]:
    its norm (module docstring)."""

    @property
    def norms(self):
        return np.sqrt(np.sum(np.square(np.asarray(self.unnormalised, np.float64)), axis=1))


def find_saved_model(path):
    """The SavedModel directory for ``path``: ``path`` itself, or the best export under it.

    Estimator exporters write ``<base>/<timestamp>/saved_model.pb``. From a base directory the
    export with the best recorded metric is taken (``export.export_dirs``: the accuracy stored
    with each export, then the newest), as training froze it; temporary ``temp-<timestamp>``
    directories of an export in progress are ignored.
    """
    if os.path.isfile(path) and path.lower().endswith(".pb"):
        raise SavedModelNotFoundError(
            f"{path} is a frozen graph (.pb), not a SavedModel: --model takes the SavedModel "
            "directory (model_dir/export/best); a frozen graph is for ATC and TF1 inference, "
            f"and python -m export.convert --check_files={path} checks it against its "
            "SavedModel")
    if not os.path.isdir(path):
        raise SavedModelNotFoundError(f"model directory {path} does not exist")
    if export_dirs.is_saved_model(path):
        return path
    best = export_dirs.best_export(path)
    if best:
        return best
    hints = []
    export_dir = os.path.join(path, "export")
    if os.path.isdir(export_dir):
        hints = [os.path.join(export_dir, d) for d in sorted(os.listdir(export_dir))
                 if os.path.isdir(os.path.join(export_dir, d))]
    message = (f"no SavedModel in {path}: it holds no saved_model.pb and no timestamped SavedModel "
               "subdirectory; pass a SavedModel directory or an exporter's base directory")
    if hints:
        message += f" (this looks like a model_dir; try one of: {', '.join(hints)})"
    raise SavedModelNotFoundError(message)


def report_candidates(saved_model_dir):
    """Where a SavedModel's verification report may be, in order of preference."""
    parent = os.path.abspath(saved_model_dir)
    candidates = [os.path.join(parent, "assets.extra", report.REPORT_JSON)]
    for _ in range(REPORT_PARENT_LEVELS):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
        candidates.append(os.path.join(parent, "eval", report.REPORT_JSON))
    return candidates


def find_report(saved_model_dir):
    """Path of the first existing :func:`report_candidates` entry, or None."""
    for candidate in report_candidates(saved_model_dir):
        if os.path.isfile(candidate):
            return candidate
    return None


class Embedder:
    """A loaded SavedModel that turns encoded images into L2-normalised embeddings.

    Use :func:`load_saved_model` to build one; close it (or use it as a context manager) to
    release the session.
    """

    def __init__(self, saved_model_dir, session_config=None):
        self.saved_model_dir = saved_model_dir
        self._graph = tf.Graph()
        self._session = tf.Session(graph=self._graph, config=session_config)
        try:
            with self._graph.as_default():
                meta_graph = tf.saved_model.loader.load(
                    self._session, [tf.saved_model.tag_constants.SERVING], saved_model_dir)
                self._input, self._output, self._norm = self._signature_tensors(meta_graph)
                self._pixels = self._decoded_pixels_tensor(meta_graph)
                # Generic mirror images: decode as the serving graph does, flip, re-encode
                # losslessly (PNG without compression: exact and cheap). Built once, next to
                # the model, in the same session.
                self._flip_input = tf.placeholder(tf.string, [None], name="embed_cli_flip_input")
                self._flip_output = tf.map_fn(
                    lambda encoded: tf.image.encode_png(preprocessing.flip_left_right(
                        preprocessing.decode_image(encoded)), compression=0),
                    self._flip_input, dtype=tf.string, back_prop=False)
        except Exception:
            self._session.close()
            raise
        self.embedding_size = self._output.shape.as_list()[-1]

    def _signature_tensors(self, meta_graph):
        signatures = meta_graph.signature_def
        if SIGNATURE not in signatures:
            raise EmbedError(f"SavedModel {self.saved_model_dir} has no {SIGNATURE!r} signature "
                             f"(it has: {sorted(signatures)})")
        signature = signatures[SIGNATURE]
        if INPUT_KEY not in signature.inputs or OUTPUT_KEY not in signature.outputs:
            raise EmbedError(f"signature {SIGNATURE!r} of {self.saved_model_dir} must take "
                             f"{INPUT_KEY!r} and return {OUTPUT_KEY!r}; it takes "
                             f"{sorted(signature.inputs)} and "
                             f"returns {sorted(signature.outputs)}")
        if signature.inputs[INPUT_KEY].dtype != tf.string.as_datatype_enum:
            raise EmbedError(f"input {INPUT_KEY!r} of {self.saved_model_dir} is not a string "
                             "tensor of encoded images")
        norm = (self._graph.get_tensor_by_name(signature.outputs[NORM_KEY].name)
                if NORM_KEY in signature.outputs else None)
        return (self._graph.get_tensor_by_name(signature.inputs[INPUT_KEY].name),
                self._graph.get_tensor_by_name(signature.outputs[OUTPUT_KEY].name), norm)

    def _decoded_pixels_tensor(self, meta_graph):
        """The pixels input of a float signature, when it defaults to the decoded image bytes.

        This project's exporter (export/serving.py) gives the ``pixels`` signature a
        ``placeholder_with_default`` of the decoded, resized batch of ``image_bytes``: fetched
        while feeding bytes it yields the pixels the model sees, and fed back mirrored it gives
        the flipped embeddings without decoding twice. Flipping after the resize is also exactly
        what the evaluation input does. Other SavedModels get None (the PNG route is used).
        """
        for key in sorted(meta_graph.signature_def):
            signature = meta_graph.signature_def[key]
            if key == SIGNATURE or len(signature.inputs) != 1:
                continue
            if OUTPUT_KEY not in signature.outputs:
                continue
            if self._graph.get_tensor_by_name(signature.outputs[OUTPUT_KEY].name) is not \
                    self._output:
                continue
            info = list(signature.inputs.values())[0]
            if info.dtype != tf.float32.as_datatype_enum:
                continue
            tensor = self._graph.get_tensor_by_name(info.name)
            if tensor.op.type == "PlaceholderWithDefault" and tensor.shape.ndims == 4:
                return tensor
        return None

    @property
    def has_norm(self):
        """Whether the SavedModel returns ``embedding_norm`` (exports before it did not)."""
        return self._norm is not None

    @property
    def flip_method(self):
        """How mirror images are made: ``'pixels'`` (the decoded batch) or ``'png'``."""
        return "pixels" if self._pixels is not None else "png"

    def embed_bytes(self, images, batch_size=64, flip=False, names=None, progress=False,
                    with_norm=False):
        """Embeddings [N, D] float32 of encoded images (a list of bytes: JPEG, PNG, GIF, BMP).

        ``flip`` adds the embedding of each mirror image before normalising (test-time
        augmentation). ``names`` (one per image) are used in error messages. ``with_norm``:
        return :class:`NormedEmbeddings` (an :class:`EmbedError` when the SavedModel has no
        ``embedding_norm``). Raises :class:`ImageDecodeError` naming every image of the
        failing batch that cannot be decoded.
        """
        images = list(images)
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        if len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        return self._embed_batches(images, names, lambda blobs, _: blobs, batch_size, flip,
                                   progress, with_norm)

    def embed_files(self, paths, batch_size=64, flip=False, names=None, progress=False,
                    transform=None, with_norm=False, fallbacks=None):
        """Embeddings [N, D] float32 of image files, read one batch at a time.

        JPEG, PNG, GIF and BMP files are sent as they are; other formats PIL reads (PGM, TIFF,
        WebP...) are converted to PNG first. ``transform`` (a :class:`Transform`) crops and
        resizes every file as the converter does. ``names`` (default: the paths) label errors;
        ``with_norm``: see :meth:`embed_bytes`; ``fallbacks``: see :func:`align_photos`.
        """
        paths = list(paths)
        names = list(names) if names is not None else paths
        return self._embed_batches(
            paths, names,
            lambda batch, batch_names: read_images(batch, batch_names, transform, fallbacks),
            batch_size, flip, progress, with_norm)

    def records_transform(self):
        """Whether this SavedModel carries a ``transform.json`` (an identity one included)."""
        return os.path.isfile(os.path.join(self.saved_model_dir, ASSETS_EXTRA,
                                           report.TRANSFORM_JSON))

    def transform(self):
        """The :class:`Transform` of the evaluation records this SavedModel was exported with
        (``assets.extra/transform.json``), or None (none stored, or no crop and no resize)."""
        try:
            stored = report.read_transform(os.path.join(self.saved_model_dir, ASSETS_EXTRA))
            return Transform.from_dict(stored)
        except ValueError as e:
            raise EmbedError(f"the conversion transform of {self.saved_model_dir}: {e}") from None

    def _embed_batches(self, items, names, to_blobs, batch_size, flip, progress,
                       with_norm=False):
        """The one batching loop: ``to_blobs(items[batch], names[batch])`` gives encoded images."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if with_norm and self._norm is None:
            raise EmbedError(f"SavedModel {self.saved_model_dir} has no {NORM_KEY!r} output "
                             "(exported before it existed): export it again")
        bar = _progress_bar(len(items), progress)
        try:
            chunks = []
            for start in range(0, len(items), batch_size):
                stop = start + batch_size
                blobs = to_blobs(items[start:stop], names[start:stop])
                chunks.append(self._embed_batch(blobs, names[start:stop], flip, with_norm))
                bar.update(len(blobs))
        finally:
            bar.close()
        if not chunks:
            empty = np.zeros((0, self.embedding_size or 0), np.float32)
            return NormedEmbeddings(empty, empty.copy()) if with_norm else empty
        if with_norm:
            return NormedEmbeddings(*(np.concatenate(part) for part in zip(*chunks)))
        return np.concatenate(chunks)

    def _embed_batch(self, blobs, names, flip, with_norm=False):
        try:
            return self._run(blobs, flip, with_norm)
        except tf.errors.OpError:
            # TF names no element of a failed batch: find the culprits one image at a time.
            bad = []
            for blob, name in zip(blobs, names):
                try:
                    self._run([blob], flip)
                except tf.errors.OpError as e:
                    bad.append((name, _op_error_reason(e)))
            if not bad:
                raise
            raise ImageDecodeError(bad) from None

    def _run(self, blobs, flip, with_norm=False):
        """Embeddings of one batch; with ``with_norm``, ``(embeddings, unnormalised)``."""
        feed = np.array(blobs, dtype=object)
        outputs = [self._output] + ([self._norm] if with_norm else [])
        if not flip:
            parts = [self._session.run(outputs, {self._input: feed})]
        elif self._pixels is not None:
            *plain, pixels = self._session.run(outputs + [self._pixels], {self._input: feed})
            parts = [plain, self._session.run(outputs, {self._pixels: pixels[:, :, ::-1, :]})]
        else:
            mirrored = self._session.run(self._flip_output, {self._flip_input: feed})
            both = self._session.run(outputs, {self._input: np.concatenate([feed, mirrored])})
            parts = [[b[:len(blobs)] for b in both], [b[len(blobs):] for b in both]]
        embeddings = np.asarray(parts[0][0] if len(parts) == 1
                                else verification.l2_normalize(parts[0][0] + parts[1][0]),
                                dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(blobs):
            raise EmbedError(f"the SavedModel returned embeddings of shape {embeddings.shape} for "
                             f"{len(blobs)} images")
        if not with_norm:
            return embeddings
        # Each part's embedding times its norm is its pre-normalisation embedding; with flip,
        # the mean of the two (module docstring).
        unnormalised = np.mean([np.asarray(e, np.float64) * np.asarray(n, np.float64)[:, None]
                                for e, n in parts], axis=0)
        return embeddings, unnormalised.astype(np.float32)

    def close(self):
        """Release the TensorFlow session."""
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def load_saved_model(path, session_config=None):
    """An :class:`Embedder` for the SavedModel at ``path`` (see :func:`find_saved_model`)."""
    return Embedder(find_saved_model(path), session_config=session_config)


def read_images(paths, names=None, transform=None, fallbacks=None):
    """The encoded bytes of image files, ready for ``embed_bytes``.

    Files TensorFlow cannot decode (not JPEG/PNG/GIF/BMP) are converted to PNG with PIL. With a
    :class:`Transform` every file is cropped and resized as the converter does, and sent as the
    PNG the converter would store. Raises :class:`ImageDecodeError` naming every file that
    cannot be read (or is smaller than the crop box). ``fallbacks``: see :func:`align_photos`.
    """
    names = names if names is not None else paths
    if transform is not None and transform.align:
        # 5-point alignment is a detection, not a crop: the largest face of each photo.
        blobs, notes = align_photos(paths, transform.image_size, names=names,
                                    fallbacks=fallbacks)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return blobs
    blobs, bad = [], []
    for path, name in zip(paths, names):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            bad.append((name, f"cannot read: {e.strerror or e}"))
            continue
        if not data:
            bad.append((name, "empty file"))
            continue
        if transform is not None:
            try:
                data = transform.apply(data)
            except image_files.ImageError as e:
                bad.append((name, str(e)))
                continue
        elif not data.startswith(_TF_IMAGE_MAGIC):
            try:
                data = _to_png(data)
            except _UNIDENTIFIED:
                bad.append((name, "not an image TensorFlow or PIL can read (unknown format)"))
                continue
            except Exception as e:  # PIL raises many types for damaged files
                bad.append((name, f"not an image TensorFlow or PIL can read ({type(e).__name__}: "
                                  f"{_first_line(str(e))})"))
                continue
        blobs.append(data)
    if bad:
        raise ImageDecodeError(bad)
    return blobs


_DETECTOR_CACHE = {}


def align_photos(paths, image_size=112, detector=None, names=None, fallbacks=None):
    """``(blobs, notes)``: PNG bytes of the largest face of each raw photo, aligned onto the
    5-point template (``data_tools.alignment.raw_faces``), and one note per photo with several
    faces or without a face.

    A photo in which the detector finds no face falls back to the whole frame (centre square,
    resized to ``image_size``: ``image_files.transformed_png``), as the dlib teacher does: a
    pairs evaluation or a folder never loses a photo to a missed detection, and its note and
    ``fallbacks`` (a list: its name is appended) say so, for the count. ``detector`` defaults
    to ``data_tools.alignment.face_detector.load_detector()`` (the optional package, imported now).
    Raises :class:`ImageDecodeError` naming every photo that is unreadable or that the detector
    or the alignment failed on, and :class:`EmbedError` when the detector is not installed.
    """
    from data_tools.alignment import face_detector, raw_faces  # noqa: PLC0415 - with --align

    if detector is None:
        # Loaded once per process (and loader): a folder is aligned batch by batch.
        loader = face_detector.load_detector
        if loader not in _DETECTOR_CACHE:
            try:
                _DETECTOR_CACHE[loader] = loader()
            except face_detector.DetectorUnavailableError as e:
                raise EmbedError(str(e)) from None
        detector = _DETECTOR_CACHE[loader]
    blobs, bad, notes = [], [], []
    for path, name in zip(paths, names if names is not None else paths):
        png, result = raw_faces.aligned_png(path, image_size, detector=detector)
        if png is None and result.status == raw_faces.NO_FACE:
            with open(path, "rb") as f:  # read and decoded by the detection already
                # Upright by its EXIF tag, as the detector saw it (a phone photo's frame).
                png = image_files.transformed_png(f.read(), image_size, exif_transpose=True)
            notes.append(f"{name}: no face detected: the whole frame is used (centre square, "
                         f"{image_size}x{image_size})")
            if fallbacks is not None:
                fallbacks.append(name)
        if png is None:
            bad.append((name, result.reason))
            continue
        if result.num_faces > 1:
            notes.append(f"{name} holds {result.num_faces} faces: the largest is used")
        blobs.append(png)
    if bad:
        raise ImageDecodeError(bad)
    return blobs, notes


def _to_png(data):
    with Image.open(io.BytesIO(data)) as source:
        source.load()
        image = source if source.mode in ("L", "RGB") else source.convert("RGB")
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


def _op_error_reason(error):
    """The line of a TF op error that says what went wrong (TF 2 wraps it in boilerplate)."""
    for raw_line in str(error.message).splitlines():
        line = raw_line.strip()
        if line and not line.startswith(("Graph execution error", "Detected at node", "[[",
                                         "File ", "Node:")):
            return line
    return _first_line(error.message)


def _first_line(text):
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "unknown error"


def _progress_bar(total, enabled):
    # disable=None: shown on a terminal only, so logs and pipes stay clean.
    return tqdm(total=total, unit="img", disable=None if enabled else True, file=sys.stderr)


def output_paths(output):
    """``(npy_path, names_path)`` for ``--output``: ``x`` or ``x.npy`` -> x.npy, x.names.txt."""
    base = output[:-4] if output.endswith(".npy") else output
    return base + ".npy", base + ".names.txt"


def save_embeddings(embeddings, names, output):
    """Write ``<output>.npy`` and ``<output>.names.txt`` (one name per line); returns both."""
    npy_path, names_path = output_paths(output)
    directory = os.path.dirname(os.path.abspath(npy_path))
    os.makedirs(directory, exist_ok=True)
    atomic_write(npy_path, lambda f: np.save(f, np.asarray(embeddings, np.float32)))
    text = "".join(name + "\n" for name in names)
    atomic_write(names_path, lambda f: f.write(text.encode("utf-8")))
    return npy_path, names_path


def compare(embedding1, embedding2):
    """``(cosine similarity, squared L2 distance)`` of two embeddings, normalised in float64."""
    a, b = verification.l2_normalize(np.stack([embedding1, embedding2]))
    return float(np.dot(a, b)), float(np.sum(np.square(a - b)))




def decision_threshold(saved_model_dir, threshold=None, flip=True):
    """``(threshold or None, where it came from or why there is none, notes)``.

    ``threshold`` (the caller's) wins; otherwise the model's verification report
    (:func:`find_report`): its ``threshold`` or, for single embeddings (``flip=False``), its
    ``threshold_single`` when it has one. The report's flip setting
    (:func:`evaluation.reports.report_flip`) must be the embeddings' one: a threshold measured with
    another setting is refused (None, and the one-line reason: which flag matches it). Flip
    TTA moves embeddings of one face closer, so such a threshold shifts every decision the same
    way, silently; the remedy is one flag, and ``--threshold`` still overrides. A report that
    does not say gives its threshold with a note.
    """
    if threshold is not None:
        return threshold, "from --threshold", []
    path = find_report(saved_model_dir)
    if path is None:
        return None, ("no --threshold given and no report.json found; looked in: "
                      f"{', '.join(report_candidates(saved_model_dir))}"), []
    data = report.read_report(path)
    if not flip and isinstance(data.get("threshold_single"), (int, float)):
        source = f"threshold_single from {path}"
        if isinstance(data.get("accuracy_single"), (int, float)):
            source += f", verification accuracy without flip TTA {data['accuracy_single']:.4f}"
        return float(data["threshold_single"]), source, []
    found = data.get("threshold")
    if not isinstance(found, (int, float)):
        return None, f"{path} holds no threshold", []
    report_flip = report.report_flip(data)
    if report_flip is not None and report_flip != flip:
        return None, (f"the threshold of {path} was measured {report.flip_words(report_flip)} "
                      f"flip test-time augmentation and these embeddings are made "
                      f"{report.flip_words(flip)} it: {'--flip' if report_flip else '--noflip'} "
                      "embeds as the report did, or give --threshold"), []
    source = f"from {path}"
    if isinstance(data.get("accuracy"), (int, float)):
        source += f", verification accuracy {data['accuracy']:.4f}"
    notes = []
    if report_flip is None:
        notes.append(f"{path} does not say whether its threshold was measured with flip "
                     "test-time augmentation; it is used as if it matched")
    return float(found), source, notes


class FolderEmbeddings(collections.namedtuple(
        "FolderEmbeddings", ["names", "embeddings", "skipped", "num_identities"])):
    """:func:`embed_folder`'s result: ``names`` are ``identity/file`` paths, one per row of
    ``embeddings``; ``skipped`` lists ``(relpath, reason)`` of the files left out."""


def embed_folder(embedder, folder, batch_size=64, flip=False, progress=False, on_skipped=None,
                 transform=None, fallbacks=None):
    """Embed every image of an identity-folder tree (``<folder>/<identity>/<image>``).

    ``on_skipped(relpath, reason)`` is called for each file left out, before any embedding (and
    before the error when nothing is left). ``transform``, ``fallbacks``: see
    :meth:`Embedder.embed_files`.
    """
    if not os.path.isdir(folder):
        raise EmbedError(f"--folder {folder} is not a directory")
    scan = image_files.scan_identity_folders(folder)
    for relpath, reason in scan.skipped:
        if on_skipped is not None:
            on_skipped(relpath, reason)
    if not scan.entries:
        raise EmbedError(f"no images found in identity folders under {folder}")
    names = [entry.relpath for entry in scan.entries]
    paths = [os.path.join(folder, *name.split("/")) for name in names]
    embeddings = embedder.embed_files(paths, batch_size=batch_size, flip=flip, names=names,
                                      progress=progress, transform=transform,
                                      fallbacks=fallbacks)
    identities = len({entry.identity for entry in scan.entries})
    return FolderEmbeddings(names, embeddings, list(scan.skipped), identities)
