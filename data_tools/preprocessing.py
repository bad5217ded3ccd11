"""Image preprocessing shared by training input, evaluation input and the serving graph.

Living once here is what keeps the three from drifting apart: a model trained on
``preprocess_for_train`` sees exactly ``preprocess_for_eval``'s pixels at evaluation, and the
exported SavedModel runs ``preprocess_pixels`` on whatever a client sends.

Pixels are normalised as insightface and facenet-style face models expect: (x - 127.5) / 128.
"""

import numpy as np
import tensorflow.compat.v1 as tf
import tensorflow.compat.v2 as tf_v2  # v2 resize (antialias); TF 1.15 lacks tf.compat.v1.compat.v2

from data_tools import degradations as degradations_lib

PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0
_PIXEL_INVERSE_SCALE = 1.0 / PIXEL_SCALE
# insightface's aligned face crop: the one source of the input size the backbones default to.
DEFAULT_IMAGE_SIZE = 112


def decode_image(encoded):
    """Decode JPEG or PNG bytes (scalar string tensor) to uint8 [H, W, 3].

    Grayscale images (LFW-a is grayscale) become 3 identical channels, so readers always
    produce RGB whatever the records hold.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _static_size(batch):
    """(height, width) of a [N, H, W, C] tensor when both are known when the graph is built."""
    height, width = batch.shape[1], batch.shape[2]
    height = getattr(height, "value", height)  # TF 1.15: Dimension; TF 2: int or None
    width = getattr(width, "value", width)
    return (height, width) if height is not None and width is not None else None


def _unless_same_size(batch, image_size, resize_fn, width=None):
    """``resize_fn(batch)``, or ``batch`` itself when it is already ``image_size`` square
    (``image_size`` × ``width`` when ``width`` is given).

    With a static spatial shape the choice is made here, in Python: the graph holds the resize
    or nothing, never a conditional (frozen graphs for ATC and TF 1.15 stay flat). Only a
    dynamic shape gets a ``tf.cond``.
    """
    height, width = image_size, image_size if width is None else width
    static = _static_size(batch)
    if static is not None:
        return batch if static == (height, width) else resize_fn(batch)
    shape = tf.shape(batch)
    same_size = tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width))
    return tf.cond(same_size, lambda: batch, lambda: resize_fn(batch))


def resize(image, image_size):
    """Resize one image or a batch to ``image_size`` × ``image_size`` float32 pixels in 0..255.

    Bilinear, half-pixel centres: the evaluation input. An image already at the target size
    passes through unchanged (the converter usually writes aligned faces at the training size).
    """
    image = tf.cast(image, tf.float32)
    is_batch = image.shape.ndims == 4
    batch = image if is_batch else image[None]
    resized = _unless_same_size(batch, image_size, lambda b: tf.image.resize_bilinear(
        b, [image_size, image_size], half_pixel_centers=True))
    resized.set_shape([None, image_size, image_size, 3])
    if not is_batch:
        resized = resized[0]
    return resized


# TensorFlow's closest match to PIL's Lanczos filter (the converter's resampling): both are
# Lanczos with radius 3, widened by the scale factor when downsampling (antialiased). On real
# LFW-a faces it lands within 0.19 grey levels on average of PIL's pixels, where TensorFlow's
# plain bilinear resize is 0.7 to 1.3 levels away.
CONVERTER_KERNEL = "lanczos3"


def lanczos_resize(batch, image_size, width=None):
    """Antialiased Lanczos-3 resize of a float batch [N, H, W, C] to ``image_size`` square
    (``image_size`` × ``width`` when ``width`` is given)."""
    # The v2 resize (TF 1.15 and 2.x): its antialiased kernels run as one ScaleAndTranslate op.
    size = [image_size, image_size if width is None else width]
    return tf_v2.image.resize(batch, size, method=CONVERTER_KERNEL, antialias=True)


def center_square(batch):
    """Crop a batch [N, H, W, C] to its centre square, as the converter's ``--image_size`` does:
    the larger side loses ``(long - short) // 2`` pixels at its start."""
    static = _static_size(batch)
    if static is not None:
        height, width = static
        side = min(height, width)
        if height == width:
            return batch
        top, left = (height - side) // 2, (width - side) // 2
        return batch[:, top:top + side, left:left + side, :]
    shape = tf.shape(batch)
    height, width = shape[1], shape[2]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return tf.slice(batch, tf.stack([0, top, left, 0]), tf.stack([-1, side, side, -1]))


