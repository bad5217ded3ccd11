"""IResNet ("improved ResNet", insightface's ResNet for 112×112 faces), in TF graph mode.

Follows insightface ``recognition/arcface_torch/backbones/iresnet.py`` layer for layer, so the
trainable-parameter count is the reference's and PyTorch weights map one-to-one onto ours:

* stem: conv 3×3 (64, stride 1) → BN → PReLU;
* four stages of IBasicBlocks, widths 64, 128, 256, 512, stride 2 in each stage's first block,
  each block ``BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN`` plus the shortcut (identity,
  or conv 1×1(stride) → BN when the shape changes);
* neck: BN → flatten (7×7×512) → dropout → FC(embedding_size) → BN whose scale is fixed at 1
  (the reference freezes ``features.weight`` at 1.0, so no ``gamma`` variable exists here).

Differences that do not change the function class: NHWC, so the flatten order before the FC is
a permutation of PyTorch's NCHW one; convolution kernels start He-normal (fan_out, as
torchvision's ResNet) instead of the reference's fixed N(0, 0.1), which matters little with a
BN after every convolution.
"""

import tensorflow.compat.v1 as tf

from data_tools import preprocessing
from model import layers

IMAGE_SIZE = preprocessing.DEFAULT_IMAGE_SIZE  # insightface's aligned crop
# Four stride-2 stages: 112 → 7, the map the FC layer is sized for.
FEATURE_MAP_SIZE = 7
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_DEPTHS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def image_size_error(image_size):
    """``None`` if IResNet takes ``image_size`` × ``image_size`` input, else the reason."""
    if image_size != IMAGE_SIZE:
        return (f"needs {IMAGE_SIZE}x{IMAGE_SIZE} images (its FC layer is sized for the "
                f"{FEATURE_MAP_SIZE}x{FEATURE_MAP_SIZE} feature map of a "
                f"{IMAGE_SIZE}x{IMAGE_SIZE} input), got {image_size}x{image_size}")
    return None


def _conv(x, filters, kernel_size, strides, padding, name):
    return layers.conv2d(x, filters, kernel_size, strides, padding=padding, init_mode="fan_out",
                         name=name)


def basic_block(x, planes, strides, is_training, name):
    with tf.variable_scope(name):
        out = layers.batch_norm(x, is_training, name="bn1")
        out = _conv(out, planes, 3, 1, 1, "conv1")
        out = layers.batch_norm(out, is_training, name="bn2")
        out = layers.prelu(out, name="prelu", is_training=is_training)
        out = _conv(out, planes, 3, strides, 1, "conv2")
        out = layers.batch_norm(out, is_training, name="bn3")
        shortcut = x
        if strides != 1 or x.shape.as_list()[-1] != planes:
            shortcut = _conv(x, planes, 1, strides, 0, "downsample_conv")
            shortcut = layers.batch_norm(shortcut, is_training, name="downsample_bn")
        return out + shortcut


def build_iresnet(images, is_training, depths, embedding_size=512, dropout_rate=0.0,
                  name="iresnet"):
    """IResNet with ``depths`` blocks per stage on ``images`` [B, 112, 112, C].

    Returns the un-normalised embeddings [B, embedding_size] in the dtype of ``images``.
    """
    layers.check_image_batch(images, name, image_size_error)
    if len(depths) != len(STAGE_WIDTHS):
        raise ValueError(f"{name}: depths needs {len(STAGE_WIDTHS)} stages, got {depths!r}")
    with tf.variable_scope(name):
        x = _conv(images, 64, 3, 1, 1, "conv1")
        x = layers.batch_norm(x, is_training, name="bn1")
        x = layers.prelu(x, name="prelu", is_training=is_training)
        for stage, (width, depth) in enumerate(zip(STAGE_WIDTHS, depths), start=1):
            with tf.variable_scope(f"layer{stage}"):
                for block in range(depth):
                    x = basic_block(x, width, 2 if block == 0 else 1, is_training,
                                     f"block{block}")
        return neck(x, is_training, embedding_size, dropout_rate)


def neck(x, is_training, embedding_size, dropout_rate):
    """BN → flatten → dropout → FC(embedding_size) → BN without scale: the feature map's
    spatial layout reaches the embedding, as insightface's ``features`` head has it."""
    x = layers.batch_norm(x, is_training, name="bn2")
    x = layers.flatten(x)
    x = layers.dropout(x, dropout_rate, is_training)
    x = layers.dense(x, embedding_size, use_bias=True, name="fc")
    return layers.batch_norm(x, is_training, scale=False, name="features")


def _variant(variant):
    def build(images, is_training, embedding_size=512, dropout_rate=0.0):
        return build_iresnet(images, is_training, STAGE_DEPTHS[variant], embedding_size,
                             dropout_rate, name=variant)

    build.__name__ = variant
    build.__doc__ = (f"{variant} (stages {STAGE_DEPTHS[variant]}) on [B, 112, 112, C] images → "
                     "un-normalised embeddings [B, embedding_size].")
    return build


iresnet18 = _variant("iresnet18")
iresnet34 = _variant("iresnet34")
iresnet50 = _variant("iresnet50")
iresnet100 = _variant("iresnet100")
