"""Mirror-consistent teacher targets (make_tfrecords.py --teacher_flip): the converter stores the
teacher's vector of the mirrored source image, and the training input targets it exactly for
the images it flips."""

import io

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import app, flags
from PIL import Image

from data_tools import conversion, input_fns, make_tfrecords, preprocessing, schema, teachers
from data_tools import manifest as manifest_lib
from tests import _folder_fixtures as ff

SIZE = 24


class _SidedTeacher(teachers.Teacher):
    """A teacher that tells left from right: the mean of each half's pixels, per channel."""

    name, dim = "sided", 6

    def __init__(self):
        super().__init__()
        self.description = {"kind": "test-sided"}

    def embed(self, data):
        return _sided(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32))


def _sided(rgb):
    half = rgb.shape[1] // 2
    return np.concatenate([rgb[:, :half].mean(axis=(0, 1)),
                           rgb[:, rgb.shape[1] - half:].mean(axis=(0, 1))]).astype(np.float32)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("flip_faces")
    ff.make_face_tree(str(root / "faces"), [3, 2, 4], exts=("jpg", "png"), size=SIZE)
    return root / "faces"


@pytest.fixture(scope="module")
def flipped_records(faces, tmp_path_factory):
    out = tmp_path_factory.mktemp("flip_records") / "out"
    conversion.convert_folder(str(faces), str(out), teacher=_SidedTeacher(), teacher_flip=True,
                              num_workers=1, progress=False, num_shards=2)
    return out


def _columns(directory):
    """``{filename: (pixels, vector, mirrored vector or None)}`` of the records."""
    out = {}
    for path in ff.shard_files(str(directory)):
        for serialized in tf.io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(serialized).features.feature
            name = str(feature[schema.FILENAME].bytes_list.value[0], "utf-8")
            pixels = np.asarray(Image.open(io.BytesIO(
                feature["image/encoded"].bytes_list.value[0])).convert("RGB"))
            flipped = feature[schema.TEACHER_EMBEDDING_FLIPPED].float_list.value \
                if schema.TEACHER_EMBEDDING_FLIPPED in feature else None
            out[name] = (pixels, np.array(feature[schema.TEACHER_EMBEDDING].float_list.value),
                         None if flipped is None else np.array(flipped))
    return out


def test_mirrored_png_is_the_mirror_image(faces):
    for path in sorted(faces.glob("*/*")):
        data = path.read_bytes()
        mirrored = teachers.mirrored_png(data)
        assert mirrored.startswith(b"\x89PNG")
        original = np.asarray(Image.open(io.BytesIO(data)))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(mirrored))),
                                      original[:, ::-1])


def test_the_converter_stores_the_teacher_vector_of_the_mirrored_image(faces, flipped_records):
    columns = _columns(flipped_records)
    assert len(columns) == 9
    for name, (_, vector, flipped) in columns.items():
        rgb = np.asarray(Image.open(str(faces / name)).convert("RGB"), np.float32)
        np.testing.assert_allclose(vector, _sided(rgb), rtol=1e-6)
        np.testing.assert_allclose(flipped, _sided(rgb[:, ::-1]), rtol=1e-6)
        # The sided teacher swaps its halves for the mirror image: really the mirrored input.
        np.testing.assert_allclose(flipped, np.concatenate([vector[3:], vector[:3]]), rtol=1e-5)
    manifest = manifest_lib.read_manifest(str(flipped_records))
    assert manifest["teacher"]["flipped"] is True
    assert manifest["teacher"]["flipped_fallbacks"] == 0
    assert manifest["options"]["teacher_flip"] is True
    manifest_lib.verify_shards(str(flipped_records))
    assert input_fns.records_teacher_flipped(str(flipped_records))


def test_without_teacher_flip_there_is_no_mirrored_column(faces, tmp_path):
    out = tmp_path / "plain"
    conversion.convert_folder(str(faces), str(out), teacher=_SidedTeacher(), num_workers=1,
                              progress=False)
    assert all(flipped is None for _, _, flipped in _columns(out).values())
    assert "flipped" not in manifest_lib.read_manifest(str(out))["teacher"]
    assert not input_fns.records_teacher_flipped(str(out))


def _batches(records, **kwargs):
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(
            str(records), image_size=SIZE, batch_size=9, shuffle_buffer=9, seed=3, **kwargs)
        features, _ = tf.data.make_one_shot_iterator(input_fn()).get_next()
        with tf.Session() as session:
            return [session.run(features) for _ in range(4 if kwargs.get("is_training", True)
                                                         else 1)]


def _pixels(image):
    return np.round(image * preprocessing.PIXEL_SCALE + preprocessing.PIXEL_MEAN)


@pytest.mark.parametrize("random_flip", [True, False])
def test_the_input_targets_the_mirrored_vector_exactly_for_flipped_images(flipped_records,
                                                                          random_flip):
    columns = _columns(flipped_records)
    seen = {"flipped": 0, "kept": 0}
    for batch in _batches(flipped_records, random_flip=random_flip):
        for image, target in zip(batch["image"], batch["teacher_embedding"]):
            matches = [(name, which) for name, (_, vector, flipped) in columns.items()
                       for which, candidate in (("kept", vector), ("flipped", flipped))
                       if np.allclose(target, candidate)]
            assert len(matches) == 1
            name, which = matches[0]
            pixels = columns[name][0]
            want, other = (pixels[:, ::-1], pixels) if which == "flipped" else \
                (pixels, pixels[:, ::-1])
            # TensorFlow's and PIL's JPEG decoders differ by a few levels: the image is the
            # orientation its target says, not the other one.
            error = np.abs(_pixels(image) - want).mean()
            assert error < 2 and error < np.abs(_pixels(image) - other).mean() / 3
            seen[which] += 1
    if random_flip:
        assert seen["flipped"] > 5 and seen["kept"] > 5
    else:
        assert seen["flipped"] == 0


def test_evaluation_input_keeps_the_unflipped_vector(flipped_records):
    columns = _columns(flipped_records)
    (batch,) = _batches(flipped_records, is_training=False)
    vectors = [vector for _, vector, _ in columns.values()]
    for target in batch["teacher_embedding"]:
        assert any(np.allclose(target, vector) for vector in vectors)


def test_teacher_flip_needs_a_teacher_and_image_records(faces, tmp_path):
    with pytest.raises(conversion.ConversionError, match="--teacher_flip needs --teacher"):
        conversion.convert_folder(str(faces), str(tmp_path / "out"), teacher_flip=True,
                                  num_workers=1, progress=False)

    def cli(args):
        flag_values = flags.FlagValues()
        make_tfrecords.define_flags(flag_values)
        flag_values(["make_tfrecords.py", "--output_dir", str(tmp_path / "cli")] + args)
        return make_tfrecords.main(["make_tfrecords.py"], flag_values)

    with pytest.raises(app.UsageError, match="--teacher_flip needs --teacher"):
        cli(["--input_dir", str(faces), "--teacher_flip"])
    with pytest.raises(app.UsageError, match="--teacher_flip applies to image records"):
        cli(["--input_dir", str(faces), "--pairs", str(tmp_path / "pairs.txt"),
             "--teacher=dlib", "--teacher_flip"])
