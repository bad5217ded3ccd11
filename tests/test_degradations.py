"""Training degradations (data_tools/degradations.py): each transform against a numpy / PIL
reference, off = bit-identical, seeded, training only, and their settings from flag to params."""

import io
import json

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from data_tools import degradations, input_fns, preprocessing
from data_tools.input_config import Degradations, InputConfig
from tests import records_helpers as rh
from training import params as params_module
from training.run_spec import LEGACY_DEFAULTS, ParamsError, RunSpec

ALL_ON = Degradations(lowres_prob=1.0, lowres_min_scale=0.3, blur_prob=1.0, blur_max_sigma=2.0,
                      jpeg_prob=1.0, jpeg_min_quality=10, gamma_range=0.5, shading_prob=1.0,
                      shading_strength=0.8)


def _face(size=64, seed=0):
    """A smooth face-like test image: a bright ellipse with darker 'eyes' and some noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:size, 0:size] / float(size)
    face = 60 + 140 * (((x - 0.5) / 0.35) ** 2 + ((y - 0.5) / 0.45) ** 2 < 1)
    for cx in (0.35, 0.65):
        face = face - 80 * (((x - cx) / 0.07) ** 2 + ((y - 0.4) / 0.04) ** 2 < 1)
    face = face + rng.normal(0, 8, face.shape)
    pixels = np.clip(np.stack([face, face * 0.9, face * 0.8], -1), 0, 255)
    return pixels.astype(np.float32)


def _run(fn, *arrays):
    """``fn`` of placeholders fed with ``arrays`` (graph mode, as the input pipeline runs)."""
    with tf.Graph().as_default(), tf.Session() as sess:
        holders = [tf.placeholder(tf.as_dtype(np.asarray(a).dtype), np.shape(a)) for a in arrays]
        out = fn(*holders)
        return sess.run(out, dict(zip(holders, arrays)))


def _numpy_gaussian_blur(image, sigma, radius):
    """scipy.ndimage.gaussian_filter(mode='reflect') transcribed: symmetric padding, the
    normalised 1-D Gaussian along rows, then columns."""
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image.astype(np.float64), [(radius, radius), (radius, radius), (0, 0)],
                    mode="symmetric")
    height, width = image.shape[:2]
    across = sum(kernel[k] * padded[:, k:k + width] for k in range(2 * radius + 1))
    return sum(kernel[k] * across[k:k + height] for k in range(2 * radius + 1))


@pytest.mark.parametrize("sigma", [0.5, 1.2, 2.0])
def test_gaussian_blur_matches_a_numpy_gaussian_convolution(sigma):
    image = _face(32)
    radius = degradations.blur_radius(2.0, 32)
    assert radius == 6
    got = _run(lambda x: degradations.gaussian_blur(x, sigma, radius), image)
    np.testing.assert_allclose(got, _numpy_gaussian_blur(image, sigma, radius), atol=2e-3)


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_gaussian_blur_matches_scipy_gaussian_filter(sigma):
    scipy_ndimage = pytest.importorskip("scipy.ndimage")  # absent on the TF 1.15 venv
    image = _face(32)
    radius = degradations.blur_radius(2.0, 32)
    got = _run(lambda x: degradations.gaussian_blur(x, sigma, radius), image)
    reference = scipy_ndimage.gaussian_filter(image.astype(np.float64), (sigma, sigma, 0),
                                              mode="reflect", truncate=radius / sigma)
    np.testing.assert_allclose(got, reference, atol=2e-3)


def test_gaussian_blur_of_a_non_square_image_and_the_widest_radius():
    image = _face(32)[:20, :28]
    radius = degradations.blur_radius(8.0, 20)
    assert radius == 19  # one mirror image of the 20-pixel side
    got = _run(lambda x: degradations.gaussian_blur(x, 1.7, radius), image)
    np.testing.assert_allclose(got, _numpy_gaussian_blur(image, 1.7, radius), atol=2e-3)


def test_gaussian_blur_of_a_tiny_sigma_is_the_image():
    image = _face(16)
    got = _run(lambda x: degradations.gaussian_blur(x, 0.0, 3), image)
    np.testing.assert_allclose(got, image, atol=1e-4)


def _pil_resize(image, size, resample):
    """Per channel, in PIL's float mode 'F' (no 8-bit rounding)."""
    return np.stack([np.asarray(Image.fromarray(image[..., c]).resize((size, size), resample))
                     for c in range(image.shape[-1])], -1)


