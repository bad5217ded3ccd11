"""The converter's crop/resize, shared with the serving side (issue 12, item 1).

One crop/resize implementation (image_files.transform_image) serves the converter and
export.embed; the manifest records it; the serving graph's own resize follows it as closely as
TensorFlow allows (antialiased Lanczos-3), and with a static size it holds no conditional.
"""

import functools
import io
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from data_tools import conversion, image_files, manifest, preprocessing
from data_tools.synthetic import faces as synthetic_faces
from tests import _folder_fixtures as ff

CROP = (70, 60, 180, 190)  # the LFW-a face region: 110 x 130
CONTROL_FLOW = {"If", "StatelessIf", "While", "StatelessWhile", "Switch", "Merge", "Enter",
                "Exit", "NextIteration", "PyFunc", "PyFuncStateless", "EagerPyFunc"}


def face_frame(index, size=250):
    """A synthetic face rendered at ``size`` (grayscale like LFW-a), as uint8 [H, W]."""
    image, _ = synthetic_faces.render_image(0, "train", index, 0, image_size=size)
    return np.asarray(image.convert("L"))


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def run(fn, pixels, static):
    """``fn(batch)`` on a float batch fed through a placeholder with a static or open size."""
    batch = np.asarray(pixels, np.float32)
    if batch.ndim == 2:
        batch = np.repeat(batch[None, :, :, None], 3, axis=3)
    shape = list(batch.shape) if static else [None, None, None, 3]
    with tf.Graph().as_default() as graph, tf.Session() as sess:
        placeholder = tf.placeholder(tf.float32, shape)
        out = fn(placeholder)
        types = {op.type for op in graph.get_operations()}
        return sess.run(out, {placeholder: batch}), types


def test_transformed_png_is_the_record_the_converter_writes(tmp_path):
    frames = {}
    for i in range(3):
        relpath = f"id{i}/id{i}_0001.jpg"
        os.makedirs(str(tmp_path / "in" / f"id{i}"))
        Image.fromarray(face_frame(i)).save(str(tmp_path / "in" / relpath), quality=90)
        frames[relpath] = (tmp_path / "in" / relpath).read_bytes()
    ff.convert_quietly(tmp_path / "in", tmp_path / "out", crop_box="70,60,180,190",
                       image_size=112)
    records = ff.read_records(ff.shard_files(tmp_path / "out"), with_pixels=False)
    assert len(records) == 3
    for record in records:
        assert record["format"] == b"png"
        path = record["filename"].decode()
        assert image_files.transformed_png(frames[path], 112, CROP) == record["encoded"]


def test_transform_image_crops_then_centre_squares_then_resizes():
    frame = Image.fromarray(face_frame(0))
    cropped = image_files.transform_image(frame, None, CROP)
    assert cropped.size == (110, 130)
    np.testing.assert_array_equal(np.asarray(cropped), np.asarray(frame)[60:190, 70:180])
    squared = image_files.transform_image(frame, 110, CROP)  # 130 rows lose 10 at the top
    np.testing.assert_array_equal(np.asarray(squared), np.asarray(frame)[70:180, 70:180])
    assert image_files.transform_image(frame, 112, CROP).size == (112, 112)
    with pytest.raises(image_files.ImageError, match="outside"):
        image_files.transform_image(frame, 112, (0, 0, 251, 10))


def test_manifest_records_the_conversion_transform(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [2, 2], size=40)
    ff.convert_quietly(tmp_path / "in", tmp_path / "cropped", crop_box="4,2,36,26",
                       image_size=16)
    ff.convert_quietly(tmp_path / "in", tmp_path / "as_is")
    cropped = manifest.read_manifest(str(tmp_path / "cropped"))
    assert cropped["transform"] == {"crop_box": [4, 2, 36, 26], "image_size": 16,
                                    "resampling": "lanczos", "record_shape": [16, 16]}
    assert manifest.conversion_transform(cropped) == cropped["transform"]
    as_is = manifest.read_manifest(str(tmp_path / "as_is"))
    assert as_is["transform"] == {"crop_box": None, "image_size": None, "resampling": None,
                                  "record_shape": [40, 40]}
    ff.convert_quietly(tmp_path / "in", tmp_path / "crop_only", crop_box="4,2,36,26")
    assert manifest.read_manifest(str(tmp_path / "crop_only"))["transform"]["record_shape"] == [
        24, 32]
    # Manifests written before the key: the options say the same; other tools' say nothing.
    del cropped["transform"]
    assert manifest.conversion_transform(cropped) == {
        "crop_box": [4, 2, 36, 26], "image_size": 16, "resampling": "lanczos",
        "record_shape": [16, 16]}
    assert manifest.conversion_transform({"kind": "pairs", "shards": []}) is None


