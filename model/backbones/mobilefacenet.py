"""MobileFaceNet (Chen et al. 2018) as insightface ships it, in TF graph mode.

Follows insightface ``recognition/arcface_torch/backbones/mobilefacenet.py`` (``get_mbf``:
``blocks=(1, 4, 6, 2)``, ``scale=2``) layer for layer, so the parameter count is the
reference's. With ``ConvBlock`` = conv → BN → PReLU and ``LinearBlock`` = conv → BN:

* ConvBlock 3×3 stride 2 → 128; ConvBlock 3×3 → 128 with 64 groups;
* DepthWise units (1×1 ConvBlock to the inner width → 3×3 depthwise ConvBlock (stride) →
  1×1 LinearBlock), residual when the stride is 1: a stride-2 unit to 128 (inner 128),
  4 residual (inner 128), stride 2 to 256 (inner 256), 6 residual (inner 256), stride 2 to 256
  (inner 512), 2 residual (inner 256);
* ConvBlock 1×1 → 512; GDC: 7×7 depthwise LinearBlock → flatten → linear (no bias) → BN.

Kernels start as the reference's ``kaiming_normal_(mode="fan_out")``. ``dropout_rate`` (not in
the reference, 0 by default) drops the flattened GDC output before the linear layer.
"""

import tensorflow.compat.v1 as tf

from data_tools import preprocessing
from model import layers

IMAGE_SIZE = preprocessing.DEFAULT_IMAGE_SIZE  # insightface's aligned crop
FEATURE_MAP_SIZE = 7
SCALE = 2
BLOCKS = (1, 4, 6, 2)


def image_size_error(image_size):
    """``None`` if MobileFaceNet takes ``image_size`` × ``image_size`` input, else the reason."""
    if image_size != IMAGE_SIZE:
        return (f"needs {IMAGE_SIZE}x{IMAGE_SIZE} images (its 7x7 GDC layer is sized for the "
                f"{FEATURE_MAP_SIZE}x{FEATURE_MAP_SIZE} feature map "
                f"of a {IMAGE_SIZE}x{IMAGE_SIZE} input), got {image_size}x{image_size}")
    return None


def _conv_block(x, filters, kernel_size, strides, padding, is_training, name, groups=1,
                linear=False):
    with tf.variable_scope(name):
        # Grouped convolutions as one grouped Conv2D in training, where TensorFlow has one
        # (layers.conv2d); evaluation and exports keep the depthwise form every converter takes.
        x = layers.conv2d(x, filters, kernel_size, strides, padding=padding, groups=groups,
                          init_mode="fan_out", native_groups=is_training, name="conv")
        x = layers.batch_norm(x, is_training, name="bn")
        return x if linear else layers.prelu(x, name="prelu", is_training=is_training)


def _depthwise_unit(x, filters, inner, strides, residual, is_training, name):
    with tf.variable_scope(name):
        y = _conv_block(x, inner, 1, 1, 0, is_training, "expand")
        y = _conv_block(y, inner, 3, strides, 1, is_training, "depthwise", groups=inner)
        y = _conv_block(y, filters, 1, 1, 0, is_training, "project", linear=True)
        return x + y if residual else y


def _residual_stage(x, num_blocks, inner, is_training, name):
    channels = x.shape.as_list()[-1]
    with tf.variable_scope(name):
        for block in range(num_blocks):
            x = _depthwise_unit(x, channels, inner, 1, True, is_training,
                                f"block{block}")
    return x


def mobilefacenet(images, is_training, embedding_size=512, dropout_rate=0.0):
    """MobileFaceNet on ``images`` [B, 112, 112, C] → un-normalised embeddings
    [B, embedding_size] in the dtype of ``images``."""
    name = "mobilefacenet"
    layers.check_image_batch(images, name, image_size_error)
    base, wide = 64 * SCALE, 128 * SCALE
    with tf.variable_scope(name):
        x = _conv_block(images, base, 3, 2, 1, is_training, "conv1")
        # With BLOCKS[0] == 1 the reference uses one grouped ConvBlock, not a residual stage.
        x = _conv_block(x, base, 3, 1, 1, is_training, "conv2_dw", groups=64)
        x = _depthwise_unit(x, base, 128, 2, False, is_training, "dw_23")
        x = _residual_stage(x, BLOCKS[1], 128, is_training, "res_3")
        x = _depthwise_unit(x, wide, 256, 2, False, is_training, "dw_34")
        x = _residual_stage(x, BLOCKS[2], 256, is_training, "res_4")
        x = _depthwise_unit(x, wide, 512, 2, False, is_training, "dw_45")
        x = _residual_stage(x, BLOCKS[3], 256, is_training, "res_5")
        x = _conv_block(x, 512, 1, 1, 0, is_training, "conv_sep")
        with tf.variable_scope("gdc"):
            x = _conv_block(x, 512, FEATURE_MAP_SIZE, 1, 0, is_training, "conv", groups=512,
                            linear=True)
            x = layers.flatten(x)
            x = layers.dropout(x, dropout_rate, is_training)
            x = layers.dense(x, embedding_size, use_bias=False, init_mode="fan_out",
                             init_scale=2.0, init_distribution="truncated_normal",
                             name="linear")
            return layers.batch_norm(x, is_training, name="features")
