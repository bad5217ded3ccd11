"""The training input's settings as one typed, self-validating value.

Its fields are the keyword arguments of ``input_fns.train_input_fn_builder``, so a caller hands
them over as ``train_input_fn_builder(records, num_classes=C, **config._asdict())`` and a new
input setting touches its flag, its field here and its use in the builder.
"""

import collections

from data_tools.checks import check as _check
from data_tools.checks import is_int as _int
from data_tools.checks import is_real as _real


class InputConfig(collections.namedtuple(
        "InputConfig", ["image_size", "batch_size", "random_flip", "random_crop",
                        "brightness_delta", "min_crop_scale", "contrast_delta", "shuffle_buffer",
                        "images_per_identity", "seed"])):
    """Batch, augmentation, shuffling and P×K sampling of the training input."""

    __slots__ = ()

    def __new__(cls, image_size, batch_size, random_flip=True, random_crop=False,
                brightness_delta=0.0, min_crop_scale=1.0, contrast_delta=0.0,
                shuffle_buffer=10000, images_per_identity=None, seed=None):
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
        return super().__new__(cls, int(image_size), int(batch_size), bool(random_flip),
                               bool(random_crop), float(brightness_delta),
                               float(min_crop_scale), float(contrast_delta),
                               int(shuffle_buffer), images_per_identity, seed)


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
