"""Embed and verify faces with an exported SavedModel: the library behind ``export.embed``.

:func:`load_saved_model` finds and loads a SavedModel (a SavedModel directory, or an exporter's
base directory holding timestamped SavedModels: the newest is used) with the TF1 loader, so this
runs on TF 1.15 as on TF 2.x. The :class:`Embedder` calls its ``serving_default`` signature:
``image_bytes`` (JPEG/PNG bytes, any size) in, L2-normalised ``embedding`` out, on bytes
(:meth:`Embedder.embed_bytes`), image files (:meth:`Embedder.embed_files`), an identity-folder
tree (:func:`embed_folder`) or the pairs of an LFW-format pairs file (:func:`evaluate_pairs`).

Flip test-time augmentation (``flip=True``): the embedding of an image plus that of its mirror
image, L2-normalised. With this project's SavedModels the decoded, resized batch is fetched from
the graph and fed back mirrored through the ``pixels`` signature (flipped after the resize, as the
evaluation input flips). Any other SavedModel gets the mirror image made in TensorFlow with the
decoder the serving graph uses and re-encoded losslessly as PNG, so the model sees exactly the
flipped pixels.

The decision threshold of a two-image comparison comes from the caller or from the verification
report the training run wrote (``report.json``, see :func:`decision_threshold`): in
``<savedmodel>/assets.extra/``, then in ``eval/`` under each of the four parent directories of the
SavedModel.

A :class:`Transform` (``crop_box``, ``image_size``) crops and resizes image files before they are
sent, with the converter's own code (``data_tools.image_files.transform_image``: crop, centre
square, PIL Lanczos, lossless PNG), so that raw photos become the pictures the records hold.
``assets.extra/transform.json`` holds the transform of the evaluation records the model was
exported with (:meth:`Embedder.transform`); :func:`evaluate_pairs` users pass it to reproduce
the report's accuracy on the raw frames.
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
from data_tools import pairs as pairs_lib
from data_tools.manifest import atomic_write
from export import report, verification

SIGNATURE = "serving_default"
INPUT_KEY = "image_bytes"
OUTPUT_KEY = "embedding"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
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
        super(ImageDecodeError, self).__init__(
            "cannot use %d image(s):\n  %s" % (len(self.files), "\n  ".join(
                "%s: %s" % (name, reason) for name, reason in self.files)))


class Transform(collections.namedtuple("Transform", ["crop_box", "image_size"])):
    """The converter's ``--crop_box`` and ``--image_size``, with exactly their meaning: crop to
    ``crop_box`` ``(x0, y0, x1, y1)`` (pixels, x1/y1 exclusive), then centre-crop to a square and
    resize to ``image_size`` with PIL's Lanczos filter. Either may be None."""

    @classmethod
    def make(cls, crop_box=None, image_size=None):
        """A Transform from the converter's spellings (``'x0,y0,x1,y1'`` or 4 ints; a positive
        int), or None when both are None. Raises ``ValueError`` for bad values."""
        box = image_files.parse_crop_box(crop_box)
        if image_size is not None:
            if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1:
                raise ValueError("image size must be a positive integer, got %r" % (image_size,))
            image_size = int(image_size)
        if box is None and image_size is None:
            return None
        return cls(box, image_size)

    @classmethod
    def from_dict(cls, transform):
        """The Transform of a ``transform.json`` / manifest ``transform`` dict (None: None)."""
        if not transform:
            return None
        resampling = transform.get("resampling")
        if transform.get("image_size") is not None and resampling not in (
                None, image_files.RESAMPLING):
            raise ValueError("the conversion used %r resampling; only the converter's %r is "
                             "implemented" % (resampling, image_files.RESAMPLING))
        return cls.make(transform.get("crop_box"), transform.get("image_size"))

    def describe(self):
        """``crop_box=70,60,180,190 image_size=112`` (the flags that give this transform)."""
        parts = []
        if self.crop_box is not None:
            parts.append("crop_box=%s" % ",".join(str(c) for c in self.crop_box))
        if self.image_size is not None:
            parts.append("image_size=%d" % self.image_size)
        return " ".join(parts)

    def apply(self, data):
        """PNG bytes of encoded image ``data`` after the transform (the converter's pixels);
        raises ``image_files.ImageError`` with the reason."""
        return image_files.transformed_png(data, self.image_size, self.crop_box)


