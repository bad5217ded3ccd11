"""--grayscale: the model turns every input face to gray (BT.601 luma in all three channels),
for models trained on grayscale faces (LFW-a) that are then shown colour photos."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model import config as model_config
from model import heads, model_fn

SIZE, DIM = 32, 8


def _luma(rgb):
    """numpy reference: PIL's "L" conversion weights, in every channel."""
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.repeat(luma[..., None], 3, axis=-1)


def test_to_gray_is_the_luma_and_leaves_gray_pixels_alone():
    rng = np.random.RandomState(0)
    colour = rng.uniform(-1, 1, (2, 5, 5, 3)).astype(np.float32)
    gray = np.repeat(colour[..., :1], 3, axis=-1)
    with tf.Graph().as_default(), tf.Session() as sess:
        got_colour, got_gray = sess.run([model_fn.to_gray(tf.constant(colour)),
                                         model_fn.to_gray(tf.constant(gray))])
    np.testing.assert_allclose(got_colour, _luma(colour), atol=1e-6)
    np.testing.assert_allclose(got_gray, gray, atol=1e-6)


def _predict_all(runs):
    """Embeddings of each ``(images, grayscale)`` run, all through one set of weights: the
    model_fns are built in one graph, where the backbone's variables are shared (AUTO_REUSE)."""
    head = heads.build_head("circle", num_classes=4, embedding_size=DIM)
    with tf.Graph().as_default():
        tf.train.get_or_create_global_step()
        outputs = []
        for images, grayscale in runs:
            backbone = model_config.BackboneConfig("tiny", embedding_size=DIM, image_size=SIZE,
                                                   grayscale=grayscale)
            fn = model_fn.model_fn_builder(backbone, head, model_config.OptimizationConfig())
            spec = fn({"image": tf.constant(images)}, None, tf.estimator.ModeKeys.PREDICT)
            outputs.append(spec.predictions["embedding"])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return sess.run(outputs)


def test_a_grayscale_model_embeds_a_colour_face_as_its_gray_version():
    rng = np.random.RandomState(2)
    colour = rng.uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    gray = _luma(colour).astype(np.float32)
    # The same weights: the colour face through the gray model equals its gray version
    # through a model without the conversion, and differs from the colour one.
    colour_gray_model, gray_plain, colour_plain = _predict_all(
        [(colour, True), (gray, False), (colour, False)])
    np.testing.assert_allclose(colour_gray_model, gray_plain, atol=1e-5)
    assert np.abs(colour_plain - gray_plain).max() > 1e-3


def test_the_flag_reaches_the_backbone_config_and_is_checked(parse_flags, small_records):
    from training import params  # noqa: PLC0415

    common = ["--mode=train", "--backbone=tiny", "--embedding_size=8", "--batch_size=4",
              "--train_steps=2", "--image_size=32", "--model_dir=/tmp/unused_gray_run",
              f"--train_records={small_records}"]
    assert not params.build_configs(params.build_params(parse_flags(common))).backbone.grayscale
    p = params.build_params(parse_flags(common + ["--grayscale"]))
    assert params.build_configs(p).backbone.grayscale
    with pytest.raises(ValueError, match="grayscale must be true or false"):
        model_config.BackboneConfig("tiny", grayscale="yes")
