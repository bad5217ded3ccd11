"""The training input's settings as one typed, self-validating value.

Its fields are the keyword arguments of ``input_fns.train_input_fn_builder``, so a caller hands
them over as ``train_input_fn_builder(records, num_classes=C, **config._asdict())`` and a new
input setting touches its flag, its field here and its use in the builder.
"""

import collections

from data_tools.checks import check as _check
from data_tools.checks import is_int as _int
from data_tools.checks import is_real as _real

# The best JPEG quality the JPEG degradation draws: what cameras and photo sites write at best.
MAX_JPEG_QUALITY = 95


def _probability(value, flag):
    _check(_real(value) and 0.0 <= value <= 1.0, f"--{flag} must be in [0, 1], got {value!r}")


class Degradations(collections.namedtuple(
        "Degradations", ["lowres_prob", "lowres_min_scale", "blur_prob", "blur_max_sigma",
                         "jpeg_prob", "jpeg_min_quality", "gamma_range", "shading_prob",
                         "shading_strength"])):
    """Which degradations a training image gets, how often and how strongly. The defaults are
    all off: ``Degradations()`` changes nothing and adds nothing to the graph.

    * ``lowres_prob``, ``lowres_min_scale``: down to a side fraction ``U(min_scale, 1)`` (area
      average, as a sensor bins light) and back up (bilinear): small, far or low-resolution faces;
    * ``blur_prob``, ``blur_max_sigma``: Gaussian blur, sigma ``U(0, max)`` pixels of the
      network's input: focus and motion blur, soft webcam optics;
    * ``jpeg_prob``, ``jpeg_min_quality``: JPEG re-compression at quality
      ``U(min_quality, 95)``: blocking and ringing of compressed photos and video frames;
    * ``gamma_range`` g: every pixel ``255 · (x / 255) ^ exp(U(-g, g))``: under- and
      over-exposure, other cameras' tone curves (0: off);
    * ``shading_prob``, ``shading_strength`` s: multiply by a linear ramp from ``1 - a`` to
      ``1 + a`` across the face in a random direction, ``a ~ U(0, s)``: side light, the main
      failure of models trained on LFW's evenly lit press photos.
    """

    __slots__ = ()

    def __new__(cls, lowres_prob=0.0, lowres_min_scale=0.5, blur_prob=0.0, blur_max_sigma=1.5,
                jpeg_prob=0.0, jpeg_min_quality=30, gamma_range=0.0, shading_prob=0.0,
                shading_strength=0.5):
        _probability(lowres_prob, "lowres_prob")
        _check(_real(lowres_min_scale) and 0.0 < lowres_min_scale <= 1.0,
               f"--lowres_min_scale must be in (0, 1], got {lowres_min_scale!r}")
        _probability(blur_prob, "blur_prob")
        _check(_real(blur_max_sigma) and 0.0 < blur_max_sigma <= 8.0,
               f"--blur_max_sigma must be in (0, 8] pixels, got {blur_max_sigma!r}")
        _probability(jpeg_prob, "jpeg_prob")
        _check(_int(jpeg_min_quality) and 1 <= jpeg_min_quality <= MAX_JPEG_QUALITY,
               f"--jpeg_min_quality must be an integer in [1, {MAX_JPEG_QUALITY}], got "
               f"{jpeg_min_quality!r}")
        _check(_real(gamma_range) and 0.0 <= gamma_range <= 2.0,
               f"--gamma_range must be in [0, 2], got {gamma_range!r}")
        _probability(shading_prob, "shading_prob")
        _check(_real(shading_strength) and 0.0 <= shading_strength <= 1.0,
               f"--shading_strength must be in [0, 1], got {shading_strength!r}")
        return super().__new__(cls, float(lowres_prob), float(lowres_min_scale),
                               float(blur_prob), float(blur_max_sigma), float(jpeg_prob),
                               int(jpeg_min_quality), float(gamma_range), float(shading_prob),
                               float(shading_strength))

    @property
    def active(self):
        """Whether any degradation can happen (else ``degradations.degrade`` returns its
        input)."""
        return any(value > 0 for value in (self.lowres_prob, self.blur_prob, self.jpeg_prob,
                                           self.gamma_range, self.shading_prob))


class InputConfig(collections.namedtuple(
        "InputConfig", ["image_size", "batch_size", "random_flip", "random_crop",
                        "brightness_delta", "min_crop_scale", "contrast_delta", "shuffle_buffer",
                        "images_per_identity", "seed", "degradations"])):
    """Batch, augmentation, shuffling and P×K sampling of the training input.

    ``degradations``: the training faces' quality and lighting degradations
    (``degradations.Degradations``, validated by its own constructor; None: none)."""

    __slots__ = ()

    def __new__(cls, image_size, batch_size, random_flip=True, random_crop=False,
                brightness_delta=0.0, min_crop_scale=1.0, contrast_delta=0.0,
                shuffle_buffer=10000, images_per_identity=None, seed=None, degradations=None):
        _check(_int(image_size) and image_size > 0,
               f"image_size must be a positive integer, got {image_size!r}")
        _check(_int(batch_size) and batch_size > 0,
               f"batch_size must be a positive integer, got {batch_size!r}")
        _check(_real(brightness_delta) and 0.0 <= brightness_delta < 255.0,
               f"--brightness_delta must be in [0, 255), got {brightness_delta!r}")
        _check(_real(min_crop_scale) and 0.0 < min_crop_scale <= 1.0,
               f"--min_crop_scale must be in (0, 1], got {min_crop_scale:g}")
        _check(_real(contrast_delta) and 0.0 <= contrast_delta < 1.0,
               f"--contrast_delta must be in [0, 1), got {contrast_delta:g}")
        _check(_int(shuffle_buffer) and shuffle_buffer > 0,
               f"--shuffle_buffer must be positive, got {shuffle_buffer!r}")
        if images_per_identity is not None:
            _check(_int(images_per_identity) and images_per_identity >= 2,
                   f"--images_per_identity: K must be at least 2, got {images_per_identity!r}")
            _check(batch_size % images_per_identity == 0,
                   f"--batch_size={batch_size} must be a multiple of "
                   f"--images_per_identity={images_per_identity}")
        degradations = Degradations() if degradations is None else degradations
        _check(isinstance(degradations, Degradations),
               f"degradations must be a Degradations, got {degradations!r}")
        return super().__new__(cls, int(image_size), int(batch_size), bool(random_flip),
                               bool(random_crop), float(brightness_delta),
                               float(min_crop_scale), float(contrast_delta),
                               int(shuffle_buffer), images_per_identity, seed, degradations)


class WorkerShard(collections.namedtuple("WorkerShard", ["index", "count"])):
    """The part of the training records one input pipeline reads: part ``index`` of ``count``
    equal parts (``input_fns.worker_spans``). ``WorkerShard()`` is the whole set.

    The input pipeline is handed it and reads no environment: where a process stands in its
    cluster (TF_CONFIG, the Ascend rank) is ``runtime.cluster.worker_shard``'s to say.
    """

    __slots__ = ()

    def __new__(cls, index=0, count=1):
        _check(_int(count) and count >= 1, f"a worker shard count must be at least 1, got "
               f"{count!r}")
        _check(_int(index) and 0 <= index < count, f"worker shard index {index!r} is not one "
               f"of 0 to {count - 1}")
        return super().__new__(cls, int(index), int(count))