def find_saved_model(path):
    """The SavedModel directory for ``path``: ``path`` itself, or its newest numeric subdir.

    Estimator exporters write ``<base>/<timestamp>/saved_model.pb``; temporary
    ``temp-<timestamp>`` directories of an export in progress are ignored.
    """
    if not os.path.isdir(path):
        raise SavedModelNotFoundError("model directory %s does not exist" % path)
    if any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES):
        return path
    versions = [d for d in os.listdir(path)
                if d.isdigit() and _is_saved_model(os.path.join(path, d))]
    if versions:
        return os.path.join(path, max(versions, key=int))
    hints = []
    export_dir = os.path.join(path, "export")
    if os.path.isdir(export_dir):
        hints = [os.path.join(export_dir, d) for d in sorted(os.listdir(export_dir))
                 if os.path.isdir(os.path.join(export_dir, d))]
    message = ("no SavedModel in %s: it holds no saved_model.pb and no timestamped SavedModel "
               "subdirectory; pass a SavedModel directory or an exporter's base directory"
               % path)
    if hints:
        message += " (this looks like a model_dir; try one of: %s)" % ", ".join(hints)
    raise SavedModelNotFoundError(message)


def _is_saved_model(path):
    return any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES)


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


class Embedder(object):
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
                self._input, self._output = self._signature_tensors(meta_graph)
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
            raise EmbedError("SavedModel %s has no %r signature (it has: %s)"
                             % (self.saved_model_dir, SIGNATURE, sorted(signatures)))
        signature = signatures[SIGNATURE]
        if INPUT_KEY not in signature.inputs or OUTPUT_KEY not in signature.outputs:
            raise EmbedError("signature %r of %s must take %r and return %r; it takes %s and "
                             "returns %s" % (SIGNATURE, self.saved_model_dir, INPUT_KEY,
                                             OUTPUT_KEY, sorted(signature.inputs),
                                             sorted(signature.outputs)))
        if signature.inputs[INPUT_KEY].dtype != tf.string.as_datatype_enum:
            raise EmbedError("input %r of %s is not a string tensor of encoded images"
                             % (INPUT_KEY, self.saved_model_dir))
        return (self._graph.get_tensor_by_name(signature.inputs[INPUT_KEY].name),
                self._graph.get_tensor_by_name(signature.outputs[OUTPUT_KEY].name))

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
    def flip_method(self):
        """How mirror images are made: ``'pixels'`` (the decoded batch) or ``'png'``."""
        return "pixels" if self._pixels is not None else "png"

    def embed_bytes(self, images, batch_size=64, flip=False, names=None, progress=False):
        """Embeddings [N, D] float32 of encoded images (a list of bytes: JPEG, PNG, GIF, BMP).

        ``flip`` adds the embedding of each mirror image before normalising (test-time
        augmentation). ``names`` (one per image) are used in error messages. Raises
        :class:`ImageDecodeError` naming every image of the failing batch that cannot be decoded.
        """
        images = list(images)
        names = list(names) if names is not None else ["image %d" % i for i in range(len(images))]
        if len(names) != len(images):
            raise ValueError("%d names for %d images" % (len(names), len(images)))
        return self._embed_batches(images, names, lambda blobs, _: blobs, batch_size, flip,
                                   progress)

    def embed_files(self, paths, batch_size=64, flip=False, names=None, progress=False,
                    transform=None):
        """Embeddings [N, D] float32 of image files, read one batch at a time.

        JPEG, PNG, GIF and BMP files are sent as they are; other formats PIL reads (PGM, TIFF,
        WebP...) are converted to PNG first. ``transform`` (a :class:`Transform`) crops and
        resizes every file as the converter does. ``names`` (default: the paths) label errors.
        """
        paths = list(paths)
        names = list(names) if names is not None else paths
        return self._embed_batches(
            paths, names, lambda batch, batch_names: read_images(batch, batch_names, transform),
            batch_size, flip, progress)

    def transform(self):
        """The :class:`Transform` of the evaluation records this SavedModel was exported with
        (``assets.extra/transform.json``), or None (none stored, or no crop and no resize)."""
        try:
            stored = report.read_transform(os.path.join(self.saved_model_dir, ASSETS_EXTRA))
            return Transform.from_dict(stored)
        except ValueError as e:
            raise EmbedError("the conversion transform of %s: %s"
                             % (self.saved_model_dir, e)) from None

    def _embed_batches(self, items, names, to_blobs, batch_size, flip, progress):
        """The one batching loop: ``to_blobs(items[batch], names[batch])`` gives encoded images."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive, got %d" % batch_size)
        bar = _progress_bar(len(items), progress)
        try:
            chunks = []
            for start in range(0, len(items), batch_size):
                stop = start + batch_size
                blobs = to_blobs(items[start:stop], names[start:stop])
                chunks.append(self._embed_batch(blobs, names[start:stop], flip))
                bar.update(len(blobs))
        finally:
            bar.close()
        if not chunks:
            return np.zeros((0, self.embedding_size or 0), np.float32)
        return np.concatenate(chunks)

    def _embed_batch(self, blobs, names, flip):
        try:
            return self._run(blobs, flip)
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

    def _run(self, blobs, flip):
        feed = np.array(blobs, dtype=object)
        if not flip:
            embeddings = self._session.run(self._output, {self._input: feed})
        elif self._pixels is not None:
            plain, pixels = self._session.run([self._output, self._pixels], {self._input: feed})
            mirrored = self._session.run(self._output, {self._pixels: pixels[:, :, ::-1, :]})
            embeddings = verification.l2_normalize(plain + mirrored)
        else:
            mirrored = self._session.run(self._flip_output, {self._flip_input: feed})
            both = self._session.run(self._output,
                                     {self._input: np.concatenate([feed, mirrored])})
            embeddings = verification.l2_normalize(both[:len(blobs)] + both[len(blobs):])
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(blobs):
            raise EmbedError("the SavedModel returned embeddings of shape %s for %d images"
                             % (embeddings.shape, len(blobs)))
        return embeddings

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


def read_images(paths, names=None, transform=None):
    """The encoded bytes of image files, ready for ``embed_bytes``.

    Files TensorFlow cannot decode (not JPEG/PNG/GIF/BMP) are converted to PNG with PIL. With a
    :class:`Transform` every file is cropped and resized as the converter does, and sent as the
    PNG the converter would store. Raises :class:`ImageDecodeError` naming every file that
    cannot be read (or is smaller than the crop box).
    """
    names = names if names is not None else paths
    blobs, bad = [], []
    for path, name in zip(paths, names):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            bad.append((name, "cannot read: %s" % (e.strerror or e)))
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
                bad.append((name, "not an image TensorFlow or PIL can read (%s: %s)"
                            % (type(e).__name__, _first_line(str(e)))))
                continue
        blobs.append(data)
    if bad:
        raise ImageDecodeError(bad)
    return blobs


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

    ``threshold`` (the caller's) wins; otherwise the ``threshold`` of the model's verification
    report (:func:`find_report`). ``notes`` warn when that report was computed with another
    ``flip`` setting than the embeddings it will judge.
    """
    if threshold is not None:
        return threshold, "from --threshold", []
    path = find_report(saved_model_dir)
    if path is None:
        return None, ("no --threshold given and no report.json found; looked in: %s"
                      % ", ".join(report_candidates(saved_model_dir))), []
    data = report.read_report(path)
    found = data.get("threshold")
    if not isinstance(found, (int, float)):
        return None, "%s holds no threshold" % path, []
    source = "from %s" % path
    if isinstance(data.get("accuracy"), (int, float)):
        source += ", verification accuracy %.4f" % data["accuracy"]
    notes = []
    report_flip = (data.get("extra") or {}).get("flip")
    if isinstance(report_flip, bool) and report_flip != flip:
        notes.append("the report was computed %s flip test-time augmentation and these "
                     "embeddings %s it: the threshold may be slightly off"
                     % ("with" if report_flip else "without", "without" if report_flip
                        else "with"))
    return float(found), source, notes


