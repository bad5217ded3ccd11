"""The TFRecord schema: one place that the writer and every reader share.

Two record kinds:

* image records (training shards): one face image with its identity label;
* pair records (verification, LFW View 2 layout): both images of a pair, ``issame``, the fold
  and the pair's index in the set: 0 .. num_pairs - 1 in pairs-file order, with no gaps where
  ``--allow_missing_pairs`` left pairs out (the evaluation stores each pair at its index).

Writers build ``tf.train.Example`` protos with :func:`image_example` / :func:`pair_example`;
readers parse them with :func:`parse_image_record` / :func:`parse_pair_record` inside a
``tf.data`` pipeline. Images are stored encoded (JPEG or PNG bytes); decoding belongs to
``data_tools.preprocessing``.
"""

import tensorflow.compat.v1 as tf

SCHEMA_VERSION = 1

# Encoded image formats a record may hold. Everything else is re-encoded to PNG on conversion.
FORMATS = ("jpeg", "png")

# Image record keys.
ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
LABEL = "image/class/label"
IDENTITY = "image/class/identity"
FILENAME = "image/filename"
# Distillation (make_tfrecords.py --teacher): the teacher's embedding of the image, float32
# [dim]; the manifest's ``teacher`` entry gives its name and dimension. Absent without a teacher.
TEACHER_EMBEDDING = "teacher/embedding"
# Mirror-consistent targets (make_tfrecords.py --teacher_flip): the teacher's embedding of the
# horizontally flipped source image, the target of a training image the input flips; the
# manifest's ``teacher`` entry says ``flipped``. Absent otherwise.
TEACHER_EMBEDDING_FLIPPED = "teacher/embedding_flipped"

# Pair record keys. Each image of a pair carries the image fields above under its own prefix.
PAIR_INDEX = "pair/index"
PAIR_FOLD = "pair/fold"
PAIR_ISSAME = "pair/issame"
PAIR_PREFIXES = ("pair/image1/", "pair/image2/")

_IMAGE_FIELDS = ("encoded", "format", "height", "width", "channels", "identity", "filename")


