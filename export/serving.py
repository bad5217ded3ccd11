"""Serving input receivers: what the exported SavedModel accepts.

Two signatures, both returning the L2-normalised ``embedding``:

* ``serving_default``: ``image_bytes``, a string batch [None] of JPEG/PNG files of any size;
  decoded, resized and normalised inside the graph with the training code's own preprocessing;
* ``pixels:serving_default``: ``pixels``, float32 [None, H, W, 3] in 0..255 (RGB, any H and W),
  resized and normalised inside the graph. (The ``pixels:`` prefix is how tf.estimator names a
  receiver alternative.)

The batch dimension is never fixed, and the model_fn runs in PREDICT mode, so batch norm uses
its moving averages.
"""

import tensorflow.compat.v1 as tf

from data_tools import preprocessing

BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "pixels"
PIXELS_SIGNATURE = "pixels:serving_default"
OUTPUT = "embedding"


def serving_input_receiver_fn_builder(image_size=preprocessing.DEFAULT_IMAGE_SIZE):
    """Return a ``serving_input_receiver_fn`` for ``export_saved_model`` and the exporters."""

    def serving_input_receiver_fn():
        image_bytes = tf.placeholder(tf.string, [None], name=BYTES_INPUT)

        def decode(encoded):
            return preprocessing.resize(preprocessing.decode_image(encoded), image_size)

        decoded = tf.map_fn(decode, image_bytes, dtype=tf.float32, back_prop=False)
        # The pixels signature feeds this tensor directly; fed, the decode path never runs.
        pixels = tf.placeholder_with_default(decoded, [None, None, None, 3], name=PIXELS_INPUT)
        features = {"image": preprocessing.preprocess_pixels(pixels, image_size)}
        return tf.estimator.export.ServingInputReceiver(
            features, {BYTES_INPUT: image_bytes},
            receiver_tensors_alternatives={PIXELS_INPUT: {PIXELS_INPUT: pixels}})

    return serving_input_receiver_fn