class FolderEmbeddings(collections.namedtuple(
        "FolderEmbeddings", ["names", "embeddings", "skipped", "num_identities"])):
    """:func:`embed_folder`'s result: ``names`` are ``identity/file`` paths, one per row of
    ``embeddings``; ``skipped`` lists ``(relpath, reason)`` of the files left out."""


def embed_folder(embedder, folder, batch_size=64, flip=False, progress=False, on_skipped=None,
                 transform=None):
    """Embed every image of an identity-folder tree (``<folder>/<identity>/<image>``).

    ``on_skipped(relpath, reason)`` is called for each file left out, before any embedding (and
    before the error when nothing is left). ``transform``: see :meth:`Embedder.embed_files`.
    """
    if not os.path.isdir(folder):
        raise EmbedError("--folder %s is not a directory" % folder)
    scan = image_files.scan_identity_folders(folder)
    for relpath, reason in scan.skipped:
        if on_skipped is not None:
            on_skipped(relpath, reason)
    if not scan.entries:
        raise EmbedError("no images found in identity folders under %s" % folder)
    names = [entry.relpath for entry in scan.entries]
    paths = [os.path.join(folder, *name.split("/")) for name in names]
    embeddings = embedder.embed_files(paths, batch_size=batch_size, flip=flip, names=names,
                                      progress=progress, transform=transform)
    identities = len({entry.identity for entry in scan.entries})
    return FolderEmbeddings(names, embeddings, list(scan.skipped), identities)


