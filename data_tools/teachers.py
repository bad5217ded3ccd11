"""Teachers for embedding distillation: models whose embedding of each training image the
converter stores beside it (``make_tfrecords.py --teacher=SPEC``, record key
``teacher/embedding``).

A teacher sees the *source* image (the file the converter reads, or the raw photo with
``--align``) and applies its own preprocessing, so that the stored vector is what the teacher
itself would say about the photo. SPEC is one of:

* ``saved_model:DIR``: a SavedModel of this project (its ``serving_default`` signature; the
  conversion transform it was exported with is applied first);
* ``onnx:FILE``: an ONNX embedding model through onnxruntime, e.g. an insightface
  ``w600k_r50.onnx``. The defaults follow insightface's ``ArcFaceONNX``: the side from the
  model's input shape (else 112), RGB, NCHW, ``(x - 127.5) / 127.5`` (mean 0, std 1 when the
  graph starts with its own Sub and Mul, as the mxnet-converted models do);
* ``dlib``: dlib's ResNet face descriptor (extra ``[teacher]``: dlib-bin +
  face-recognition-models): HOG detector, 5-point landmarks, ``dlib.get_face_chip`` (150 px,
  padding 0.25), 128-d descriptor. A frame without a detection falls back to the whole frame and
  is counted (``fallbacks``).

:class:`TeacherCache` keeps the embeddings already computed (keyed by the sha256 of the bytes
the teacher read) in an append-only file of the output directory, so a killed conversion resumes
without embedding an image twice.
"""

import base64
import hashlib
import io
import json
import os

import numpy as np

from data_tools import fileio

SPEC_KINDS = ("saved_model", "onnx", "dlib")
LAYOUTS = ("auto", "nchw", "nhwc")
CHANNEL_ORDERS = ("rgb", "bgr")
CACHE_PREFIX = ".teacher-"
_FSYNC_EVERY = 64
# dlib's own descriptor settings (dlib/python_examples/face_recognition.py, face_recognition).
DLIB_CHIP_SIZE, DLIB_CHIP_PADDING, DLIB_UPSAMPLE = 150, 0.25, 1


class TeacherError(ValueError):
    """A teacher that cannot be loaded or used (bad SPEC, missing package or file)."""


def _sha256_file(path):
    return fileio.sha256_file(path)


