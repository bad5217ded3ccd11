"""The face-recognition service without its HTTP layer: images in, embeddings, decisions and
gallery changes out (``export.serve_app`` puts it on HTTP).

Every uploaded image is checked before the model sees it (:func:`prepare_image`): its size in
bytes, its header (format, PIL's decompression-bomb guard, width and height against
:class:`Limits`), then a full decode, which is the only way to notice a truncated JPEG. The
model's own transform (``assets.extra/transform.json``: the crop box and size its evaluation
records were made with) is applied as ``export.embed --pairs`` applies it; ``align`` detects
the largest face of a raw photo and aligns it onto the 5-point template instead. Anything
wrong is a :class:`ServiceError` with the HTTP status that says what: 400 (not an image,
damaged), 413 (too large), 422 (usable format, unusable content: too small, no face).

The SavedModel is called by one :class:`export.microbatch.MicroBatcher`: the images of
concurrent requests share a call. When the serving signature has an ``embedding_norm`` output
(the norm before L2 normalisation, ``Embedder.embed_bytes(with_norm=True)``), it is fetched too
and ``/v1/embed`` returns it.

Enrolment writes the SQLite gallery (:mod:`export.gallery_store`, one transaction per request)
and then the in-memory index (:mod:`export.search_index`), which is rebuilt from the gallery at
start.
"""

import collections
import hashlib
import io
import os
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

from data_tools import image_files
from data_tools.transform import DEFAULT_ALIGNED_SIZE, Transform
from evaluation import reports as report_lib
from export import gallery_store, microbatch, search_index, serve_thresholds

ALIGNED_SIZE = DEFAULT_ALIGNED_SIZE  # insightface's template, when the model does not say


class ServiceError(Exception):
    """A request the service cannot answer: ``status`` (HTTP) and a one-line message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Limits(collections.namedtuple(
        "Limits", ["max_request_bytes", "max_pixels", "max_side", "min_side", "max_images"])):
    """Request limits: bytes of one request, pixels and longest side of one image (both
    checked on the header, before decoding), the shortest side an image must have, and the
    images of one enrolment."""


DEFAULT_LIMITS = Limits(max_request_bytes=16 << 20, max_pixels=40_000_000, max_side=10_000,
                        min_side=16, max_images=32)

_UNIDENTIFIED = getattr(Image, "UnidentifiedImageError", OSError)


def _image_status(reason):
    if "decompression-bomb" in reason or "exceed" in reason:
        return 413
    if "crop box" in reason:
        return 422
    return 400


def _check_header(data, limits, name):
    """Open the header of ``data`` and check its dimensions; returns PIL's lazy image."""
    if not data:
        raise ServiceError(400, f"{name}: empty upload (0 bytes)")
    if len(data) > limits.max_request_bytes:
        raise ServiceError(413, f"{name}: {len(data)} bytes exceed the limit of "
                                f"{limits.max_request_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ServiceError(413, f"{name}: refused by the decompression-bomb guard "
                                    f"({e})") from None
        except _UNIDENTIFIED:
            raise ServiceError(400, f"{name}: not an image (format not recognised)") from None
        except Exception as e:  # noqa: BLE001 - decoders raise anything on hostile input
            raise ServiceError(400, f"{name}: corrupt image header ({type(e).__name__})") \
                from None
    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ServiceError(413, f"{name}: {width}x{height} pixels exceed the limit "
                                f"({limits.max_pixels} pixels, {limits.max_side} per side)")
    if min(width, height) < limits.min_side:
        raise ServiceError(422, f"{name}: {width}x{height} is too small for a face (the "
                                f"shortest side must be at least {limits.min_side} pixels)")
    return image


def prepare_image(data, limits=DEFAULT_LIMITS, transform=None, name="image"):
    """The bytes to send to the SavedModel for one upload (see the module docstring).

    JPEG and PNG in 8-bit grayscale or RGB go as they are once fully decoded; other formats
    are converted to PNG; with a ``transform`` (``data_tools.transform.Transform``) the
    converter's crop and resize are applied (an aligned model's upload is taken as an aligned
    face already, and only resized to the model's size). Raises :class:`ServiceError`.
    """
    _check_header(data, limits, name)
    try:
        if transform is not None and transform.align:
            return image_files.transformed_png(data, transform.image_size)
        if transform is not None:
            return transform.apply(data)
        info = image_files.check_bytes(data)
        if info.stored_format is not None:
            return bytes(data)
        return image_files.transformed_png(data)
    except image_files.ImageError as e:
        raise ServiceError(_image_status(str(e)), f"{name}: {e}") from None