@pytest.mark.parametrize("small", [8, 16, 32])
def test_low_resolution_matches_pil_box_down_and_bilinear_up(small):
    image = _face(64)
    got = _run(lambda x: degradations.low_resolution(x, tf.constant(small)), image)
    down = _pil_resize(image, small, Image.BOX)  # an integer factor: the block mean
    np.testing.assert_allclose(down, image.reshape(small, 64 // small, small, 64 // small, 3)
                               .mean(axis=(1, 3)), atol=1e-3)
    reference = _pil_resize(down, 64, Image.BILINEAR)
    assert got.shape == image.shape
    np.testing.assert_allclose(got, reference, atol=1e-2)
    # Less detail: the high frequencies (pixel differences) shrink.
    assert np.abs(np.diff(got, axis=1)).mean() < 0.8 * np.abs(np.diff(image, axis=1)).mean()


def test_low_resolution_at_a_fractional_side_keeps_the_mean_and_the_shape():
    image = _face(64)
    got = _run(lambda x: degradations.low_resolution(x, tf.constant(27)), image)
    assert got.shape == (64, 64, 3)
    assert abs(got.mean() - image.mean()) < 1.0


@pytest.mark.parametrize("exponent", [0.6, 1.0, 1.7])
def test_gamma_matches_the_formula(exponent):
    image = _face(16)
    got = _run(lambda x: degradations.adjust_gamma(x, exponent), image)
    np.testing.assert_allclose(got, 255.0 * (image / 255.0) ** exponent, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("angle", [0.0, 0.7, np.pi / 2, 3.0])
def test_shading_matches_a_numpy_ramp(angle):
    image = np.full((20, 24, 3), 100.0, np.float32)
    strength = 0.6
    got = _run(lambda x: degradations.shade(x, strength, angle), image)
    y = (np.arange(20) + 0.5) / 20 * 2 - 1
    x = (np.arange(24) + 0.5) / 24 * 2 - 1
    ramp = x[None, :] * np.cos(angle) + y[:, None] * np.sin(angle)
    ramp /= np.abs(ramp).max()  # the pixel centres' extent is [-1, 1]
    expected = np.repeat(100.0 * (1 + strength * ramp)[..., None], 3, axis=-1)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert got.min() == pytest.approx(40.0, abs=1e-3)
    assert got.max() == pytest.approx(160.0, abs=1e-3)


def _psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_jpeg_recompression_degrades_in_a_sane_band_and_matches_pil():
    image = np.round(_face(64)).astype(np.float32)
    psnr = {}
    for quality in (10, 30, 95):
        got = _run(lambda x, q=quality: degradations.jpeg_recompress(x, tf.constant(q)), image)
        assert got.shape == image.shape and got.dtype == np.float32
        assert not np.array_equal(got, image)
        psnr[quality] = _psnr(got, image)
        # The same codec family as PIL's libjpeg at the same quality: much closer to it than
        # to the original.
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
        pil = np.asarray(Image.open(buffer), np.float32)
        assert _psnr(got, pil) > psnr[quality] + 3
    assert 20 < psnr[10] < psnr[30] < psnr[95]
    assert psnr[10] < 32 and psnr[95] > 35


def _train_graph(config, size=32, seed=True):
    """(run(encoded, key) -> image) of preprocess_for_train with ``config``, and the graph's op
    count."""
    graph = tf.Graph()
    with graph.as_default():
        encoded = tf.placeholder(tf.string, [])
        key = tf.placeholder(tf.int64, [2])
        image = preprocessing.preprocess_for_train(
            encoded, size, random_flip=True, min_crop_scale=0.8, contrast_delta=0.3,
            brightness_delta=20, seed=key if seed else None, degradations=config)
    sess = tf.Session(graph=graph)
    return (lambda data, k=(0, 0): sess.run(image, {encoded: data, key: list(k)}),
            len(graph.get_operations()))


PNG = rh.encode(np.clip(_face(40), 0, 255).astype(np.uint8))


def test_off_is_bit_identical_and_adds_no_op():
    """Defaults, None, and zero probabilities with non-default strengths: the same graph and
    the same pixels as before the degradations existed."""
    zero = Degradations(lowres_min_scale=0.2, blur_max_sigma=3.0, jpeg_min_quality=5,
                        shading_strength=1.0)
    runs = [_train_graph(config) for config in (None, Degradations(), zero)]
    assert len({ops for _, ops in runs}) == 1
    for key in ((0, 0), (3, 7)):
        first = runs[0][0](PNG, key)
        for run, _ in runs[1:]:
            np.testing.assert_array_equal(run(PNG, key), first)


def test_seeded_degradations_repeat_and_differ_by_key():
    run, _ = _train_graph(ALL_ON)
    plain, _ = _train_graph(None)
    outputs = [run(PNG, (5, i)) for i in range(6)]
    for i, out in enumerate(outputs):
        np.testing.assert_array_equal(out, run(PNG, (5, i)))
        assert not np.array_equal(out, plain(PNG, (5, i)))  # degraded
        # Range, dtype and shape of the network's input are kept.
        assert out.shape == (32, 32, 3) and out.dtype == np.float32
        assert out.min() >= -preprocessing.PIXEL_MEAN / preprocessing.PIXEL_SCALE - 1e-6
        assert out.max() <= (255 - preprocessing.PIXEL_MEAN) / preprocessing.PIXEL_SCALE + 1e-6
    assert len({out.tobytes() for out in outputs}) == 6
    assert not np.array_equal(run(PNG, (6, 0)), outputs[0])


def test_unseeded_degradations_run():
    run, _ = _train_graph(ALL_ON, seed=False)
    out = run(PNG)
    assert out.shape == (32, 32, 3) and np.all(np.isfinite(out))


@pytest.mark.parametrize("name,settings", [
    ("lowres", dict(lowres_prob=0.3, lowres_min_scale=0.3)),
    ("blur", dict(blur_prob=0.3, blur_max_sigma=2.0)),
    ("jpeg", dict(jpeg_prob=0.3, jpeg_min_quality=10)),
    ("shading", dict(shading_prob=0.3, shading_strength=0.8)),
])
def test_each_degradation_fires_with_its_probability(name, settings):
    """Over 200 seeded draws the fraction of changed images is near the probability."""
    image = _face(32)
    with tf.Graph().as_default(), tf.Session() as sess:
        holder = tf.placeholder(tf.float32, image.shape)
        key = tf.placeholder(tf.int64, [2])
        uniforms = tf.random.stateless_uniform([degradations.DRAWS], seed=key)
        out = degradations.degrade(holder, Degradations(**settings), uniforms)
        changed = [not np.allclose(sess.run(out, {holder: image, key: [1, i]}), image,
                                   atol=0.5) for i in range(200)]
    assert 0.2 < np.mean(changed) < 0.4, name


def test_gamma_range_draws_exponents_within_it():
    image = np.full((4, 4, 3), 64.0, np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        uniforms = tf.placeholder(tf.float32, [degradations.DRAWS])
        out = degradations.degrade(tf.constant(image), Degradations(gamma_range=0.4), uniforms)
        exponents = []
        for u in np.linspace(0, 0.999, 9):
            value = sess.run(out, {uniforms: np.full(degradations.DRAWS, u)})[0, 0, 0]
            exponents.append(np.log(value / 255.0) / np.log(64.0 / 255.0))
    np.testing.assert_allclose(exponents, np.exp(0.4 * (2 * np.linspace(0, 0.999, 9) - 1)),
                               rtol=1e-4)


def test_evaluation_input_is_untouched(tmp_path):
    """is_training=False (EVAL on image records) never degrades; training does."""
    directory = str(tmp_path / "records")
    rh.write_image_records(directory, num_classes=2, per_class=4, size=32)
    batches = {}
    for name, config, training in (("eval_plain", None, False), ("eval_degraded", ALL_ON, False),
                                   ("train_plain", None, True), ("train_degraded", ALL_ON, True)):
        with tf.Graph().as_default():
            input_fn = input_fns.train_input_fn_builder(
                directory, image_size=32, is_training=training, degradations=config, seed=1,
                random_flip=False, shuffle_buffer=8)
            batches[name] = rh.run_dataset(input_fn({"batch_size": 4}), max_batches=2)
    for (a, _), (b, _) in zip(batches["eval_plain"], batches["eval_degraded"]):
        np.testing.assert_array_equal(a["image"], b["image"])
    for (a, _), (b, _) in zip(batches["train_plain"], batches["train_degraded"]):
        assert not np.array_equal(a["image"], b["image"])


@pytest.mark.parametrize("settings,message", [
    (dict(lowres_prob=1.5), r"--lowres_prob must be in \[0, 1\], got 1.5"),
    (dict(lowres_min_scale=0.0), r"--lowres_min_scale must be in \(0, 1\]"),
    (dict(blur_prob=-0.1), r"--blur_prob must be in \[0, 1\]"),
    (dict(blur_max_sigma=0.0), r"--blur_max_sigma must be in \(0, 8\]"),
    (dict(jpeg_prob=2), r"--jpeg_prob must be in \[0, 1\]"),
    (dict(jpeg_min_quality=0), r"--jpeg_min_quality must be an integer in \[1, 95\]"),
    (dict(jpeg_min_quality=30.5), r"--jpeg_min_quality must be an integer"),
    (dict(gamma_range=-1.0), r"--gamma_range must be in \[0, 2\]"),
    (dict(shading_prob=True), r"--shading_prob must be in \[0, 1\]"),
    (dict(shading_strength=1.5), r"--shading_strength must be in \[0, 1\]"),
])
def test_a_bad_setting_fails_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message) as info:
        Degradations(**settings)
    assert "\n" not in str(info.value)


def test_input_config_holds_them_and_refuses_another_type():
    assert InputConfig(32, 4).degradations == Degradations()
    assert InputConfig(32, 4, degradations=ALL_ON).degradations is ALL_ON
    with pytest.raises(ValueError, match="degradations must be a Degradations"):
        InputConfig(32, 4, degradations={"blur_prob": 0.5})


def _flags(records, model_dir, *extra):
    return [f"--train_records={records}", f"--model_dir={model_dir}", "--mode=train",
            "--backbone=tiny", "--image_size=32", "--embedding_size=16", "--batch_size=8",
            "--train_steps=2", "--gamma=32", "--noprogress", *extra]


def test_flags_reach_the_input_config_and_params_json(small_records, tmp_path, parse_flags):
    flags_ = ["--lowres_prob=0.3", "--lowres_min_scale=0.4", "--blur_prob=0.2",
              "--blur_max_sigma=1.5", "--jpeg_prob=0.3", "--jpeg_min_quality=30",
              "--gamma_range=0.4", "--shading_prob=0.3", "--shading_strength=0.6"]
    spec = params_module.build_params(parse_flags(_flags(small_records, tmp_path, *flags_)))
    expected = Degradations(0.3, 0.4, 0.2, 1.5, 0.3, 30, 0.4, 0.3, 0.6)
    assert spec.input.degradations == expected
    assert spec["jpeg_min_quality"] == 30 and spec["shading_prob"] == 0.3
    assert set(Degradations._fields) <= set(spec.section("input"))
    # Written and read back (evaluate/export read params.json).
    path = tmp_path / "params.json"
    path.write_text(json.dumps(spec.to_json_dict()))
    assert RunSpec.from_run_dir(str(tmp_path)).input.degradations == expected


def test_a_bad_flag_fails_in_one_line_before_anything_runs(small_records, tmp_path,
                                                           parse_flags):
    with pytest.raises(ParamsError, match=r"--blur_prob must be in \[0, 1\], got 1.5") as info:
        params_module.build_params(parse_flags(_flags(small_records, tmp_path,
                                                      "--blur_prob=1.5")))
    assert "\n" not in str(info.value)


def test_an_older_params_json_loads_with_them_off():
    assert all(LEGACY_DEFAULTS[name] == getattr(Degradations(), name)
               for name in Degradations._fields)
    assert not Degradations(**{name: LEGACY_DEFAULTS[name]
                               for name in Degradations._fields}).active
