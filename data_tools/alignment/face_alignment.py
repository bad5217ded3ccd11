"""5-point face alignment: a least-squares similarity transform onto insightface's template.

    matrix = similarity_transform(landmarks, template)       # 2x3, maps landmarks onto template
    face = align_face(image, landmarks, image_size=112)      # numpy uint8, the aligned face

The five points are, in this order: left eye, right eye, nose tip, left and right mouth corners
(as seen in the image; insightface's and RetinaFace's order). The template is insightface's
``arcface_dst`` for 112x112 crops, placed for other sizes as insightface's ``estimate_norm``
places it (:func:`template`).

Coordinates follow OpenCV's convention, which the landmark files of IJB-B/C and insightface's
``norm_crop`` (``cv2.warpAffine``) use: x to the right, y down, and the centre of pixel
(row r, column c) at (x, y) = (c, r). Each output pixel takes the bilinear interpolation of the
input at the position its centre maps back to; outside the input the value is 0 (black).

Only numpy and PIL: no OpenCV, no detector. This is a library module: the detector adapter is
``data_tools.alignment.face_detector``, the folder pipeline ``data_tools.alignment.raw_faces``
and the command line ``python -m data_tools.alignment.align``.
"""

import collections
import math
import posixpath

import numpy as np

# insightface's arcface_dst: the five points of a 112x112 aligned face.
TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)
NUM_LANDMARKS = 5


def template(image_size=112):
    """The five template points for a square aligned face of side ``image_size``.

    As insightface's ``estimate_norm`` (``python-package/insightface/utils/face_align.py``):
    a multiple of 112 scales ``arcface_dst`` by ``image_size / 112``; a multiple of 128 (not of
    112) scales it by ``ratio = image_size / 128`` and shifts x by ``8 * ratio``: at 128 the
    112 face at its own scale, centred across and with 16 more rows below, not a 112 crop blown
    up to 128 (a face 14% larger), so crops match those of insightface's 128-pixel models.
    Other sizes, which insightface refuses, scale by ``image_size / 112`` (ours, for small test
    models).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    if image_size % 112 and not image_size % 128:
        ratio = float(image_size) / 128.0
        return TEMPLATE_112 * ratio + [8.0 * ratio, 0.0]
    return TEMPLATE_112 * (float(image_size) / 112.0)


def _points(points, name):
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 2:
        raise ValueError(f"{name} must be an [N, 2] array of (x, y) points with N >= 2, got shape "
                         f"{points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} has NaN or infinite coordinates")
    return points


def similarity_transform(src, dst):
    """The 2x3 matrix [[s·cos, -s·sin, tx], [s·sin, s·cos, ty]] that maps ``src`` onto ``dst``
    with the least squared error (Umeyama, *Least-squares estimation of transformation
    parameters between two point patterns*, PAMI 1991; rotation, uniform scale and translation,
    no reflection). ``src`` and ``dst`` are [N, 2] arrays of (x, y) points, N >= 2.

    Apply it to points as ``matrix[:, :2] @ p + matrix[:, 2]``. Raises ValueError for
    mismatched shapes or source points that all coincide.
    """
    src = _points(src, "src")
    dst = _points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must hold the same number of points, got {src.shape[0]} and "
                         f"{dst.shape[0]}")
    n = src.shape[0]
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    var_src = np.sum(np.square(src_c)) / n
    if var_src <= 1e-12:
        raise ValueError("the source points coincide: no transform is defined")
    covariance = np.dot(dst_c.T, src_c) / n
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[1] = -1.0  # the best orthogonal map would reflect: take the best rotation
    rotation = np.dot(u * signs, vt)
    scale = np.sum(singular * signs) / var_src
    translation = mean_dst - scale * np.dot(rotation, mean_src)
    return np.hstack([scale * rotation, translation[:, None]])


def transform_points(matrix, points):
    """``points`` [N, 2] mapped by a 2x3 affine ``matrix``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return np.dot(points, matrix[:, :2].T) + matrix[:, 2]


def points_in_resized(points, factor, origin=(0.0, 0.0)):
    """Where ``points`` of an image land in its crop at ``origin`` resized by ``factor`` (per
    axis; new size / old size) with PIL or any resampler that scales the pixel *edges* (PIL,
    ``tf.image.resize`` without align_corners).

    Points are pixel-centre coordinates (this module's convention): the edge coordinate
    ``p - origin + 0.5`` is what gets scaled, so the new centre coordinate is
    ``(p - origin + 0.5) * factor - 0.5``. ``(p - origin) * factor`` alone would move every point
    ``0.5 * (1 - factor)`` pixels towards the origin: a third of a pixel at factor 1/4.
    """
    edges = np.asarray(points, dtype=np.float64) - np.asarray(origin, dtype=np.float64) + 0.5
    return edges * np.asarray(factor, dtype=np.float64) - 0.5