def test_pairs_manifest_records_the_conversion_transform(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [2, 2], size=40)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t1\nPerson_A\t1\t2\nPerson_A\t1\tPerson_B\t1\n")
    conversion.convert_pairs(str(pairs), str(tmp_path / "in"), str(tmp_path / "out"),
                                 crop_box="4,2,36,26", image_size=16, num_workers=1,
                                 progress=False)
    with open(str(tmp_path / "out" / "manifest.json")) as f:
        assert json.load(f)["transform"] == {"crop_box": [4, 2, 36, 26], "image_size": 16,
                                             "resampling": "lanczos", "record_shape": [16, 16]}


def smooth_frame(height, width, seed=0):
    """A smooth RGB frame (sums of low-frequency sines), uint8."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width] / float(max(height, width))
    channels = [sum(np.sin(2 * np.pi * (rng.uniform(2, 12) * x + rng.uniform(2, 12) * y)
                           + rng.uniform(0, 6)) for _ in range(3)) for _ in range(3)]
    return np.clip(np.round(127.5 + 40 * np.stack(channels, -1)), 0, 255).astype(np.uint8)


def serving_and_evaluation_pixels(transform, blobs, image_size):
    """(network input of the serving graph fed ``blobs`` as image_bytes, the evaluation
    input's normalised pixels of the same bytes, the serving graph fed the decoded pixels)."""
    from export import serving  # noqa: PLC0415 - export is the serving side

    with tf.Graph().as_default(), tf.Session() as sess:
        receiver = serving.serving_input_receiver_fn_builder(image_size, transform)()
        model_input = receiver.features["image"]
        by_bytes = sess.run(model_input, {receiver.receiver_tensors["image_bytes"]: blobs})
        evaluation = sess.run([preprocessing.preprocess_for_eval(tf.constant(b), image_size)
                               for b in blobs])
        pixels = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.float32)
                  for b in blobs]
        pixels_input = receiver.receiver_tensors_alternatives["pixels"]["pixels"]
        by_pixels = [sess.run(model_input, {pixels_input: p[None]})[0] for p in pixels]
    return by_bytes, np.stack(evaluation), by_pixels


