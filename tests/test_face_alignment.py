"""data_tools/alignment/face_alignment.py: the similarity transform and the warp onto the 5-point
template."""

import math

import numpy as np
import pytest
from PIL import Image

from data_tools.alignment import face_alignment as align


def random_similarity(rng, scale_range=(0.5, 3.0)):
    angle = rng.uniform(-math.pi, math.pi)
    scale = rng.uniform(*scale_range)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)],
                                 [math.sin(angle), math.cos(angle)]])
    return np.hstack([rotation, rng.uniform(-50, 250, (2, 1))])


def lstsq_similarity(src, dst):
    """Independent reference: x' = a x - b y + tx, y' = b x + a y + ty by linear least squares."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, -y, 1.0, 0.0])
        rhs.append(u)
        rows.append([y, x, 0.0, 1.0])
        rhs.append(v)
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


@pytest.mark.parametrize("seed", range(20))
def test_landmarks_under_random_similarities_are_recovered(seed):
    rng = np.random.RandomState(seed)
    true = random_similarity(rng)
    landmarks = align.transform_points(true, align.TEMPLATE_112)
    matrix = align.similarity_transform(landmarks, align.TEMPLATE_112)
    back = align.transform_points(matrix, landmarks)
    assert np.max(np.abs(back - align.TEMPLATE_112)) < 1e-9
    # Landmarks off by up to half a template pixel in x and y: the transform fitted to them
    # still maps the true points onto the template to within a pixel.
    scale = math.sqrt(abs(np.linalg.det(true[:, :2])))
    noisy = landmarks + rng.uniform(-0.5, 0.5, landmarks.shape) * scale
    fitted = align.similarity_transform(noisy, align.TEMPLATE_112)
    back = align.transform_points(fitted, landmarks)
    assert np.max(np.hypot(*(back - align.TEMPLATE_112).T)) < 1.0


@pytest.mark.parametrize("seed", range(10))
def test_umeyama_equals_linear_least_squares(seed):
    rng = np.random.RandomState(seed)
    src = rng.uniform(0, 200, (5, 2))
    dst = align.transform_points(random_similarity(rng), src) + rng.randn(5, 2) * 3
    np.testing.assert_allclose(align.similarity_transform(src, dst), lstsq_similarity(src, dst),
                               atol=1e-9)


def test_reflection_is_never_chosen():
    src = align.TEMPLATE_112
    mirrored = src * [-1, 1]
    matrix = align.similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) >= 0


def face_image(rng, true, size=250):
    """Gaussian dots at the template points mapped by ``true``; returns (image, landmarks)."""
    landmarks = align.transform_points(true, align.TEMPLATE_112)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size))
    for x, y in landmarks:
        image += 250 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0 ** 2))
    return np.clip(image, 0, 255).astype(np.uint8), landmarks


def dot_centres(aligned, points, radius=6):
    """Intensity-weighted centroid of the aligned image around each expected point."""
    ys, xs = np.mgrid[0:aligned.shape[0], 0:aligned.shape[1]].astype(np.float64)
    image = aligned.astype(np.float64)
    centres = []
    for x, y in points:
        near = (np.abs(xs - x) <= radius) & (np.abs(ys - y) <= radius)
        weight = image * near
        centres.append([np.sum(weight * xs) / np.sum(weight), np.sum(weight * ys) / np.sum(weight)])
    return np.array(centres)


@pytest.mark.parametrize("image_size", [112, 64, 160])
@pytest.mark.parametrize("seed", range(4))
def test_warped_dots_land_on_the_template(seed, image_size):
    rng = np.random.RandomState(seed)
    true = random_similarity(rng, scale_range=(0.9, 1.6))
    true[:, 2] = [125, 125] - np.dot(true[:, :2], [56, 72])  # keep the face in the frame
    image, landmarks = face_image(rng, true)
    aligned = align.align_face(image, landmarks, image_size=image_size)
    assert aligned.shape == (image_size, image_size) and aligned.dtype == np.uint8
    target = align.template(image_size)
    found = dot_centres(aligned, target, radius=max(3, image_size // 16))
    assert np.max(np.hypot(*(found - target).T)) < 1.0


def insightface_estimate_norm_dst(image_size):
    """insightface's ``estimate_norm`` destination points (python-package/insightface/utils/
    face_align.py), transcribed: arcface_dst as written there, then its two cases."""
    arcface_dst = np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
         [41.5493, 92.3655], [70.7299, 92.2041]],
        dtype=np.float32)
    assert image_size % 112 == 0 or image_size % 128 == 0
    if image_size % 112 == 0:
        ratio = float(image_size) / 112.0
        diff_x = 0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = arcface_dst * ratio
    dst[:, 0] += diff_x
    return dst


@pytest.mark.parametrize("image_size", [112, 128, 224, 256, 384, 448, 512])
def test_template_is_insightfaces_estimate_norm_destination(image_size):
    """Multiples of 128 (not of 112) keep the 112 face's scale ratio and shift it 8 * ratio
    across, as insightface does; at 128 the template scaled by 128/112 was up to 13.2 px off
    (mouth corners' y 105.6 against insightface's 92.4)."""
    # float32 in insightface: agreement to its precision.
    np.testing.assert_allclose(align.template(image_size),
                               insightface_estimate_norm_dst(image_size), rtol=0, atol=1e-4)


def test_aligned_128_face_lands_on_insightfaces_128_template():
    rng = np.random.RandomState(7)
    true = random_similarity(rng, scale_range=(1.2, 1.6))
    true[:, 2] = [125, 125] - np.dot(true[:, :2], [56, 72])
    image, landmarks = face_image(rng, true)
    aligned = align.align_face(image, landmarks, image_size=128)
    target = insightface_estimate_norm_dst(128).astype(np.float64)
    found = dot_centres(aligned, target, radius=8)
    assert np.max(np.hypot(*(found - target).T)) < 0.5


def test_identity_alignment_keeps_pixels():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (112, 112, 3)).astype(np.uint8)
    aligned = align.align_face(image, align.TEMPLATE_112)
    np.testing.assert_array_equal(aligned, image)


def test_pil_input_and_channels():
    rng = np.random.RandomState(1)
    rgb = Image.fromarray(rng.randint(0, 256, (90, 120, 3)).astype(np.uint8))
    landmarks = align.template(112) * 0.7 + [10, 5]
    assert align.align_face(rgb, landmarks).shape == (112, 112, 3)
    assert align.align_face(rgb.convert("L"), landmarks).shape == (112, 112)
    assert align.align_face(rgb.convert("RGBA"), landmarks).shape == (112, 112, 3)


def test_outside_the_image_is_black():
    image = np.full((20, 20), 200, np.uint8)
    aligned = align.align_face(image, align.TEMPLATE_112 / 112 * 20)
    assert aligned[0, 0] == 200  # maps onto input pixel (0, 0)
    assert aligned[-1, -1] < 100  # maps to (19.8, 19.8): mostly outside, blended with black
    far = align.TEMPLATE_112 + 1000  # the face is far outside the frame
    assert align.align_face(image, far).max() == 0


@pytest.mark.parametrize("landmarks, message", [
    (np.zeros((5, 3)), r"\[N, 2\]"),
    (np.zeros((4, 2)), "5"),
    (np.ones((5, 2)), "coincide"),
    (np.full((5, 2), np.nan), "NaN"),
])
def test_bad_landmarks(landmarks, message):
    with pytest.raises(ValueError, match=message):
        align.align_face(np.zeros((50, 50), np.uint8), landmarks)


def test_bad_similarity_inputs():
    with pytest.raises(ValueError, match="same number"):
        align.similarity_transform(np.zeros((3, 2)) + np.arange(3)[:, None], np.zeros((4, 2)))
    with pytest.raises(ValueError, match="image_size"):
        align.template(0)