def open_photo(data, limits=DEFAULT_LIMITS, name="image"):
    """A decoded 8-bit L/RGB PIL image of a raw photo (EXIF orientation applied)."""
    _check_header(data, limits, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
            image = ImageOps.exif_transpose(image)
            return image if image.mode in ("L", "RGB") else image.convert("RGB")
        except Exception as e:  # noqa: BLE001
            raise ServiceError(400, f"{name}: corrupt or truncated image data "
                                    f"({type(e).__name__})") from None


def records_were_aligned(saved_model_dir):
    """True when the model's ``transform.json`` says its records were 5-point aligned faces
    (``"align": true``): then raw photos must be aligned too, and ``align`` defaults on."""
    stored = report_lib.read_transform(os.path.join(saved_model_dir, "assets.extra"))
    transform = Transform.from_dict(stored)
    return bool(transform is not None and transform.align)


class FaceService:
    """The service's work (see the module docstring). Thread-safe."""

    def __init__(self, embedder, store, index_backend="auto", transform=None, flip=True,
                 limits=DEFAULT_LIMITS, verify_threshold=(None, "none"),
                 identify_threshold=(None, "none"), far=1e-3, fpir=0.01, max_batch=32,
                 max_wait=0.005, align_default=False, detector_factory=None, on_batch=None):
        self.embedder, self.store = embedder, store
        self.transform, self.flip, self.limits = transform, bool(flip), limits
        self.verify_threshold, self.verify_source = verify_threshold
        self.identify_threshold, self.identify_source = identify_threshold
        self.far, self.fpir = far, fpir
        self.align_default = bool(align_default)
        self._detector_factory = detector_factory
        self._detector = None
        self._detector_lock = threading.Lock()
        self._enrol_lock = threading.Lock()
        self.index = search_index.make_index(embedder.embedding_size, index_backend)
        names, _, embeddings = store.faces()
        self.index.add_rows(embeddings, names)
        del embeddings  # FAISS keeps a copy; numpy's index took this matrix as it is
        self._batcher = microbatch.MicroBatcher(self._run_batch, max_batch=max_batch,
                                                max_wait=max_wait, on_batch=on_batch)

    @classmethod
    def load(cls, model, gallery, far=1e-3, fpir=0.01, identification_report=None,
             use_transform=True, **kwargs):
        """A service on the SavedModel at ``model`` and the gallery file ``gallery``."""
        from export import embedder as embedder_lib  # noqa: PLC0415 - loads TensorFlow

        embedder = embedder_lib.load_saved_model(model)
        try:
            model_dir = embedder.saved_model_dir
            transform = embedder.transform() if use_transform else None
            if kwargs.get("align_default") is None:
                kwargs["align_default"] = records_were_aligned(model_dir)
            store = gallery_store.GalleryStore(
                gallery, gallery_store.model_fingerprint(model_dir), embedder.embedding_size,
                model_path=model_dir, flip=kwargs.get("flip", True))
            flip = kwargs.get("flip", True)
            verify = serve_thresholds.verification_threshold(model_dir, far, flip)
            identify = serve_thresholds.identification_threshold(
                model_dir, fpir, identification_report, far, flip)
            return cls(embedder, store, transform=transform, verify_threshold=verify,
                       identify_threshold=identify, far=far, fpir=fpir, **kwargs)
        except Exception:
            embedder.close()
            raise

    # ------------------------------------------------------------------ the model

    def _run_batch(self, blobs):
        """``[(embedding, norm or None)]`` of encoded images: one ``embed_bytes`` call (the
        norm is the SavedModel's ``embedding_norm``, with flip TTA that of the mean of the
        image's and its mirror's embeddings before normalisation; None for older exports)."""
        embedder = self.embedder
        if embedder.has_norm:
            result = embedder.embed_bytes(blobs, batch_size=len(blobs), flip=self.flip,
                                          with_norm=True)
            return [(e, float(n)) for e, n in zip(result.embeddings, result.norms)]
        embeddings = embedder.embed_bytes(blobs, batch_size=len(blobs), flip=self.flip)
        return [(e, None) for e in embeddings]

    def _detector_instance(self):
        with self._detector_lock:
            if self._detector is None:
                if self._detector_factory is not None:
                    self._detector = self._detector_factory()
                else:
                    from data_tools.alignment import face_detector  # noqa: PLC0415 - only with align

                    try:
                        self._detector = face_detector.load_detector()
                    except face_detector.DetectorUnavailableError as e:
                        raise ServiceError(501, f"align=true needs the face detector: {e}") \
                            from None
            return self._detector

    def _aligned(self, data, name):
        from data_tools.alignment import raw_faces  # noqa: PLC0415 - only with align

        photo = open_photo(data, self.limits, name)
        faces = self._detector_instance().detect(photo)
        size = self.transform.image_size if self.transform is not None and \
            self.transform.align else ALIGNED_SIZE
        result = raw_faces.align_image(photo, faces, size)
        if result.face is None:
            raise ServiceError(422, f"{name}: {result.reason}")
        return raw_faces.encode_face(result.face, "face.png")

    def model_input(self, data, align=None, name="image"):
        """The bytes the model gets for one upload (see :func:`prepare_image`)."""
        if self.align_default if align is None else align:
            return self._aligned(data, name)
        return prepare_image(data, self.limits, self.transform, name)

    def embed(self, uploads, align=None, names=None):
        """``(embeddings [N, D], norms [N] of float or None)`` of uploaded image bytes."""
        names = names or [f"image {i + 1}" for i in range(len(uploads))]
        blobs = [self.model_input(data, align, name) for data, name in zip(uploads, names)]
        futures = [self._batcher.submit(blob) for blob in blobs]
        results = []
        for future, name in zip(futures, names):
            try:
                results.append(future.result())
            except Exception as e:  # noqa: BLE001 - the model cannot read this image
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ServiceError(400, f"{name}: the model cannot decode it ({reason})") \
                    from None
        embeddings = np.stack([e for e, _ in results]).astype(np.float32)
        return embeddings, [n for _, n in results]

    # ------------------------------------------------------------------ requests

    def verify(self, data1, data2, align=None):
        embeddings, _ = self.embed([data1, data2], align, ["image1", "image2"])
        score = float(np.dot(embeddings[0].astype(np.float64), embeddings[1]))
        threshold = self.verify_threshold
        return {"score": score, "same": None if threshold is None else score > threshold,
                "threshold": threshold, "far": self.far}

    @staticmethod
    def _checked_name(name):
        try:
            return gallery_store.check_identity_name(name)
        except gallery_store.GalleryStoreError as e:
            raise ServiceError(400, str(e)) from None

    def enrol(self, name, uploads, align=None):
        name = self._checked_name(name)
        if not uploads:
            raise ServiceError(400, "no images: send one or more 'images' parts")
        if len(uploads) > self.limits.max_images:
            raise ServiceError(413, f"{len(uploads)} images in one enrolment; the limit is "
                                    f"{self.limits.max_images}")
        names = [f"images[{i}]" for i in range(len(uploads))]
        embeddings, _ = self.embed(uploads, align, names)
        faces = [(hashlib.sha256(data).hexdigest(), None, e)
                 for data, e in zip(uploads, embeddings)]
        # Store and index change together: a search never sees rows the store lost.
        with self._enrol_lock:
            added, total = self.store.enrol(name, faces)
            if added:
                self.index.add(np.stack([e for _, e in added]), name)
        return {"identity": name, "enrolled": len(added), "images": total}

    def delete(self, name):
        name = self._checked_name(name)
        with self._enrol_lock:
            count = self.store.delete(name)
            if count is None:
                raise ServiceError(404, f"no identity {name!r} in the gallery")
            self.index.remove(name)
        return {"identity": name, "deleted": count}

    def identities(self):
        return {"identities": [{"identity": n, "images": c} for n, c in self.store.identities()]}

    def identify(self, data, top_k=5, align=None):
        embeddings, _ = self.embed([data], align)
        matches = self.index.search(embeddings[0], top_k)
        threshold = self.identify_threshold
        decision = "unknown"
        if matches and (threshold is None or matches[0][1] > threshold):
            decision = matches[0][0]
        return {"matches": [{"identity": n, "score": s} for n, s in matches],
                "decision": decision, "threshold": threshold, "fpir": self.fpir}

    def observe_batches(self, on_batch):
        """Call ``on_batch(size, seconds)`` after each SavedModel call (the metrics)."""
        self._batcher._on_batch = on_batch

    def gallery_size(self):
        return len(self.index)

    def close(self):
        self._batcher.close()
        self.store.close()
        self.embedder.close()
