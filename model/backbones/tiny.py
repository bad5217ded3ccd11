"""A small, fast CNN for tests, the demo and CPU experiments.

Four stride-2 stages (stem conv 3×3 → 24, then stages of 48, 96, 192 channels, each a strided
3×3 conv plus a residual 3×3 conv, with BN + PReLU), global average pooling, dropout, FC to
``embedding_size`` and a BN neck. Global pooling makes it size-agnostic: any square input that
is a multiple of 16 and at least 32 pixels works. About 0.75 M parameters and 75 M multiply-adds
per 112×112 image.
"""

import tensorflow.compat.v1 as tf

from data_tools import preprocessing
from model import layers

IMAGE_SIZE = preprocessing.DEFAULT_IMAGE_SIZE  # insightface's aligned crop
MIN_IMAGE_SIZE = 32
# Four stride-2 stages: sizes divisible by 16 keep every feature map aligned.
SIZE_MULTIPLE = 16
STEM_WIDTH = 24
STAGE_WIDTHS = (48, 96, 192)


def image_size_error(image_size):
    """``None`` if the tiny CNN takes ``image_size`` × ``image_size`` input, else the reason."""
    return layers.multiple_size_error(image_size, SIZE_MULTIPLE, MIN_IMAGE_SIZE)


def _conv_bn_prelu(x, filters, strides, is_training, name):
    with tf.variable_scope(name):
        x = layers.conv2d(x, filters, 3, strides, padding=1, name="conv")
        x = layers.batch_norm(x, is_training, name="bn")
        return layers.prelu(x, name="prelu", is_training=is_training)


def tiny(images, is_training, embedding_size=512, dropout_rate=0.0):
    """Tiny CNN on ``images`` [B, S, S, C] (S a multiple of 16, ≥ 32) → un-normalised
    embeddings [B, embedding_size] in the dtype of ``images``."""
    name = "tiny"
    layers.check_image_batch(images, name, image_size_error, static_size=False)
    with tf.variable_scope(name):
        x = _conv_bn_prelu(images, STEM_WIDTH, 2, is_training, "stem")
        for stage, width in enumerate(STAGE_WIDTHS, start=1):
            with tf.variable_scope(f"stage{stage}"):
                x = _conv_bn_prelu(x, width, 2, is_training, "down")
                x = x + _conv_bn_prelu(x, width, 1, is_training, "conv")
        x = tf.reduce_mean(x, axis=[1, 2])
        x = layers.dropout(x, dropout_rate, is_training)
        x = layers.dense(x, embedding_size, use_bias=False, name="fc")
        return layers.batch_norm(x, is_training, name="features")
