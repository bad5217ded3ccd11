"""Backbone registry: ``--backbone`` name → graph builder.

Every builder has the signature
``build(images, is_training, embedding_size=512, dropout_rate=0.0) -> embeddings``:
``images`` are normalised float NHWC pixels, ``is_training`` a Python bool (batch norm uses batch
statistics and registers its moving-average updates in ``tf.GraphKeys.UPDATE_OPS`` only when
True), and the embeddings ``[B, embedding_size]`` are not L2-normalised and have the dtype of
``images``. Variables live under a scope named after the backbone.
"""

import collections

from model.backbones import iresnet, iresnet_lite, mobilefacenet, tiny

_Spec = collections.namedtuple("_Spec", ["build", "size_error", "default_size"])

_SPECS = collections.OrderedDict([
    ("iresnet18", _Spec(iresnet.iresnet18, iresnet.image_size_error, iresnet.IMAGE_SIZE)),
    ("iresnet34", _Spec(iresnet.iresnet34, iresnet.image_size_error, iresnet.IMAGE_SIZE)),
    ("iresnet50", _Spec(iresnet.iresnet50, iresnet.image_size_error, iresnet.IMAGE_SIZE)),
    ("iresnet100", _Spec(iresnet.iresnet100, iresnet.image_size_error, iresnet.IMAGE_SIZE)),
    ("iresnet_lite", _Spec(iresnet_lite.iresnet_lite, iresnet_lite.image_size_error,
                           iresnet_lite.IMAGE_SIZE)),
    ("mobilefacenet", _Spec(mobilefacenet.mobilefacenet, mobilefacenet.image_size_error,
                            mobilefacenet.IMAGE_SIZE)),
    ("tiny", _Spec(tiny.tiny, tiny.image_size_error, tiny.IMAGE_SIZE)),
])

BACKBONES = collections.OrderedDict((name, spec.build) for name, spec in _SPECS.items())


def _spec(name):
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(_SPECS)}") from None


def get_backbone(name):
    """The builder registered as ``name``; ValueError listing the valid names otherwise."""
    return _spec(name).build


def check_image_size(name, image_size):
    """Raise ValueError (one line) unless backbone ``name`` takes square ``image_size`` input."""
    spec = _spec(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image size must be an int, got {image_size!r}")
    reason = spec.size_error(image_size)
    if reason is not None:
        raise ValueError(f"backbone {name!r} {reason}")


def default_image_size(name):
    """The input size backbone ``name`` is designed for (112; 64 for iresnet_lite)."""
    return _spec(name).default_size
