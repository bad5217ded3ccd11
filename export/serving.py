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
resize to the network size; an input at R × R follows the evaluation's path exactly. When the
transform says the records were kept at their own size (no ``--image_size``, e.g. 250 × 250 LFW
frames), every input gets the evaluation's own bilinear resize, after an antialiased Lanczos
resize to the records' shape (``record_shape``, when all records share one) for inputs of
another size: an input of the records' size gets exactly the evaluation's pixels. Only a model
whose records' conversion is unknown resizes other sizes with Lanczos straight to the network
size. Cropping a raw photo (``crop_box``) is the client's part: ``export.embed --crop_box``
does it with the converter's code.

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


def kept_shape_of(transform):
    """``(kept, shape)``: whether a conversion ``transform`` kept the images at their own size
    (it is known and did not resize), and then their one ``[height, width]`` when the manifest
    recorded it (``record_shape``; None when the records' sizes differ or it is an older
    manifest)."""
    if not transform or transform.get("image_size"):
        return False, None
    shape = transform.get("record_shape")
    return True, ([int(side) for side in shape] if shape else None)


def frozen_input_size(transform, image_size):
    """The side of a frozen graph's static input: the records' (square) size, so that the
    graph holds the evaluation's own path, else the network's ``image_size``."""
    kept, shape = kept_shape_of(transform)
    if kept and shape and shape[0] == shape[1]:
        return shape[0]
    return record_size_of(transform) or image_size


def preprocess(pixels, config):
    """Normalised network input [N, S, S, 3] of a 0..255 float batch [N, H, W, 3]; ``config`` is
    the dict of :func:`serving_config` (what :data:`CONFIG_NODE` holds; graphs exported before
    ``kept_size`` existed lack it and keep their preprocessing)."""
    return preprocessing.preprocess_pixels(pixels, config["image_size"],
                                           record_size=config.get("record_size"),
                                           kept_size=bool(config.get("kept_size")),
                                           record_shape=config.get("record_shape"))


def serving_config(image_size, transform=None):
    """The preprocessing parameters of a serving graph: network input size, records' size (or
    that they were kept at their own size, and their shape)."""
    kept, shape = kept_shape_of(transform)
    return {"image_size": int(image_size), "record_size": record_size_of(transform),
            "record_resampling": preprocessing.CONVERTER_KERNEL, "kept_size": kept,
            "record_shape": shape}


def serving_input_receiver_fn_builder(image_size=preprocessing.DEFAULT_IMAGE_SIZE,
                                      transform=None):
    """Return a ``serving_input_receiver_fn`` for ``export_saved_model`` and the exporters.

    ``transform`` is the conversion transform of the evaluation records (their manifest's
    ``transform``, see :func:`data_tools.manifest.conversion_transform`), or None when unknown.
    """
    config = serving_config(image_size, transform)

    def serving_input_receiver_fn():
        image_bytes = tf.placeholder(tf.string, [None], name=BYTES_INPUT)

        def decode(encoded):
            # Every image to one size (the records', or the network's), so they batch.
            resized = preprocessing.serving_resize(
                preprocessing.decode_image(encoded)[None], image_size, config["record_size"],
                config["kept_size"], config["record_shape"])
            if config["kept_size"] and config["record_shape"] is None:
                # Records of mixed sizes: the evaluation's resize here already, so they batch.
                resized = preprocessing.resize(resized, image_size)
            return resized[0]

        decoded = tf.map_fn(decode, image_bytes, dtype=tf.float32, back_prop=False)
        # The pixels signature feeds this tensor directly; fed, the decode path never runs.
        pixels = tf.placeholder_with_default(decoded, [None, None, None, 3], name=PIXELS_INPUT)
        tf.constant(json.dumps(config, sort_keys=True), name=CONFIG_NODE)
        features = {"image": tf.identity(preprocess(pixels, config), name=MODEL_INPUT)}
        return tf.estimator.export.ServingInputReceiver(
            features, {BYTES_INPUT: image_bytes},
            receiver_tensors_alternatives={PIXELS_INPUT: {PIXELS_INPUT: pixels}})

    return serving_input_receiver_fn