def _bytes(value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _image_features(prefix, encoded, image_format, height, width, channels, identity, filename):
    if image_format not in FORMATS:
        raise ValueError(f"image_format must be one of {FORMATS}, got {image_format!r}")
    return {
        prefix + "encoded": _bytes(encoded),
        prefix + "format": _bytes(image_format),
        prefix + "height": _int(height),
        prefix + "width": _int(width),
        prefix + "channels": _int(channels),
        prefix + "class/identity": _bytes(identity),
        prefix + "filename": _bytes(filename),
    }


def image_example(encoded, image_format, height, width, channels, label, identity, filename,
                  teacher_embedding=None, teacher_embedding_flipped=None):
    """Serialized ``tf.train.Example`` of one training image.

    ``encoded`` is the JPEG/PNG bytes, ``label`` the integer class (line of labels.txt),
    ``identity`` the identity folder name, ``filename`` the path relative to the input dir,
    ``teacher_embedding`` (optional) the teacher's float vector of the image,
    ``teacher_embedding_flipped`` (optional) its vector of the mirrored image.
    """
    feature = _image_features("image/", encoded, image_format, height, width, channels,
                              identity, filename)
    feature[LABEL] = _int(label)
    if teacher_embedding is not None:
        feature[TEACHER_EMBEDDING] = _floats(teacher_embedding)
    if teacher_embedding_flipped is not None:
        feature[TEACHER_EMBEDDING_FLIPPED] = _floats(teacher_embedding_flipped)
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Protobuf leaves map order unspecified; sorted keys keep shards byte-identical.
    return example.SerializeToString(deterministic=True)


def pair_example(index, fold, issame, image1, image2):
    """Serialized ``tf.train.Example`` of one verification pair.

    ``image1`` and ``image2`` are dicts with the keys ``encoded, format, height, width,
    channels, identity, filename`` (the same fields as an image record, without a label), and
    optionally ``teacher_embedding`` (stored as ``pair/imageN/teacher/embedding``).
    """
    feature = {
        PAIR_INDEX: _int(index),
        PAIR_FOLD: _int(fold),
        PAIR_ISSAME: _int(1 if issame else 0),
    }
    for prefix, image in zip(PAIR_PREFIXES, (image1, image2)):
        missing = [k for k in _IMAGE_FIELDS if k not in image]
        if missing:
            raise ValueError(f"pair image is missing fields {missing}")
        feature.update(_image_features(prefix, image["encoded"], image["format"],
                                       image["height"], image["width"], image["channels"],
                                       image["identity"], image["filename"]))
        if image.get("teacher_embedding") is not None:
            feature[prefix + TEACHER_EMBEDDING] = _floats(image["teacher_embedding"])
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Protobuf leaves map order unspecified; sorted keys keep shards byte-identical.
    return example.SerializeToString(deterministic=True)


def _image_spec(prefix):
    return {
        prefix + "encoded": tf.io.FixedLenFeature([], tf.string),
        prefix + "format": tf.io.FixedLenFeature([], tf.string),
        prefix + "height": tf.io.FixedLenFeature([], tf.int64),
        prefix + "width": tf.io.FixedLenFeature([], tf.int64),
        prefix + "channels": tf.io.FixedLenFeature([], tf.int64),
        prefix + "class/identity": tf.io.FixedLenFeature([], tf.string),
        prefix + "filename": tf.io.FixedLenFeature([], tf.string),
    }


def _unprefix(parsed, prefix):
    return {
        "encoded": parsed[prefix + "encoded"],
        "format": parsed[prefix + "format"],
        "height": tf.cast(parsed[prefix + "height"], tf.int32),
        "width": tf.cast(parsed[prefix + "width"], tf.int32),
        "channels": tf.cast(parsed[prefix + "channels"], tf.int32),
        "identity": parsed[prefix + "class/identity"],
        "filename": parsed[prefix + "filename"],
    }


IMAGE_FEATURE_SPEC = dict(_image_spec("image/"), **{LABEL: tf.io.FixedLenFeature([], tf.int64)})

PAIR_FEATURE_SPEC = dict(
    _image_spec(PAIR_PREFIXES[0]),
    **_image_spec(PAIR_PREFIXES[1]),
    **{
        PAIR_INDEX: tf.io.FixedLenFeature([], tf.int64),
        PAIR_FOLD: tf.io.FixedLenFeature([], tf.int64),
        PAIR_ISSAME: tf.io.FixedLenFeature([], tf.int64),
    }
)


def parse_image_record(serialized, teacher_dim=None, teacher_flipped=False):
    """Parse one serialized image record into a dict of scalar tensors, or a [N] batch of
    records into [N] tensors (one ``parse_example``, cheaper than N single parses).

    Keys: ``encoded, format, height, width, channels, identity, filename`` and ``label``
    (int32); with ``teacher_dim``, also ``teacher_embedding`` (float32 [teacher_dim]), and
    with ``teacher_flipped`` too ``teacher_embedding_flipped``.
    """
    serialized = tf.convert_to_tensor(serialized, tf.string)
    parse = tf.io.parse_single_example if serialized.shape.ndims == 0 else tf.io.parse_example
    spec = IMAGE_FEATURE_SPEC
    if teacher_dim:
        spec = dict(spec, **{TEACHER_EMBEDDING: tf.io.FixedLenFeature([teacher_dim],
                                                                      tf.float32)})
        if teacher_flipped:
            spec[TEACHER_EMBEDDING_FLIPPED] = tf.io.FixedLenFeature([teacher_dim], tf.float32)
    parsed = parse(serialized, spec)
    record = _unprefix(parsed, "image/")
    record["label"] = tf.cast(parsed[LABEL], tf.int32)
    if teacher_dim:
        record["teacher_embedding"] = parsed[TEACHER_EMBEDDING]
        if teacher_flipped:
            record["teacher_embedding_flipped"] = parsed[TEACHER_EMBEDDING_FLIPPED]
    return record


def parse_pair_record(serialized, teacher_dim=None):
    """Parse one serialized pair record.

    Returns ``{'index', 'fold', 'issame'}`` (int32 scalars) plus ``'image1'`` and ``'image2'``,
    each a dict with the keys of :func:`parse_image_record` except ``label`` (with
    ``teacher_dim``: ``teacher_embedding`` included).
    """
    spec = PAIR_FEATURE_SPEC
    if teacher_dim:
        spec = dict(spec, **{prefix + TEACHER_EMBEDDING: tf.io.FixedLenFeature(
            [teacher_dim], tf.float32) for prefix in PAIR_PREFIXES})
    parsed = tf.io.parse_single_example(serialized, spec)
    images = []
    for prefix in PAIR_PREFIXES:
        image = _unprefix(parsed, prefix)
        if teacher_dim:
            image["teacher_embedding"] = parsed[prefix + TEACHER_EMBEDDING]
        images.append(image)
    return {
        "index": tf.cast(parsed[PAIR_INDEX], tf.int32),
        "fold": tf.cast(parsed[PAIR_FOLD], tf.int32),
        "issame": tf.cast(parsed[PAIR_ISSAME], tf.int32),
        "image1": images[0],
        "image2": images[1],
    }