def resize_like_converter(pixels, image_size):
    """The converter's ``--image_size`` step in the graph: centre square, then antialiased
    Lanczos-3 to ``image_size`` square, rounded and clipped to 0..255 as the 8-bit pixels PIL
    writes. A batch [N, H, W, 3] of float 0..255 pixels (any H, W) → [N, S, S, 3] float32.

    A batch already ``image_size`` square passes through unchanged.
    """
    batch = tf.cast(pixels, tf.float32)

    def convert(b):
        resized = lanczos_resize(center_square(b), image_size)
        return tf.round(tf.clip_by_value(resized, 0.0, 255.0))

    resized = _unless_same_size(batch, image_size, convert)
    resized.set_shape([None, image_size, image_size, 3])
    return resized


def normalize(pixels):
    """Map float pixels in 0..255 to the network's input range, (x - 127.5) / 128."""
    # Times 1/128 rather than divided by 128: the same floats (a power of two's reciprocal is
    # exact), and a multiply costs the vector units a fraction of a divide.
    return (tf.cast(pixels, tf.float32) - PIXEL_MEAN) * _PIXEL_INVERSE_SCALE


def preprocess_for_eval(encoded, image_size=DEFAULT_IMAGE_SIZE):
    """Encoded bytes → normalised float32 [S, S, 3]. Deterministic: no augmentation."""
    return normalize(resize(decode_image(encoded), image_size))


