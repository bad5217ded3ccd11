"""Photometric and quality degradations of training faces: low resolution, blur, JPEG, harsh light.

Why: a model trained on a few thousand well-lit, sharp, aligned faces learns those faces' look
as much as their identity, and meets small, blurred, compressed and side-lit faces from other
cameras in use. Degrading the training input teaches it to ignore what these change; with
distillation the target stays the teacher's embedding of the *clean* source image (computed by
the converter), so the student learns exactly that invariance: degraded face in, clean face's
embedding out.

The settings are ``input_config.Degradations`` (plain Python, validated there; re-exported
here). Each transform is a plain function of its parameters (tested against numpy / PIL references);
:func:`degrade` draws the parameters from a vector of uniforms (the seeded, stateless draws of
``preprocessing.preprocess_for_train``) and applies each with its probability. Everything works
on one float32 image [S, S, C] in 0..255 and returns the same shape, dtype and range. Training
only: evaluation, serving and exports never call this module.

Order, as a camera makes it: the light on the face (shading, gamma), the optics (blur), the
sensor's resolution (low resolution), the encoder (JPEG).
"""

import math

import tensorflow.compat.v1 as tf

from data_tools.checks import check as _check
from data_tools.input_config import MAX_JPEG_QUALITY, Degradations  # noqa: F401 (re-exported)

# Uniform draws one image uses (see :func:`degrade`): the slots below.
DRAWS = 12
_LOWRES, _LOWRES_SCALE = 0, 1
_BLUR, _BLUR_SIGMA = 2, 3
_JPEG, _JPEG_QUALITY = 4, 5
_GAMMA = 6
_SHADING, _SHADING_STRENGTH, _SHADING_ANGLE = 7, 8, 9
# The Gaussian kernel's radius in standard deviations (scipy's default truncation is 4; 3 keeps
# 99.7% of the mass with a smaller kernel).
BLUR_TRUNCATE = 3.0


def degrade(image, degradations, uniforms):
    """``image`` (float32 [S, S, C], 0..255) with ``degradations`` applied, each with its
    probability, every random choice taken from ``uniforms`` (float32 [DRAWS] in [0, 1): the
    caller's seeded draws, so a run is repeatable). Inactive settings add no op: the image
    comes back as the same tensor."""
    if degradations is None or not degradations.active:
        return image
    d = degradations
    u = uniforms
    if d.shading_prob > 0:
        strength = d.shading_strength * u[_SHADING_STRENGTH]
        angle = 2.0 * math.pi * u[_SHADING_ANGLE]
        image = _maybe(u[_SHADING] < d.shading_prob, lambda: shade(image, strength, angle),
                       image)
    if d.gamma_range > 0:
        image = adjust_gamma(image, tf.exp(d.gamma_range * (2.0 * u[_GAMMA] - 1.0)))
    if d.blur_prob > 0:
        sigma = d.blur_max_sigma * u[_BLUR_SIGMA]
        radius = blur_radius(d.blur_max_sigma, _static_side(image))
        image = _maybe(u[_BLUR] < d.blur_prob, lambda: gaussian_blur(image, sigma, radius),
                       image)
    if d.lowres_prob > 0:
        side = _static_side(image)
        _check(side is not None, "low-resolution degradation needs a static image size")
        scale = d.lowres_min_scale + (1.0 - d.lowres_min_scale) * u[_LOWRES_SCALE]
        small = tf.maximum(tf.cast(tf.round(scale * side), tf.int32), 1)
        image = _maybe(u[_LOWRES] < d.lowres_prob, lambda: low_resolution(image, small), image)
    if d.jpeg_prob > 0:
        span = MAX_JPEG_QUALITY - d.jpeg_min_quality
        quality = d.jpeg_min_quality + tf.cast(tf.floor(u[_JPEG_QUALITY] * (span + 1)), tf.int32)
        quality = tf.minimum(quality, MAX_JPEG_QUALITY)
        image = _maybe(u[_JPEG] < d.jpeg_prob, lambda: jpeg_recompress(image, quality), image)
    return image


def _maybe(condition, transform, image):
    """``transform()`` where ``condition`` holds, else ``image``; only the taken branch runs."""
    result = tf.cond(condition, transform, lambda: image)
    result.set_shape(image.shape)
    return result


