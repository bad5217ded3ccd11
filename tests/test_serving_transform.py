"""The converter's crop/resize, shared with the serving side (issue 12, item 1).

One crop/resize implementation (image_files.transform_image) serves the converter and
export.embed; the manifest records it; the serving graph's own resize follows it as closely as
TensorFlow allows (antialiased Lanczos-3), and with a static size it holds no conditional.
"""

import io
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from data_tools import conversion, image_files, manifest, preprocessing, synthetic_faces
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
                                    "resampling": "lanczos"}
    assert manifest.conversion_transform(cropped) == cropped["transform"]
    as_is = manifest.read_manifest(str(tmp_path / "as_is"))
    assert as_is["transform"] == {"crop_box": None, "image_size": None, "resampling": None}
    # Manifests written before the key: the options say the same; other tools' say nothing.
    del cropped["transform"]
    assert manifest.conversion_transform(cropped) == {
        "crop_box": [4, 2, 36, 26], "image_size": 16, "resampling": "lanczos"}
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
                                             "resampling": "lanczos"}


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
    _, types = run(lambda b: preprocessing.resize(b, 64), frame, static=True)
    assert not types & CONTROL_FLOW