def preprocess_for_train(encoded, image_size=DEFAULT_IMAGE_SIZE, random_flip=True,
                         random_crop=False, crop_padding=8, brightness_delta=0.0,
                         min_crop_scale=1.0, max_aspect_ratio=1.1, contrast_delta=0.0, seed=None,
                         degradations=None, with_flip=False, decoded_shape=None):
    """Encoded bytes → augmented, normalised float32 [S, S, 3].

    * ``min_crop_scale`` < 1: random scale crop: a box of side fraction ``U(min_crop_scale, 1)``
      of the decoded image, aspect ratio in [1/``max_aspect_ratio``, ``max_aspect_ratio``],
      anywhere inside it, resized to S×S in the same op (zoom and translation jitter: what a few
      thousand real faces need to stop a network memorising them; 1.0 keeps the whole image);
    * ``random_crop``: pad by ``crop_padding`` pixels (mirrored) and take a random S×S crop, a
      small translation jitter that aligned faces tolerate;
    * ``random_flip``: horizontal flip with probability 1/2 (faces are left/right symmetric);
    * ``brightness_delta``: add a uniform shift in ±delta (0..255 scale);
    * ``contrast_delta``: scale each image's deviation from its mean by ``U(1 - d, 1 + d)``;
    * ``degradations``: a ``degradations.Degradations`` (low resolution, blur, JPEG, gamma,
      shading), applied last; None or its defaults add nothing to the graph.

    ``with_flip``: return ``(image, flipped)``, ``flipped`` a bool scalar saying whether the
    image was mirrored (the input then takes the teacher's vector of the mirrored source).

    ``seed``: an int32 tensor of shape [2] (e.g. (run seed, element index)) makes every random
    choice a stateless function of it, so a training run is repeatable whatever the number of
    parallel map calls; None draws from TensorFlow's stateful generators.

    ``decoded_shape``: ``(height, width)`` every image decodes to, when known (the records
    manifest's ``record_shape``); checked per image (``tf.ensure_shape``, an error naming both
    shapes), it tells :func:`resize` when the graph is built whether to resize, where an
    unknown shape costs a ``tf.cond`` per image (about 11 µs of CPU of the 178 µs an image cost
    at 112², docs/PERFORMANCE.md).
    """
    draws = _RandomDraws(seed)
    decoded = decode_image(encoded)
    if decoded_shape is not None:
        decoded = tf.ensure_shape(decoded, [int(side) for side in decoded_shape] + [3])
    flipped = None
    if random_flip and not random_crop and min_crop_scale >= 1.0 \
            and _static_size(decoded[None]) == (image_size, image_size):
        # Nothing moves the pixels before the flip (no crop, a resize known to be none): it
        # mirrors the decoded uint8 image, a quarter of the float image's bytes; the cast
        # after it is per pixel, so the float pixels are the same.
        flipped = draws.uniform(2) < 0.5
        decoded = flip_left_right_if(decoded, flipped)
    if min_crop_scale < 1.0:
        image = _random_scale_crop(decoded, image_size, min_crop_scale, max_aspect_ratio, draws)
    else:
        image = resize(decoded, image_size)
    if random_crop:
        padded = tf.pad(image, [[crop_padding, crop_padding], [crop_padding, crop_padding], [0, 0]],
                        mode="SYMMETRIC")
        limit = 2 * crop_padding + 1
        offset_y = tf.cast(tf.floor(draws.uniform(0) * limit), tf.int32)
        offset_x = tf.cast(tf.floor(draws.uniform(1) * limit), tf.int32)
        image = tf.slice(padded, tf.stack([offset_y, offset_x, 0]), [image_size, image_size, 3])
    if random_flip and flipped is None:
        flipped = draws.uniform(2) < 0.5
        image = flip_left_right_if(image, flipped)
    if brightness_delta > 0:
        shift = (2.0 * draws.uniform(3) - 1.0) * brightness_delta
        image = tf.clip_by_value(image + shift, 0.0, 255.0)
    if contrast_delta > 0:
        factor = 1.0 + (2.0 * draws.uniform(8) - 1.0) * contrast_delta
        mean = tf.reduce_mean(image)
        image = tf.clip_by_value((image - mean) * factor + mean, 0.0, 255.0)
    if degradations is not None and degradations.active:
        image = degradations_lib.degrade(
            image, degradations, draws.uniforms(_DEGRADATION_DRAW, degradations_lib.DRAWS))
    if with_flip:
        return normalize(image), tf.constant(False) if flipped is None else flipped
    return normalize(image)


def _random_scale_crop(image, image_size, min_scale, max_aspect_ratio, draws):
    """A random box (side fraction, aspect ratio, position from ``draws``) of ``image``,
    resized to ``image_size``² float32 pixels by ``crop_and_resize`` (bilinear)."""
    side = min_scale + (1.0 - min_scale) * draws.uniform(4)
    log_ratio = (2.0 * draws.uniform(5) - 1.0) * float(np.log(max_aspect_ratio))
    root = tf.exp(0.5 * log_ratio)
    height = tf.minimum(side * root, 1.0)
    width = tf.minimum(side / root, 1.0)
    top = (1.0 - height) * draws.uniform(6)
    left = (1.0 - width) * draws.uniform(7)
    box = tf.stack([top, left, top + height, left + width])[None]
    crop = tf.image.crop_and_resize(tf.cast(image, tf.float32)[None], box,
                                    box_indices=tf.zeros([1], tf.int32),
                                    crop_size=[image_size, image_size])
    return tf.reshape(crop, [image_size, image_size, 3])


# Independent draws per image (flip, crop, brightness, scale crop, contrast use 0..8; the
# degradations one vector, draw 9).
_DRAWS_PER_IMAGE = 16
_DEGRADATION_DRAW = 9


