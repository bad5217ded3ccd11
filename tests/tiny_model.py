"""A tiny SavedModel with the exporters' ``serving_default`` signature, and its numpy twin.

decode -> resize to SIZE x SIZE -> (x - 127.5) / 128 -> flatten -> fixed random projection ->
L2-normalise; ``embedding_norm`` is the projection's norm. Fed SIZE x SIZE images the resize
is the identity, so :class:`Reference` computes the same embeddings in numpy (the reference the
CLI tests of ijb, gallery and identification compare with).
"""

import numpy as np
import tensorflow.compat.v1 as tf

from data_tools import preprocessing

SIZE = 8
DIM = 16


def projection(seed=0):
    return np.random.RandomState(seed).randn(SIZE * SIZE * 3, DIM).astype(np.float32)


def build_saved_model(export_dir, weights, pixels_signature=False, norm_output=True):
    """The tiny model; ``pixels_signature`` adds the float signature as export/serving.py does;
    ``norm_output=False`` leaves ``embedding_norm`` out, as exports made before it existed.

    There the pixels input is a ``placeholder_with_default`` of the decoded bytes, which the
    embedder uses for flip TTA; without it the embedder takes the generic PNG route.
    """
    graph = tf.Graph()
    with graph.as_default():
        image_bytes = tf.placeholder(tf.string, [None], name="image_bytes")
        pixels = tf.map_fn(
            lambda b: preprocessing.resize(preprocessing.decode_image(b), SIZE),
            image_bytes, dtype=tf.float32, back_prop=False)
        if pixels_signature:
            pixels = tf.placeholder_with_default(pixels, [None, None, None, 3], name="pixels")
        flat = tf.reshape(preprocessing.preprocess_pixels(pixels, SIZE), [-1, SIZE * SIZE * 3])
        variable = tf.Variable(weights, name="projection")
        projected = tf.matmul(flat, variable)
        outputs = {"embedding": tf.nn.l2_normalize(projected, axis=1)}
        if norm_output:
            outputs["embedding_norm"] = tf.norm(projected, axis=1)
        signatures = {"serving_default": tf.saved_model.signature_def_utils.predict_signature_def(
            {"image_bytes": image_bytes}, outputs)}
        if pixels_signature:
            signatures["pixels:serving_default"] = (
                tf.saved_model.signature_def_utils.predict_signature_def(
                    {"pixels": pixels}, outputs))
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            builder = tf.saved_model.builder.SavedModelBuilder(export_dir)
            builder.add_meta_graph_and_variables(
                session, [tf.saved_model.tag_constants.SERVING], signature_def_map=signatures)
            builder.save()
    return export_dir


def _unit(x):
    norms = np.sqrt(np.sum(np.square(x), axis=-1, keepdims=True))
    norms[norms == 0] = 1.0
    return x / norms


class Reference:
    """The tiny model in numpy: ``ref(pixels [S, S(, 3)], flip)`` -> embedding."""

    def __init__(self, weights):
        self.weights = np.asarray(weights, np.float64)

    def unnormalised(self, pixels):
        """The projection before normalisation (what ``embedding_norm`` measures)."""
        x = (np.asarray(pixels, np.float64) - 127.5) / 128.0
        return (x.reshape(1, -1) @ self.weights)[0]

    def raw(self, pixels):
        return _unit(self.unnormalised(pixels)[None])[0]

    def __call__(self, pixels, flip=True):
        pixels = np.asarray(pixels)
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        if not flip:
            return self.raw(pixels)
        return _unit((self.raw(pixels) + self.raw(pixels[:, ::-1]))[None])[0]