def _static_side(image):
    """The image's height when the graph knows it, else None."""
    return _static(image.shape[0])


def shade(image, strength, angle):
    """Multiply ``image`` [H, W, C] by a linear ramp across it: ``1 + strength · t``, with t the
    position along direction ``angle`` (radians, 0: left to right) scaled to [-1, 1] over the
    pixel centres' extent, then clip to 0..255."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    # Pixel centres in (-1, 1), as fractions of the half-side.
    y = (tf.range(height) + 0.5) / height * 2.0 - 1.0
    x = (tf.range(width) + 0.5) / width * 2.0 - 1.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    extent = (tf.abs(cos) * (1.0 - 1.0 / width) + tf.abs(sin) * (1.0 - 1.0 / height))
    ramp = (x[None, :] * cos + y[:, None] * sin) / tf.maximum(extent, 1e-6)
    factor = 1.0 + strength * ramp
    return tf.clip_by_value(image * factor[:, :, None], 0.0, 255.0)


def adjust_gamma(image, exponent):
    """``255 · (image / 255) ^ exponent``: the tone curve of another exposure or camera.

    As ``exp(exponent · log(x))``: TensorFlow's CPU ``Pow`` is scalar code (about 0.6 ms for a
    64 px face), its ``Exp`` and ``Log`` are vectorised; black stays black (log 0 = -inf)."""
    unit = tf.clip_by_value(image, 0.0, 255.0) / 255.0
    return 255.0 * tf.exp(exponent * tf.log(unit))


def blur_radius(max_sigma, side=None):
    """The Gaussian kernel's radius for sigmas up to ``max_sigma``: ceil(3 sigma), at least 1,
    at most ``side - 1`` (the symmetric padding's limit) when the image side is known."""
    radius = max(1, int(math.ceil(BLUR_TRUNCATE * max_sigma)))
    return radius if side is None else max(1, min(radius, side - 1))


def gaussian_kernel(sigma, radius):
    """The normalised 1-D Gaussian of ``sigma`` (a tensor; ~0 gives the identity) over taps
    -radius..radius, float32 [2 radius + 1]."""
    taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    weights = tf.exp(-0.5 * tf.square(taps / sigma))
    return weights / tf.reduce_sum(weights)


def gaussian_blur(image, sigma, radius):
    """Separable Gaussian blur of ``image`` [H, W, C] (static H and W), mirror padding at the
    edges as scipy's ``gaussian_filter`` mode 'reflect', truncated at ``radius``.

    Each pass is a weighted sum of 2 radius + 1 shifted slices: elementwise, vectorised work.
    On the loaded 2-core machine, per 64 px face of 3 channels and radius 5, it measured about
    half the time of two depthwise convolutions (TensorFlow's CPU depthwise kernel is slow for 3
    channels) and of two products with a banded matrix.
    """
    height, width = (_static(image.shape[0]), _static(image.shape[1]))
    _check(height is not None and width is not None, "blur needs a static image size")
    weights = tf.unstack(gaussian_kernel(sigma, radius))
    padded = tf.pad(image, [[radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    across = tf.add_n([w * padded[:, t:t + width] for t, w in enumerate(weights)])
    return tf.add_n([w * across[t:t + height] for t, w in enumerate(weights)])


def _static(dimension):
    return getattr(dimension, "value", dimension)  # TF 1.15: Dimension; TF 2: int or None


def low_resolution(image, small_side):
    """``image`` [S, S, C] brought down to ``small_side`` square by area averaging and back up
    to S by bilinear interpolation (half-pixel centres): the detail a small face lacks."""
    side = _static_side(image)
    small = tf.image.resize_area(image[None], tf.stack([small_side, small_side]))
    back = tf.image.resize_bilinear(small, [side, side], half_pixel_centers=True)
    return tf.reshape(back, tf.shape(image))


def jpeg_recompress(image, quality):
    """``image`` (float 0..255) rounded to 8 bits, JPEG-encoded at ``quality`` (an int32 tensor,
    1..100) and decoded: its blocking and ringing, as float32."""
    pixels = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
    # adjust_jpeg_quality takes a tensor quality in TF 1.15 and 2.x (EncodeJpegVariableQuality).
    decoded = tf.image.adjust_jpeg_quality(pixels, quality)
    return tf.reshape(tf.cast(decoded, tf.float32), tf.shape(image))