def points_from_resized(points, factor, origin=(0.0, 0.0)):
    """The inverse of :func:`points_in_resized`: points found in the resized crop, back in the
    pixels of the original image."""
    edges = np.asarray(points, dtype=np.float64) + 0.5
    return edges / np.asarray(factor, dtype=np.float64) - 0.5 + np.asarray(origin, np.float64)


def _as_pixels(image):
    """A PIL image or an array as a float64 [H, W, C] array, and whether it was 2-D."""
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL, without importing PIL here
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = np.asarray(image)
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        return pixels[:, :, None].astype(np.float64), True
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or 0 in pixels.shape:
        raise ValueError("image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape "
                         f"{pixels.shape}")
    return pixels.astype(np.float64), False


def warp_affine(image, matrix, output_size):
    """``out[y, x] = image(inverse(matrix) · (x, y))``, bilinear, 0 outside the image.

    ``output_size`` is (width, height). Returns float64 [H, W, C] (see :func:`align_face` for
    the uint8 result).
    """
    pixels, _ = _as_pixels(image)
    height, width = pixels.shape[:2]
    out_w, out_h = output_size
    matrix = np.asarray(matrix, dtype=np.float64)
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x0 = np.floor(src_x).astype(np.int64)
    y0 = np.floor(src_y).astype(np.int64)
    fx = (src_x - x0)[:, :, None]
    fy = (src_y - y0)[:, :, None]
    out = np.zeros((out_h, out_w, pixels.shape[2]), np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = pixels[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
            out += wy * wx * values * inside[:, :, None]
    return out


def align_face(image, landmarks, image_size=112):
    """The face of ``image`` aligned onto the 5-point template: a numpy uint8 array.

    ``image``: a PIL image (``L`` and ``RGB`` kept, other modes converted to RGB) or a uint8
    numpy array [H, W] or [H, W, C]. ``landmarks``: [5, 2] (x, y) points in the order of the
    module docstring. Returns [image_size, image_size, C] uint8 (C as the input's; a 2-D input
    gives a 2-D output), ready for ``PIL.Image.fromarray``.
    """
    landmarks = _points(landmarks, "landmarks")
    if landmarks.shape[0] != NUM_LANDMARKS:
        raise ValueError(f"landmarks must be 5 (x, y) points, got {landmarks.shape[0]}")
    pixels, flat = _as_pixels(image)
    matrix = similarity_transform(landmarks, template(image_size))
    out = warp_affine(pixels, matrix, (image_size, image_size))
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out[:, :, 0] if flat else out


# ------------------------------------------------------------------ landmark files


class LandmarkFileError(ValueError):
    """A malformed landmark file: the message names the file and the line."""


def _relpath_key(name):
    """A landmark file's image name as a ``/``-separated path relative to the image root."""
    key = posixpath.normpath(name.replace("\\", "/"))
    return key[2:] if key.startswith("./") else key


def read_landmark_file(path):
    """The five points of each image of a landmark file, as an OrderedDict
    ``relpath -> (landmarks [5, 2] float64, score or None)``.

    One line per image: ``relative/path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`` with an optional trailing
    detector score (the layout of IJB-B/C's ``*_name_5pts_score.txt``), points in the order of
    this module (left eye, right eye, nose tip, left and right mouth corners, as seen in the
    image), in pixels of the image as stored (after its EXIF orientation, if any). Blank lines
    and lines starting with ``#`` are ignored; paths use ``/`` (``\\`` is accepted). Raises
    :class:`LandmarkFileError` for a line with another number of fields, a value that is not a
    finite number, or an image listed twice.
    """
    entries = collections.OrderedDict()
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LandmarkFileError(f"cannot read landmark file {path}: "
                                f"{getattr(e, 'strerror', None) or e}") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path} line {number}"
        if len(fields) not in (1 + 2 * NUM_LANDMARKS, 2 + 2 * NUM_LANDMARKS):
            raise LandmarkFileError(f"{where}: expected 'path x1 y1 ... x5 y5 [score]' (11 or 12 "
                                    f"fields), got {len(fields)}")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise LandmarkFileError(f"{where}: the coordinates and score must be numbers") \
                from None
        if not all(math.isfinite(v) for v in values):
            raise LandmarkFileError(f"{where}: NaN or infinite value")
        key = _relpath_key(fields[0])
        if key in entries:
            raise LandmarkFileError(f"{where}: {fields[0]} is listed twice")
        points = np.array(values[:2 * NUM_LANDMARKS], np.float64).reshape(NUM_LANDMARKS, 2)
        score = values[2 * NUM_LANDMARKS] if len(values) > 2 * NUM_LANDMARKS else None
        entries[key] = (points, score)
    if not entries:
        raise LandmarkFileError(f"landmark file {path} lists no image")
    return entries