def _rgb_array(data):
    """uint8 [H, W, 3] of encoded image bytes (EXIF orientation as stored: the converter does
    not transpose either)."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def mirrored_png(data):
    """Encoded image bytes mirrored left to right, as PNG (lossless, so the teacher sees the
    same pixels mirrored): what it embeds for ``make_tfrecords.py --teacher_flip``."""
    from PIL import Image, ImageOps  # noqa: PLC0415

    with Image.open(io.BytesIO(data)) as opened:
        image = opened if opened.mode in ("L", "RGB") else opened.convert("RGB")
        buffer = io.BytesIO()
        ImageOps.mirror(image).save(buffer, format="PNG")
    return buffer.getvalue()


class Teacher:
    """A loaded teacher: ``name``, ``dim``, ``description`` (JSON-able: everything that
    determines its vectors, for the conversion's options and plan) and :meth:`embed`."""

    name = None
    dim = None
    description = None
    # Whether forked worker processes may run it (plain C++ state, no threads or sessions):
    # the converter then embeds in its worker pool.
    fork_safe = False

    def __init__(self):
        # Whether the last embed() fell back to the whole frame (dlib: no face detected).
        self.fell_back = False

    def embed(self, data):
        """float32 [dim] of one encoded image; raises an exception whose text is the reason."""
        raise NotImplementedError

    def close(self):
        pass


class SavedModelTeacher(Teacher):
    """This project's SavedModel (``serving_default``: encoded ``image_bytes`` -> ``embedding``),
    with the conversion transform it was exported with (``assets.extra/transform.json``).

    Loaded here with TensorFlow directly: ``data_tools`` does not import ``export``
    (docs/DESIGN.md), whose ``embedder`` does the same for the embed CLI.
    """

    SIGNATURE, INPUT, OUTPUT = "serving_default", "image_bytes", "embedding"

    def __init__(self, saved_model_dir):
        super().__init__()
        import tensorflow.compat.v1 as tf  # noqa: PLC0415 (TF only when used)

        path = saved_model_path(saved_model_dir)
        self._transform = _read_transform(path)
        self._graph = tf.Graph()
        self._session = tf.Session(graph=self._graph)
        try:
            with self._graph.as_default():
                meta_graph = tf.saved_model.loader.load(
                    self._session, [tf.saved_model.tag_constants.SERVING], path)
            signature = meta_graph.signature_def.get(self.SIGNATURE)
            if signature is None or self.INPUT not in signature.inputs or \
                    self.OUTPUT not in signature.outputs:
                raise TeacherError(f"--teacher=saved_model:{saved_model_dir}: no "
                                   f"{self.SIGNATURE!r} signature taking {self.INPUT!r} and "
                                   f"returning {self.OUTPUT!r}")
            self._input = self._graph.get_tensor_by_name(signature.inputs[self.INPUT].name)
            self._output = self._graph.get_tensor_by_name(signature.outputs[self.OUTPUT].name)
        except (tf.errors.OpError, OSError, RuntimeError) as e:
            self._session.close()
            raise TeacherError(f"--teacher=saved_model:{saved_model_dir}: cannot load "
                               f"({type(e).__name__}: {e})") from None
        except TeacherError:
            self._session.close()
            raise
        self.dim = int(self._output.shape.as_list()[-1])
        self.name = f"saved_model:{os.path.basename(os.path.normpath(saved_model_dir))}"
        self.description = {"kind": "saved_model", "path": path,
                            "saved_model_pb_sha256": _sha256_file(
                                os.path.join(path, "saved_model.pb")),
                            "transform": self._transform}

    def embed(self, data):
        from data_tools import image_files  # noqa: PLC0415

        if self._transform is not None:
            data = image_files.transformed_png(data, self._transform.get("image_size"),
                                               self._transform.get("crop_box"))
        out = self._session.run(self._output, {self._input: np.array([data], dtype=object)})
        return np.asarray(out, np.float32)[0]

    def close(self):
        self._session.close()


def saved_model_path(path):
    """``path`` when it holds ``saved_model.pb``, else its newest timestamped export (an
    exporter's base directory); raises :class:`TeacherError`."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return os.path.abspath(path)
    exports = sorted((int(name), name) for name in (os.listdir(path) if os.path.isdir(path)
                                                    else [])
                     if name.isdigit() and os.path.isfile(os.path.join(path, name,
                                                                       "saved_model.pb")))
    if not exports:
        raise TeacherError(f"--teacher=saved_model:{path}: no saved_model.pb there (nor in a "
                           "timestamped export under it)")
    return os.path.abspath(os.path.join(path, exports[-1][1]))


def _read_transform(path):
    """The exported conversion transform (``crop_box``, ``image_size``) or None."""
    from data_tools import image_files  # noqa: PLC0415

    transform_path = os.path.join(path, "assets.extra", "transform.json")
    if not os.path.isfile(transform_path):
        return None
    try:
        with open(transform_path, encoding="utf-8") as f:
            stored = json.load(f)
    except ValueError as e:
        raise TeacherError(f"{transform_path} is not valid JSON: {e}") from None
    if not isinstance(stored, dict) or (stored.get("crop_box") is None
                                        and stored.get("image_size") is None):
        return None
    if stored.get("image_size") is not None and stored.get("resampling") not in (
            None, image_files.RESAMPLING):
        raise TeacherError(f"{transform_path}: {stored.get('resampling')!r} resampling; only "
                           f"the converter's {image_files.RESAMPLING!r} is implemented")
    box = stored.get("crop_box")
    return {"crop_box": list(box) if box is not None else None,
            "image_size": stored.get("image_size")}


def insightface_normalisation(model):
    """insightface's rule (``ArcFaceONNX.__init__``): mean 0, std 1 when one of the graph's first
    8 nodes is a Sub and one a Mul (mxnet models normalise inside), else 127.5 and 127.5."""
    names = [node.name for node in model.graph.node[:8]]
    has_sub = any(n.startswith("Sub") or n.startswith("_minus") for n in names)
    has_mul = any(n.startswith("Mul") or n.startswith("_mul") for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


class OnnxTeacher(Teacher):
    """An ONNX embedding model run by onnxruntime on resized, normalised pixels."""

    def __init__(self, path, layout="auto", channels="rgb", mean=None, std=None,
                 image_size=None):
        super().__init__()
        if layout not in LAYOUTS:
            raise TeacherError(f"--teacher_layout must be one of {LAYOUTS}, got {layout!r}")
        if channels not in CHANNEL_ORDERS:
            raise TeacherError(f"--teacher_channels must be one of {CHANNEL_ORDERS}, got "
                               f"{channels!r}")
        if not os.path.isfile(path):
            raise TeacherError(f"--teacher=onnx:{path}: no such file")
        try:
            import onnx  # noqa: PLC0415
            import onnxruntime  # noqa: PLC0415
        except ImportError as e:
            raise TeacherError(f"--teacher=onnx needs onnx and onnxruntime (pip install "
                               f"-e .[onnx]): {e}") from None
        try:
            model = onnx.load(path)
            self._session = onnxruntime.InferenceSession(path,
                                                         providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnx raises many types for a bad file
            raise TeacherError(f"--teacher=onnx:{path}: cannot load ({type(e).__name__}: "
                               f"{e})") from None
        default_mean, default_std = insightface_normalisation(model)
        self._mean = float(default_mean if mean is None else mean)
        self._std = float(default_std if std is None else std)
        if self._std == 0:
            raise TeacherError("--teacher_std must not be 0")
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise TeacherError(f"--teacher=onnx:{path}: expected one input, got {len(inputs)}")
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise TeacherError(f"--teacher=onnx:{path}: input shape {shape} is not 4-D")
        if layout == "auto":
            layout = "nchw" if shape[1] == 3 else "nhwc"
        self._layout = layout
        side_dims = shape[2:4] if layout == "nchw" else shape[1:3]
        if image_size is None:
            known = [d for d in side_dims if isinstance(d, int) and d > 0]
            image_size = known[0] if known else 112
        self._size = int(image_size)
        self._input, self._output = inputs[0].name, outputs[0].name
        self._channels = channels
        self.dim = int(self._run(np.zeros((self._size, self._size, 3), np.uint8)).shape[0])
        self.name = f"onnx:{os.path.basename(path)}"
        self.description = {"kind": "onnx", "path": os.path.abspath(path),
                            "sha256": _sha256_file(path), "layout": layout,
                            "channels": channels, "mean": self._mean, "std": self._std,
                            "image_size": self._size}

    def _run(self, rgb):
        from PIL import Image  # noqa: PLC0415

        if rgb.shape[:2] != (self._size, self._size):
            # Plain bilinear resize of the whole frame, as cv2.dnn.blobFromImages does.
            rgb = np.asarray(Image.fromarray(rgb).resize((self._size, self._size),
                                                         Image.BILINEAR))
        pixels = rgb.astype(np.float32)
        if self._channels == "bgr":
            pixels = pixels[:, :, ::-1]
        pixels = (pixels - self._mean) / self._std
        if self._layout == "nchw":
            pixels = pixels.transpose(2, 0, 1)
        out = self._session.run([self._output], {self._input: pixels[None].astype(np.float32)})
        return np.asarray(out[0], np.float32).reshape(-1)

    def embed(self, data):
        return self._run(_rgb_array(data))


class DlibTeacher(Teacher):
    """dlib's ResNet descriptor with its own detector and 5-point chip."""

    fork_safe = True

    def __init__(self):
        super().__init__()
        try:
            import dlib  # noqa: PLC0415
            import face_recognition_models as models  # noqa: PLC0415
        except ImportError as e:
            raise TeacherError("--teacher=dlib needs the [teacher] extra: pip install "
                               f"dlib-bin face-recognition-models ({e})") from None
        self._dlib = dlib
        predictor = models.pose_predictor_five_point_model_location()
        recognizer = models.face_recognition_model_location()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(predictor)
        self._recognizer = dlib.face_recognition_model_v1(recognizer)
        self.dim = 128
        self.name = "dlib"
        self.description = {
            "kind": "dlib", "dlib": getattr(dlib, "__version__", "unknown"),
            "shape_predictor_sha256": _sha256_file(predictor),
            "recognition_model_sha256": _sha256_file(recognizer),
            "upsample": DLIB_UPSAMPLE, "chip_size": DLIB_CHIP_SIZE,
            "chip_padding": DLIB_CHIP_PADDING, "no_detection": "whole frame"}

    @property
    def recognizer(self):
        """dlib's descriptor network: ``compute_face_descriptor(chip)`` of an aligned
        150x150 chip (benchmarks/student_vs_teacher.py times it alone)."""
        return self._recognizer

    def face_box(self, rgb):
        """The largest detected face, or None."""
        boxes = list(self._detector(rgb, DLIB_UPSAMPLE))
        if not boxes:
            return None
        return max(boxes, key=lambda box: box.width() * box.height())

    def embed(self, data):
        rgb = _rgb_array(data)
        box = self.face_box(rgb)
        self.fell_back = box is None
        if box is None:
            box = self._dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        shape = self._predictor(rgb, box)
        chip = self._dlib.get_face_chip(rgb, shape, size=DLIB_CHIP_SIZE,
                                        padding=DLIB_CHIP_PADDING)
        return np.asarray(self._recognizer.compute_face_descriptor(chip), np.float32)


def load_teacher(spec, layout="auto", channels="rgb", mean=None, std=None, image_size=None):
    """The :class:`Teacher` of ``spec`` (``saved_model:DIR``, ``onnx:FILE`` or ``dlib``); the
    other arguments are the ONNX preprocessing. Raises :class:`TeacherError`."""
    kind, _, target = str(spec).partition(":")
    if kind not in SPEC_KINDS:
        raise TeacherError(f"--teacher must be saved_model:DIR, onnx:FILE or dlib, got {spec!r}")
    if kind == "dlib":
        if target:
            raise TeacherError(f"--teacher=dlib takes no path, got {spec!r}")
        return DlibTeacher()
    if not target:
        raise TeacherError(f"--teacher={kind}: needs a path ({kind}:PATH)")
    if kind == "onnx":
        return OnnxTeacher(target, layout=layout, channels=channels, mean=mean, std=std,
                           image_size=image_size)
    return SavedModelTeacher(target)


def describe(teacher):
    """The manifest's ``teacher`` entry: name, dimension and what determines the vectors."""
    return {"name": teacher.name, "dim": teacher.dim, "spec": teacher.description}


def digest(teacher):
    """Hex digest of the teacher's description: names its cache file."""
    text = json.dumps(describe(teacher), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode_vector(vector):
    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")


def decode_vector(text):
    return np.frombuffer(base64.b64decode(text), "<f4").astype(np.float32)


def vector_digest(vector):
    """sha256 of the float32 bytes: what a shard's plan records of each stored vector."""
    return hashlib.sha256(np.asarray(vector, "<f4").tobytes()).hexdigest()


def mean_vector(vectors):
    """The mean of the teacher's ``vectors`` (float64 accumulation) as :func:`json_vector`, or
    None when there are none."""
    if not len(vectors):
        return None
    return json_vector(np.mean(np.asarray(vectors, np.float64), axis=0))


def json_vector(vector):
    """A vector as a list of floats with 7 significant digits (float32's), JSON-ready: the
    manifest's and params.json's teacher mean."""
    return [float(f"{value:.7g}") for value in vector]


class TeacherCache:
    """Append-only ``{sha256, embedding, fallback}`` lines in ``<dir>/.teacher-<digest>.jsonl``.

    Each line is flushed as written and fsynced every few lines; a line cut short by a kill is
    dropped on the next open (and the file truncated to its last whole line), so what the file
    holds is always a set of finished embeddings.
    """

    def __init__(self, directory, teacher):
        self.path = os.path.join(directory, f"{CACHE_PREFIX}{digest(teacher)[:16]}.jsonl")
        self.dim = teacher.dim
        self.vectors = {}
        self.fallbacks = set()  # sha256 of the images the teacher saw as a whole frame
        self._unsynced = 0
        self._file = None
        if os.path.isfile(self.path):
            self._load()

    def _load(self):
        with open(self.path, "rb") as f:
            data = f.read()
        whole = data[:data.rfind(b"\n") + 1]
        for line in whole.splitlines():
            try:
                entry = json.loads(line.decode("utf-8"))
                vector = decode_vector(entry["embedding"])
            except (ValueError, KeyError, TypeError):
                continue
            if vector.shape == (self.dim,):
                self.vectors[entry["sha256"]] = vector
                if entry.get("fallback"):
                    self.fallbacks.add(entry["sha256"])
        if len(whole) != len(data):
            with open(self.path, "rb+") as f:
                f.truncate(len(whole))

    def get(self, sha256):
        return self.vectors.get(sha256)

    def put(self, sha256, vector, fallback=False):
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        entry = {"sha256": sha256, "embedding": encode_vector(vector)}
        if fallback:
            entry["fallback"] = True
            self.fallbacks.add(sha256)
        self._file.write(json.dumps(entry, sort_keys=True) + "\n")
        self._file.flush()
        self.vectors[sha256] = np.asarray(vector, np.float32)
        self._unsynced += 1
        if self._unsynced >= _FSYNC_EVERY:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def close(self):
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def teacher_reason(error):
    """The skip reason of an image the teacher failed on."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"teacher failed: {type(error).__name__}" + (f": {text}" if text else "")


# The teacher the converter's forked workers run (set in the parent before the pool forks).
_FORKED = []
_CHUNK = 64


def share_with_workers(teacher):
    """Make ``teacher`` the one forked workers run (:func:`embed_task`); call before forking."""
    del _FORKED[:]
    if teacher is not None:
        _FORKED.append(teacher)


def _embed_checked(teacher, data):
    """``(vector or None, fell back, reason or None)`` of one image."""
    try:
        vector = np.asarray(teacher.embed(data), np.float32).reshape(-1)
        if vector.shape != (teacher.dim,) or not np.all(np.isfinite(vector)):
            raise ValueError(f"embedding of shape {vector.shape}, finite: "
                             f"{bool(np.all(np.isfinite(vector)))}")
    except Exception as e:  # noqa: BLE001 - any teacher failure skips the image
        return None, False, teacher_reason(e)
    return vector, bool(teacher.fell_back), None


def embed_task(task):
    """Worker: ``(index, bytes)`` -> ``(index, vector or None, fell back, reason or None)``."""
    index, data = task
    return (index,) + _embed_checked(_FORKED[0], data)


def embed_all(teacher, cache, items, progress_bar=None, imap=None):
    """Teacher vectors of ``items`` ``[(key, bytes-or-callable)]``: ``({key: vector},
    {key: reason}, {keys embedded as a whole frame})``. Cached vectors are reused, new ones
    appended to ``cache`` a chunk at a time; a failure is a reason (the image is skipped), never
    an exception. ``imap`` (an ordered parallel map whose workers were forked after
    :func:`share_with_workers`) embeds the new ones in parallel."""
    vectors, reasons, fallbacks = {}, {}, set()
    items = list(items)
    try:
        for start in range(0, len(items), _CHUNK):
            todo, shas = [], {}
            for key, source in items[start:start + _CHUNK]:
                try:
                    data = source() if callable(source) else source
                except (OSError, ValueError) as e:
                    reasons[key] = teacher_reason(e)
                    continue
                shas[key] = hashlib.sha256(data).hexdigest()
                if cache.get(shas[key]) is None:
                    todo.append((key, data))
            if imap is not None and len(todo) > 1:
                results = imap(embed_task, [(i, data) for i, (_, data) in enumerate(todo)])
            else:
                results = ((i,) + _embed_checked(teacher, data)
                           for i, (_, data) in enumerate(todo))
            for i, vector, fell_back, reason in results:
                key = todo[i][0]
                if reason is not None:
                    reasons[key] = reason
                elif cache.get(shas[key]) is None:  # twice in one chunk: stored once
                    cache.put(shas[key], vector, fallback=fell_back)
            for key, sha in shas.items():
                vector = cache.get(sha)
                if key not in reasons and vector is not None:
                    vectors[key] = vector
                    if sha in cache.fallbacks:
                        fallbacks.add(key)
            if progress_bar is not None:
                progress_bar.update(min(_CHUNK, len(items) - start))
    finally:
        cache.close()
    return vectors, reasons, fallbacks
