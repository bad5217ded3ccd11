"""Embed and verify faces with an exported SavedModel.

    python -m export.embed --model DIR a.jpg                  # print the embedding
    python -m export.embed --model DIR a.jpg b.jpg            # same person or not?
    python -m export.embed --model DIR --folder faces/ --output faces_emb
    python -m export.embed --model DIR --pairs pairs.txt --image_dir lfw/ --report_dir out/

``--model`` is a SavedModel directory or an exporter's base directory holding timestamped
SavedModels (``model_dir/export/best``: the newest is used). The SavedModel is loaded with the
TF1 loader, so this runs on TF 1.15 as on TF 2.x, and is called through its ``serving_default``
signature: ``image_bytes`` (JPEG/PNG bytes, any size) in, L2-normalised ``embedding`` out.

Flip test-time augmentation (``--flip``, on by default, as in the evaluation): the embedding of
an image plus that of its mirror image, L2-normalised. With this project's SavedModels the
decoded, resized batch is fetched from the graph and fed back mirrored through the ``pixels``
signature (flipped after the resize, as the evaluation input flips). Any other SavedModel gets
the mirror image made in TensorFlow with the decoder the serving graph uses and re-encoded
losslessly as PNG, so the model sees exactly the flipped pixels.

The decision threshold of the two-image mode comes from ``--threshold`` or from the verification
report the training run wrote (``report.json``): in ``<savedmodel>/assets.extra/``, then in
``eval/`` under each of the four parent directories of the SavedModel.
"""

import io
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags
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
        if batch_size < 1:
            raise ValueError("batch_size must be positive, got %d" % batch_size)
        bar = _progress_bar(len(images), progress)
        try:
            chunks = []
            for start in range(0, len(images), batch_size):
                stop = start + batch_size
                chunks.append(self._embed_batch(images[start:stop], names[start:stop], flip))
                bar.update(len(chunks[-1]))
        finally:
            bar.close()
        if not chunks:
            return np.zeros((0, self.embedding_size or 0), np.float32)
        return np.concatenate(chunks)

    def embed_files(self, paths, batch_size=64, flip=False, names=None, progress=False):
        """Embeddings [N, D] float32 of image files, read one batch at a time.

        JPEG, PNG, GIF and BMP files are sent as they are; other formats PIL reads (PGM, TIFF,
        WebP...) are converted to PNG first. ``names`` (default: the paths) label errors.
        """
        paths = list(paths)
        names = list(names) if names is not None else paths
        if batch_size < 1:
            raise ValueError("batch_size must be positive, got %d" % batch_size)
        bar = _progress_bar(len(paths), progress)
        try:
            chunks = []
            for start in range(0, len(paths), batch_size):
                batch_names = names[start:start + batch_size]
                blobs = read_images(paths[start:start + batch_size], batch_names)
                chunks.append(self._embed_batch(blobs, batch_names, flip))
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