class FoldsError(EmbedError):
    """The requested number of folds does not fit the pairs file."""


class PairsEvaluation(collections.namedtuple(
        "PairsEvaluation", ["metrics", "n_folds", "num_images"])):
    """:func:`evaluate_pairs`'s result: the :func:`export.verification.evaluate` metrics, the
    folds used and the number of distinct images embedded."""


def evaluate_pairs(embedder, pairs_path, image_dir, n_folds=None, far_target=1e-3,
                   batch_size=64, flip=False, progress=False, transform=None):
    """Verify the pairs of an LFW-format pairs file (images under ``image_dir``).

    Every distinct image is embedded once. ``n_folds`` defaults to the pairs file's folds. A
    missing image is an error, never a silently skipped pair (the message lists them).
    ``transform`` (a :class:`Transform`) crops and resizes every image as the converter does:
    with the SavedModel's own (:meth:`Embedder.transform`), raw frames give the pictures of the
    evaluation records, and the report's accuracy.
    """
    try:
        pairs_file = pairs_lib.read_pairs(pairs_path)
        relpaths, kept, _ = pairs_lib.resolve_pairs(pairs_file, image_dir)
    except OSError as e:
        raise EmbedError("cannot read pairs file %s: %s" % (pairs_path, e.strerror or e)) from e
    except ValueError as e:  # data_tools.pairs: malformed file, missing images, no image_dir
        raise EmbedError(str(e)) from e
    n_folds = n_folds or pairs_file.num_folds
    if n_folds < 2:
        raise FoldsError("%s has a single fold; the protocol needs at least 2 (pass --n_folds "
                         "to cut it into contiguous folds)" % pairs_path)
    if n_folds > len(kept):
        raise FoldsError("--n_folds=%d exceeds the %d pairs of %s" % (n_folds, len(kept),
                                                                      pairs_path))
    unique = sorted({path for pair in relpaths for path in pair})
    row = {path: i for i, path in enumerate(unique)}
    files = [os.path.join(image_dir, *path.split("/")) for path in unique]
    embeddings = embedder.embed_files(files, batch_size=batch_size, flip=flip, names=unique,
                                      progress=progress, transform=transform)
    index1 = np.array([row[p1] for p1, _ in relpaths])
    index2 = np.array([row[p2] for _, p2 in relpaths])
    issame = np.array([pair.issame for pair in kept], dtype=bool)
    metrics = verification.evaluate(embeddings[index1], embeddings[index2], issame,
                                    n_folds=n_folds, far_target=far_target)
    return PairsEvaluation(metrics, n_folds, len(unique))