class _RandomDraws:
    """Uniform [0, 1) scalars: stateless (keyed on seed and a draw number) when seeded."""

    def __init__(self, seed):
        self._seed = None if seed is None else tf.cast(seed, tf.int64)

    def uniform(self, draw):
        if self._seed is None:
            return tf.random.uniform([])
        return self.uniforms(draw, None)

    def uniforms(self, draw, count):
        """``count`` uniforms (float32 [count]) from one draw number; a scalar when None."""
        shape = [] if count is None else [count]
        if self._seed is None:
            return tf.random.uniform(shape)
        # (seed[0], seed[1] * _DRAWS_PER_IMAGE + draw) in two ops on the [2] key, not five;
        # the raw op is what tf.random.stateless_uniform computes in [0, 1) (TF 2 by its
        # key/counter form, then * 1 + 0): four ops fewer per draw, about 6 us of an image's
        # CPU (docs/PERFORMANCE.md), the same numbers (tests/test_input_fns.py).
        key = self._seed * tf.constant([1, _DRAWS_PER_IMAGE], tf.int64) + tf.constant(
            [0, draw], tf.int64)
        return tf.raw_ops.StatelessRandomUniform(shape=shape, seed=key, dtype=tf.float32)


def flip_left_right(images):
    """Horizontal flip of one image [H, W, C] or a batch [N, H, W, C] (flip TTA)."""
    return tf.reverse(images, axis=[images.shape.ndims - 2])


def flip_left_right_if(image, flipped):
    """``image`` [H, W, C] mirrored when the bool scalar ``flipped`` holds, else unchanged.

    One ``ReverseV2`` whose axis list is [1] or empty, instead of a ``tf.cond`` between the two
    (a function call per image: about 12 µs of CPU against 2 or 3 for the axis list's scalar
    ops, docs/PERFORMANCE.md); the pixels are the same.
    """
    return tf.reverse(image, axis=tf.range(1, 1 + tf.cast(flipped, tf.int32)))


def preprocess_pixels(pixels, image_size=DEFAULT_IMAGE_SIZE, record_size=None, kept_size=False,
                      record_shape=None):
    """Serving: a float batch [N, H, W, 3] of 0..255 pixels (any H, W) → normalised [N, S, S, 3].

    What the evaluation did to its records, with the converter's step in front when the input is
    not what the records hold:

    * ``record_size`` (the side of the square records the converter's ``--image_size`` wrote,
      known from the evaluation records' manifest): inputs of another size get the converter's
      centre square and Lanczos resize to ``record_size`` (:func:`resize_like_converter`), then,
      as every record at evaluation, the bilinear :func:`resize` to ``image_size``;
    * ``kept_size`` (the manifest says the records were kept at their own size, no
      ``--image_size``): the evaluation resized every record, of whatever size, with the
      bilinear :func:`resize`, and so does this graph. ``record_shape`` ``(H, W)`` (the one size
      of all records, when the manifest knows it): an input of another size is first brought to
      it with the antialiased Lanczos-3 (a larger frame is downscaled as a camera would, not
      aliased by a bilinear shrink), so that the network gets what a record of that content
      would have given it;
    * neither (the records' conversion is unknown: models exported before their manifests said):
      inputs of another size get the antialiased Lanczos-3 resize straight to ``image_size``.

    An input at the records' size follows the evaluation's path exactly.
    """
    resized = serving_resize(pixels, image_size, record_size, kept_size, record_shape)
    return normalize(resize(resized, image_size))


def serving_resize(pixels, image_size=DEFAULT_IMAGE_SIZE, record_size=None, kept_size=False,
                   record_shape=None):
    """The serving graph's own step (see :func:`preprocess_pixels`): a float 0..255 batch
    [N, H, W, 3] to the records' size (``record_size`` square, or ``record_shape``), unchanged
    for records kept at their own size of unknown shape, else to ``image_size``; float32
    0..255; inputs already at that size pass through."""
    batch = tf.cast(pixels, tf.float32)
    if record_size is not None:
        return resize_like_converter(batch, record_size)
    if kept_size:
        if record_shape is None:
            return batch
        height, width = (int(side) for side in record_shape)
        resized = _unless_same_size(batch, height, lambda b: lanczos_resize(b, height, width),
                                    width=width)
        resized.set_shape([None, height, width, 3])
        return resized
    resized = _unless_same_size(batch, image_size, lambda b: lanczos_resize(b, image_size))
    resized.set_shape([None, image_size, image_size, 3])
    return resized
