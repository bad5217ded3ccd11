"""IResNet-lite: insightface's IResNet blocks at the width and depth a CPU can train in an hour.

For small real datasets (a few thousand faces, as the LFW fold-holdout recipe) and low-resolution
inputs (64–96 px) on CPUs, where ``iresnet18`` at 112×112 trains at about 20 images/s on two
cores and ``tiny``'s global average pooling throws away where on the face a feature is:

* stem: conv 3×3 (32, stride 2) → BN → PReLU;
* three stages of IResNet basic blocks (``BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN`` plus
  shortcut, the block of :mod:`model.backbones.iresnet`), widths 64, 128, 256, two blocks each,
  stride 2 in each stage's first block;
* neck as IResNet: BN → flatten ((S/16)×(S/16)×256) → dropout → FC(embedding_size) → BN with
  the scale fixed at 1. The flatten keeps the spatial layout of aligned faces.

Any square input that is a multiple of 16 and at least 32 pixels works; the FC layer is sized
for it (4×4×256 at the default 64×64). About 4.8 M parameters and 0.15 G multiply-adds per
64×64 image (iresnet18 at 112×112: 24 M and 2.6 G).
"""

import tensorflow.compat.v1 as tf

from model import layers
from model.backbones import iresnet

IMAGE_SIZE = 64
MIN_IMAGE_SIZE = 32
SIZE_MULTIPLE = 16
STEM_WIDTH = 32
STAGE_WIDTHS = (64, 128, 256)
STAGE_DEPTHS = (2, 2, 2)


def image_size_error(image_size):
    """``None`` if IResNet-lite takes ``image_size`` × ``image_size`` input, else the reason."""
    return layers.multiple_size_error(image_size, SIZE_MULTIPLE, MIN_IMAGE_SIZE)


def iresnet_lite(images, is_training, embedding_size=512, dropout_rate=0.0):
    """IResNet-lite on ``images`` [B, S, S, C] (S a multiple of 16, ≥ 32) → un-normalised
    embeddings [B, embedding_size] in the dtype of ``images``."""
    name = "iresnet_lite"
    layers.check_image_batch(images, name, image_size_error)
    with tf.variable_scope(name):
        x = layers.conv2d(images, STEM_WIDTH, 3, 2, padding=1, init_mode="fan_out",
                          name="conv1")
        x = layers.batch_norm(x, is_training, name="bn1")
        x = layers.prelu(x, name="prelu", is_training=is_training)
        for stage, (width, depth) in enumerate(zip(STAGE_WIDTHS, STAGE_DEPTHS), start=1):
            with tf.variable_scope(f"layer{stage}"):
                for block in range(depth):
                    x = iresnet.basic_block(x, width, 2 if block == 0 else 1, is_training,
                                            f"block{block}")
        return iresnet.neck(x, is_training, embedding_size, dropout_rate)