def test_serving_equals_evaluation_for_records_kept_at_their_own_size(tmp_path):
    """Records written without --image_size (250 x 250 frames, as LFW's): the manifest records
    their shape, and the serving graph gives an input of that size exactly the evaluation's
    pixels (its bilinear resize), by bytes and by pixels. Before issue 26 it resized it with
    Lanczos: 0.36 grey levels apart on average, 1.7 at most on these smooth frames."""
    os.makedirs(str(tmp_path / "in" / "Person_A"))
    frames = [smooth_frame(250, 250, seed) for seed in range(2)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(str(tmp_path / "in" / "Person_A" / f"{i}.png"))
    ff.convert_quietly(tmp_path / "in", tmp_path / "out")
    transform = manifest.conversion_transform(manifest.read_manifest(str(tmp_path / "out")))
    assert transform["record_shape"] == [250, 250] and transform["image_size"] is None
    blobs = [r["encoded"] for r in ff.read_records(ff.shard_files(tmp_path / "out"),
                                                   with_pixels=False)]
    by_bytes, evaluation, by_pixels = serving_and_evaluation_pixels(transform, blobs, 112)
    levels = np.abs(by_bytes - evaluation) * preprocessing.PIXEL_SCALE
    assert levels.max() < 1e-3, (levels.mean(), levels.max())
    np.testing.assert_allclose(np.stack(by_pixels), evaluation, atol=1e-5)


def test_serving_follows_evaluation_for_records_of_mixed_sizes(tmp_path):
    """Records kept at their own, differing sizes (no record_shape): every input gets the
    evaluation's resize, whatever its size; an input of another size than the records' shape,
    when there is one, is brought to it with Lanczos first (a 2x frame: near the record)."""
    frames = [smooth_frame(48, 48, 1), smooth_frame(40, 56, 2)]
    blobs = [png(frame) for frame in frames]
    transform = {"crop_box": None, "image_size": None, "resampling": None, "record_shape": None}
    by_bytes, evaluation, by_pixels = serving_and_evaluation_pixels(transform, blobs, 32)
    assert np.abs(by_bytes - evaluation).max() * preprocessing.PIXEL_SCALE < 1e-3
    np.testing.assert_allclose(np.stack(by_pixels), evaluation, atol=1e-5)
    # An older manifest without record_shape reads the same.
    del transform["record_shape"]
    assert np.abs(serving_and_evaluation_pixels(transform, blobs, 32)[0]
                  - evaluation).max() * preprocessing.PIXEL_SCALE < 1e-3
    record = smooth_frame(48, 48, 3)
    big = np.asarray(Image.fromarray(record).resize((96, 96), Image.BICUBIC))
    shaped = {"crop_box": None, "image_size": None, "resampling": None, "record_shape": [48, 48]}
    served, evaluated, _ = serving_and_evaluation_pixels(shaped, [png(big), png(record)], 32)
    np.testing.assert_allclose(served[1], evaluated[1], atol=1e-5)
    assert np.abs(served[0] - evaluated[1]).mean() * preprocessing.PIXEL_SCALE < 1.0


@pytest.mark.parametrize("static", [True, False])
def test_in_graph_resize_follows_the_converter(static):
    """Frame and crop in, the converter's 112 x 112 record out, to a fraction of a grey level;
    TensorFlow's plain bilinear resize is several times further away."""
    errors, bilinear = [], []
    for i in range(4):
        frame = face_frame(i)
        crop = frame[CROP[1]:CROP[3], CROP[0]:CROP[2]]
        record = np.asarray(image_files.transform_image(Image.fromarray(frame), 112, CROP),
                            np.float32)
        out, _ = run(lambda b: preprocessing.resize_like_converter(b, 112), crop, static)
        assert out.shape == (1, 112, 112, 3)
        np.testing.assert_array_equal(out[0, :, :, 0], out[0, :, :, 2])
        np.testing.assert_array_equal(out, np.round(out))
        errors.append(np.abs(out[0, :, :, 0] - record))
        square = crop[10:120].astype(np.float32)
        plain, _ = run(lambda b: tf.image.resize_bilinear(b, [112, 112],
                                                          half_pixel_centers=True),
                       square, static)
        bilinear.append(np.abs(plain[0, :, :, 0] - record).mean())
    errors = np.stack(errors)
    assert errors.mean() < 0.3, errors.mean()
    assert np.percentile(errors, 99) <= 2
    assert np.mean(bilinear) > 2 * errors.mean()


@pytest.mark.parametrize("static", [True, False])
def test_in_graph_downscale_is_antialiased(static):
    """A full frame straight to 64 x 64: PIL's Lanczos within a grey level; bilinear aliases."""
    frame = face_frame(5)
    expected = np.asarray(Image.fromarray(frame).resize((64, 64), Image.LANCZOS), np.float32)
    out, _ = run(lambda b: preprocessing.serving_resize(b, 64), frame, static)
    assert np.abs(out[0, :, :, 0] - expected).mean() < 0.5


@pytest.mark.parametrize("static", [True, False])
def test_inputs_at_the_record_size_pass_through(static):
    record = face_frame(3, size=112)
    out, _ = run(lambda b: preprocessing.resize_like_converter(b, 112), record, static)
    np.testing.assert_array_equal(out[0, :, :, 0], record)
    pixels, _ = run(lambda b: preprocessing.preprocess_pixels(b, 64, record_size=112), record,
                    static)
    evaluated, _ = run(lambda b: preprocessing.normalize(preprocessing.resize(b, 64)), record,
                       static)
    np.testing.assert_array_equal(pixels, evaluated)


@pytest.mark.parametrize("size", [112, 250])
@pytest.mark.parametrize("record_size", [112, None])
def test_static_size_builds_no_conditional(size, record_size):
    frame = face_frame(1, size=size)
    _, types = run(lambda b: preprocessing.preprocess_pixels(b, 64, record_size=record_size),
                   frame, static=True)
    assert not types & CONTROL_FLOW
    for shape in (None, [250, 250]):
        _, types = run(functools.partial(preprocessing.preprocess_pixels, image_size=64,
                                         kept_size=True, record_shape=shape), frame, static=True)
        assert not types & CONTROL_FLOW
    _, types = run(lambda b: preprocessing.resize(b, 64), frame, static=True)
    assert not types & CONTROL_FLOW


def test_frozen_input_size_is_the_records_size():
    """The frozen graph's static input (training/runner.py) is the records' size, so that it
    holds the evaluation's own path: the square --image_size, or the shape records kept."""
    from export import serving  # noqa: PLC0415

    kept = {"crop_box": None, "image_size": None, "resampling": None}
    assert serving.frozen_input_size(dict(kept, record_shape=[250, 250]), 112) == 250
    assert serving.frozen_input_size(dict(kept, record_shape=[250, 200]), 112) == 112
    assert serving.frozen_input_size(dict(kept, record_shape=None), 112) == 112
    assert serving.frozen_input_size({"crop_box": None, "image_size": 96,
                                      "resampling": "lanczos"}, 112) == 96
    assert serving.frozen_input_size(None, 112) == 112