def read_images(paths, names=None):
    """The encoded bytes of image files, ready for ``embed_bytes``.

    Files TensorFlow cannot decode (not JPEG/PNG/GIF/BMP) are converted to PNG with PIL.
    Raises :class:`ImageDecodeError` naming every file that cannot be read.
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
        if not data.startswith(_TF_IMAGE_MAGIC):
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


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------

def _define_flags():
    # A FlagValues of our own, made per call: importing this module registers nothing in the
    # global absl FLAGS (estimator_main's flags live there), and a second run in the same process
    # (tests) starts from the defaults.
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "SavedModel directory, or an exporter's base directory "
                        "holding timestamped SavedModels (the newest is used).", flag_values=fv)
    flags.DEFINE_bool("flip", True, "Flip test-time augmentation: embedding of the image plus that "
                      "of its mirror image, renormalised, as in evaluation. --noflip returns the "
                      "SavedModel's own output.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 64, "Images per SavedModel call.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_float("threshold", None, "Decision threshold on the squared L2 distance of two "
                       "images (same person when below). Default: the 'threshold' of the model's "
                       "report.json.", flag_values=fv)
    flags.DEFINE_string("output", None, "Save embeddings to OUTPUT.npy and the image names to "
                        "OUTPUT.names.txt (required with --folder).", flag_values=fv)
    flags.DEFINE_string("folder", None, "Embed every image of this identity-folder tree "
                        "(<folder>/<identity>/<image>).", flag_values=fv)
    flags.DEFINE_string("pairs", None, "Evaluate the model on this LFW-format pairs file.",
                        flag_values=fv)
    flags.DEFINE_string("image_dir", None, "Identity folders of the --pairs images.",
                        flag_values=fv)
    flags.DEFINE_integer("n_folds", None, "Folds of the --pairs evaluation; default: the pairs "
                         "file's.", lower_bound=2, flag_values=fv)
    flags.DEFINE_float("far_target", 1e-3, "FAR of the reported VAL@FAR.", flag_values=fv)
    flags.DEFINE_string("report_dir", None, "Write report.json and roc.png of the --pairs "
                        "evaluation here.", flag_values=fv)
    return fv


def _usage(fv):
    title_and_examples = "\n\n".join(__doc__.split("\n\n")[:2]).strip()
    return title_and_examples + "\n\nFlags:\n" + fv.get_help()


def main(argv):
    """Run the CLI on ``argv`` (``argv[0]`` is the program name); returns the exit status."""
    fv = _define_flags()
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print(_usage(fv))
        return 0
    try:
        images = fv(list(argv))[1:]
    except flags.Error as e:
        print("error: %s\n\n%s" % (e, _usage(fv)), file=sys.stderr)
        return 2
    try:
        _check_usage(fv, images)
        with load_saved_model(fv.model) as embedder:
            print("model: %s" % embedder.saved_model_dir, file=sys.stderr)
            if fv.pairs:
                _evaluate_pairs(fv, embedder)
            elif fv.folder:
                _embed_folder(fv, embedder)
            elif len(images) == 2:
                _verify_two(fv, embedder, images)
            else:
                _embed_images(fv, embedder, images)
    except UsageError as e:
        print("error: %s\n(--help lists the flags)" % e, file=sys.stderr)
        return 2
    except EmbedError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


class UsageError(Exception):
    """Flags that do not make sense together."""


def _check_usage(fv, images):
    if not fv.model:
        raise UsageError("--model is required")
    modes = [name for name, on in (("--pairs", fv.pairs), ("--folder", fv.folder),
                                   ("IMAGE arguments", images)) if on]
    if len(modes) != 1:
        raise UsageError("give exactly one of IMAGE arguments, --folder or --pairs (got %s)"
                         % (" and ".join(modes) if modes else "none"))
    if fv.pairs and not fv.image_dir:
        raise UsageError("--pairs needs --image_dir, the folder of the identity folders")
    if fv.folder and not fv.output:
        raise UsageError("--folder needs --output (embeddings go to OUTPUT.npy, names to "
                         "OUTPUT.names.txt)")
    if not fv.pairs and (fv.report_dir or fv.n_folds or fv.image_dir):
        raise UsageError("--report_dir, --n_folds and --image_dir apply to --pairs only")
    if fv.pairs and fv.output:
        raise UsageError("--output applies to IMAGE arguments and --folder; --pairs writes its "
                         "report to --report_dir")
    if not 0.0 < fv.far_target <= 1.0:
        raise UsageError("--far_target must be in (0, 1], got %g" % fv.far_target)
    if fv.threshold is not None and len(images) != 2:
        raise UsageError("--threshold applies to the comparison of exactly two images")


def _embed_images(fv, embedder, images):
    embeddings = embedder.embed_files(images, batch_size=fv.batch_size, flip=fv.flip)
    if fv.output:
        paths = save_embeddings(embeddings, images, fv.output)
        print("%d embeddings of size %d -> %s, %s" % (len(images), embeddings.shape[1],
                                                      paths[0], paths[1]))
        return
    for path, embedding in zip(images, embeddings):
        print("%s %s" % (path, " ".join("%.8g" % v for v in embedding)))


def _verify_two(fv, embedder, images):
    embeddings = embedder.embed_files(images, batch_size=fv.batch_size, flip=fv.flip)
    if fv.output:
        save_embeddings(embeddings, images, fv.output)
    similarity, distance = compare(embeddings[0], embeddings[1])
    print("image 1: %s" % images[0])
    print("image 2: %s" % images[1])
    print("cosine similarity: %.6f" % similarity)
    print("squared L2 distance: %.6f" % distance)

    threshold, source, notes = _decision_threshold(fv, embedder.saved_model_dir)
    for note in notes:
        print("note: %s" % note)
    if threshold is None:
        print("decision: none (%s)" % source)
        return
    same = distance < threshold
    print("threshold: %.6f (%s)" % (threshold, source))
    print("decision: %s (squared L2 distance %.6f %s threshold %.6f)" % (
        "same person" if same else "different people", distance, "<" if same else ">=",
        threshold))


def _decision_threshold(fv, saved_model_dir):
    """``(threshold or None, where it came from or why there is none, notes)``."""
    if fv.threshold is not None:
        return fv.threshold, "from --threshold", []
    path = find_report(saved_model_dir)
    if path is None:
        return None, ("no --threshold given and no report.json found; looked in: %s"
                      % ", ".join(report_candidates(saved_model_dir))), []
    data = report.read_report(path)
    threshold = data.get("threshold")
    if not isinstance(threshold, (int, float)):
        return None, "%s holds no threshold" % path, []
    source = "from %s" % path
    if isinstance(data.get("accuracy"), (int, float)):
        source += ", verification accuracy %.4f" % data["accuracy"]
    notes = []
    report_flip = (data.get("extra") or {}).get("flip")
    if isinstance(report_flip, bool) and report_flip != fv.flip:
        notes.append("the report was computed %s flip test-time augmentation and these "
                     "embeddings %s it: the threshold may be slightly off"
                     % ("with" if report_flip else "without", "without" if report_flip
                        else "with"))
    return float(threshold), source, notes


def _embed_folder(fv, embedder):
    if not os.path.isdir(fv.folder):
        raise EmbedError("--folder %s is not a directory" % fv.folder)
    scan = image_files.scan_identity_folders(fv.folder)
    for relpath, reason in scan.skipped:
        print("skipped %s: %s" % (relpath, reason), file=sys.stderr)
    if not scan.entries:
        raise EmbedError("no images found in identity folders under %s" % fv.folder)
    names = [entry.relpath for entry in scan.entries]
    paths = [os.path.join(fv.folder, *name.split("/")) for name in names]
    embeddings = embedder.embed_files(paths, batch_size=fv.batch_size, flip=fv.flip,
                                      names=names, progress=True)
    npy_path, names_path = save_embeddings(embeddings, names, fv.output)
    identities = len({entry.identity for entry in scan.entries})
    print("%d images of %d identities, embeddings of size %d -> %s, %s"
          % (len(names), identities, embeddings.shape[1], npy_path, names_path))


def _evaluate_pairs(fv, embedder):
    try:
        pairs_file = pairs_lib.read_pairs(fv.pairs)
        # A missing image is an error, never a silently skipped pair (the message lists them).
        relpaths, kept, _ = pairs_lib.resolve_pairs(pairs_file, fv.image_dir)
    except OSError as e:
        raise EmbedError("cannot read pairs file %s: %s" % (fv.pairs, e.strerror or e)) from e
    except ValueError as e:  # data_tools.pairs: malformed file, missing images, no image_dir
        raise EmbedError(str(e)) from e
    n_folds = fv.n_folds or pairs_file.num_folds
    if n_folds < 2:
        raise UsageError("%s has a single fold; the protocol needs at least 2 (pass --n_folds "
                         "to cut it into contiguous folds)" % fv.pairs)
    if n_folds > len(kept):
        raise UsageError("--n_folds=%d exceeds the %d pairs of %s" % (n_folds, len(kept),
                                                                      fv.pairs))
    unique = sorted({path for pair in relpaths for path in pair})
    row = {path: i for i, path in enumerate(unique)}
    files = [os.path.join(fv.image_dir, *path.split("/")) for path in unique]
    embeddings = embedder.embed_files(files, batch_size=fv.batch_size, flip=fv.flip,
                                      names=unique, progress=True)
    index1 = np.array([row[p1] for p1, _ in relpaths])
    index2 = np.array([row[p2] for _, p2 in relpaths])
    issame = np.array([pair.issame for pair in kept], dtype=bool)
    metrics = verification.evaluate(embeddings[index1], embeddings[index2], issame,
                                    n_folds=n_folds, far_target=fv.far_target)

    print("pairs: %d (%d same, %d different) in %d folds, %d images, flip TTA %s"
          % (metrics["num_pairs"], metrics["num_same"], metrics["num_diff"], n_folds,
             len(unique), "on" if fv.flip else "off"))
    print("accuracy: %.4f +- %.4f" % (metrics["accuracy"], metrics["accuracy_std"]))
    print("threshold: %.4f (squared L2, mean over folds)" % metrics["threshold"])
    print("VAL@FAR=%g: %.4f +- %.4f (FAR %.5f)" % (fv.far_target, metrics["val"],
                                                   metrics["val_std"], metrics["far"]))
    print("AUC: %.4f" % metrics["auc"])
    print("EER: %.4f" % metrics["eer"])
    if fv.report_dir:
        extra = {"model": os.path.abspath(embedder.saved_model_dir),
                 "pairs": os.path.abspath(fv.pairs),
                 "image_dir": os.path.abspath(fv.image_dir),
                 "flip": bool(fv.flip), "num_images": len(unique)}
        json_path, png_path = report.write_report(metrics, fv.report_dir, extra=extra)
        print("report: %s, %s" % (json_path, png_path))


def run():
    """Console entry point (``circle-embed``, ``python -m export.embed``)."""
    tf.get_logger().setLevel("ERROR")  # the TF1 loader's deprecation notices are not for users
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
