"""Serving input receivers: what the exported SavedModel accepts.

Two signatures, both returning the L2-normalised ``embedding`` and ``embedding_norm``, the
norm of the embedding before normalisation (float32 [N]: insightface's N1 template weight, and a
face-quality signal). The graph embeds each image once; flip test-time augmentation is the
client's (``export.embedder`` defines the norm of a flipped pair):

* ``serving_default``: ``image_bytes``, a string batch [None] of JPEG/PNG files of any size;
  decoded, resized and normalised inside the graph with the training code's own preprocessing;
* ``pixels:serving_default``: ``pixels``, float32 [None, H, W, 3] in 0..255 (RGB, any H and W),
  resized and normalised inside the graph. (The ``pixels:`` prefix is how tf.estimator names a
  receiver alternative.)

The serving contract: send faces cropped (or aligned) as the training records were. The graph
does the rest of what the evaluation input had: when the evaluation records' conversion
``transform`` is known (their manifest's, see ``data_tools.manifest.conversion_transform``) and
resized them to R × R, an input of another size gets the converter's centre square and
antialiased Lanczos resize to R (``preprocessing.resize_like_converter``), then the evaluation's
resize to the network size; an input at R × R follows the evaluation's path exactly. Cropping a
raw photo (``crop_box``) is the client's part: ``export.embed --crop_box`` does it with the
converter's code.

The batch dimension is never fixed, and the model_fn runs in PREDICT mode, so batch norm uses
its moving averages. A constant ``serving_preprocessing`` (JSON) records the preprocessing
parameters, so that ``export.freeze`` can rebuild it with a static input size and no
conditional.
"""

import json

import tensorflow.compat.v1 as tf

from data_tools import preprocessing

BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "pixels"
PIXELS_SIGNATURE = "pixels:serving_default"
OUTPUT = "embedding"
NORM_OUTPUT = "embedding_norm"  # absent from SavedModels exported before it existed
# Graph names: the normalised batch the network gets, and the preprocessing parameters.
MODEL_INPUT = "serving_image"
CONFIG_NODE = "serving_preprocessing"


def record_size_of(transform):
    """The side of the square records a conversion ``transform`` (dict or None) wrote, or None
    when it kept the images at their own size."""
    if not transform:
        return None
    size = transform.get("image_size")
    return int(size) if size else None


def preprocess(pixels, config):
    """Normalised network input [N, S, S, 3] of a 0..255 float batch [N, H, W, 3]; ``config`` is
    the dict of :func:`serving_config` (what :data:`CONFIG_NODE` holds)."""
    return preprocessing.preprocess_pixels(pixels, config["image_size"],
                                           record_size=config.get("record_size"))


def serving_config(image_size, transform=None):
    """The preprocessing parameters of a serving graph: network input size, records' size."""
    return {"image_size": int(image_size), "record_size": record_size_of(transform),
            "record_resampling": preprocessing.CONVERTER_KERNEL}


def serving_input_receiver_fn_builder(image_size=preprocessing.DEFAULT_IMAGE_SIZE,
                                      transform=None):
    """Return a ``serving_input_receiver_fn`` for ``export_saved_model`` and the exporters.

    ``transform`` is the conversion transform of the evaluation records (their manifest's
    ``transform``, see :func:`data_tools.manifest.conversion_transform`), or None when unknown.
    """
    config = serving_config(image_size, transform)
    record_size = config["record_size"]

    def serving_input_receiver_fn():
        image_bytes = tf.placeholder(tf.string, [None], name=BYTES_INPUT)

        def decode(encoded):
            # Every image to one size (the records', or the network's), so they batch.
            return preprocessing.serving_resize(preprocessing.decode_image(encoded)[None],
                                                image_size, record_size)[0]

        decoded = tf.map_fn(decode, image_bytes, dtype=tf.float32, back_prop=False)
        # The pixels signature feeds this tensor directly; fed, the decode path never runs.
        pixels = tf.placeholder_with_default(decoded, [None, None, None, 3], name=PIXELS_INPUT)
        tf.constant(json.dumps(config, sort_keys=True), name=CONFIG_NODE)
        features = {"image": tf.identity(preprocess(pixels, config), name=MODEL_INPUT)}
        return tf.estimator.export.ServingInputReceiver(
            features, {BYTES_INPUT: image_bytes},
            receiver_tensors_alternatives={PIXELS_INPUT: {PIXELS_INPUT: pixels}})

    return serving_input_receiver_fn
