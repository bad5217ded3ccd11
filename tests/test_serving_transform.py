"""The converter's crop/resize, shared with the serving side (issue 12, item 1).

One crop/resize implementation (image_files.transform_image) serves the converter and
export.embed; the manifest records it.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from data_tools import image_files, make_tfrecords, manifest, synthetic
from tests import _folder_fixtures as ff

CROP = (70, 60, 180, 190)  # the LFW-a face region: 110 x 130
def face_frame(index, size=250):
    """A synthetic face rendered at ``size`` (grayscale like LFW-a), as uint8 [H, W]."""
    image, _ = synthetic.render_image(0, "train", index, 0, image_size=size)
    return np.asarray(image.convert("L"))


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_transformed_png_is_the_record_the_converter_writes(tmp_path):
    frames = {}
    for i in range(3):
        relpath = "id%d/id%d_0001.jpg" % (i, i)
        os.makedirs(str(tmp_path / "in" / ("id%d" % i)))
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
    make_tfrecords.convert_pairs(str(pairs), str(tmp_path / "in"), str(tmp_path / "out"),
                                 crop_box="4,2,36,26", image_size=16, num_workers=1,
                                 progress=False)
    with open(str(tmp_path / "out" / "manifest.json")) as f:
        assert json.load(f)["transform"] == {"crop_box": [4, 2, 36, 26], "image_size": 16,
                                             "resampling": "lanczos"}
