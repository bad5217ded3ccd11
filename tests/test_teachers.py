"""Teacher embeddings in the records (make_tfrecords.py --teacher): each SPEC kind against an
independent reference, the converter's teacher column round trip (folder, pairs, .rec, the
input_fn), skips, resume after a kill, and the CLI."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from data_tools import conversion, input_fns, make_tfrecords, schema, teachers
from data_tools import manifest as manifest_lib
from data_tools.insightface import convert as insightface
from data_tools.insightface import recordio
from tests import _folder_fixtures as ff
from tests import tiny_model

ONNX_SIZE, ONNX_DIM = 16, 8


def _onnx_model(path, weights, size=ONNX_SIZE, layout="nchw", first_nodes=None):
    """A tiny ONNX embedding model: flatten the input (NCHW or NHWC) and project."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    shape = [1, 3, size, size] if layout == "nchw" else [1, size, size, 3]
    nodes, inputs = [], "data"
    if first_nodes:  # mxnet-style graphs normalise inside: Sub then Mul
        nodes += [helper.make_node("Sub", ["data", "mean"], ["centred"], name="_minus0"),
                  helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mul0")]
        inputs = "scaled"
    nodes += [helper.make_node("Flatten", [inputs], ["flat"], axis=1, name="flatten"),
              helper.make_node("MatMul", ["flat", "weights"], ["embedding"], name="project")]
    initializers = [numpy_helper.from_array(weights.astype(np.float32), "weights")]
    if first_nodes:
        initializers += [numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
                         numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale")]
    graph = helper.make_graph(
        nodes, "tiny_embedder",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, weights.shape[1]])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _weights(seed=0, size=ONNX_SIZE, dim=ONNX_DIM):
    return np.random.RandomState(seed).randn(size * size * 3, dim).astype(np.float32) / 100


def _onnx_reference(path, weights, size=ONNX_SIZE, layout="nchw", bgr=False, mean=127.5,
                    std=127.5):
    """insightface's get_feat, transcribed: bilinear resize, channel order, (x - mean) / std,
    layout, then the model's projection in float64."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR),
                     np.float64)
    if bgr:
        rgb = rgb[:, :, ::-1]
    x = (rgb - mean) / std
    if layout == "nchw":
        x = x.transpose(2, 0, 1)
    return x.reshape(-1) @ weights.astype(np.float64)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher_faces")
    ff.make_face_tree(str(root / "faces"), [3, 2, 4], exts=("jpg", "png"), size=24)
    return root / "faces"


def _relpaths(root):
    return sorted(os.path.relpath(os.path.join(d, f), str(root)).replace(os.sep, "/")
                  for d, _, files in os.walk(str(root)) for f in files)


def _teacher_column(directory, kind="images"):
    """``{filename: vector}`` of the records (both images of each pair record)."""
    out = {}
    for path in ff.shard_files(directory):
        for serialized in tf.io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(serialized).features.feature
            prefixes = ["image/"] if kind == "images" else list(schema.PAIR_PREFIXES)
            for prefix in prefixes:
                name = str(feature[prefix + "filename"].bytes_list.value[0], "utf-8")
                key = schema.TEACHER_EMBEDDING if kind == "images" else \
                    prefix + schema.TEACHER_EMBEDDING
                out[name] = np.array(feature[key].float_list.value, np.float32)
    return out


# ------------------------------------------------------------------ the SPEC kinds


@pytest.mark.parametrize("layout,channels", [("nchw", "rgb"), ("nhwc", "bgr")])
def test_onnx_teacher_matches_insightface_preprocessing(tmp_path, faces, layout, channels):
    pytest.importorskip("onnxruntime")
    weights = _weights()
    model = _onnx_model(tmp_path / "tiny.onnx", weights, layout=layout)
    teacher = teachers.load_teacher(f"onnx:{model}", channels=channels)
    assert teacher.dim == ONNX_DIM and teacher.description["layout"] == layout
    assert (teacher.description["mean"], teacher.description["std"]) == (127.5, 127.5)
    for relpath in _relpaths(faces):
        with open(str(faces / relpath), "rb") as f:
            got = teacher.embed(f.read())
        want = _onnx_reference(str(faces / relpath), weights, layout=layout,
                               bgr=channels == "bgr")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_onnx_normalisation_default_follows_insightface(tmp_path):
    pytest.importorskip("onnxruntime")
    weights = _weights()
    plain = teachers.load_teacher(f"onnx:{_onnx_model(tmp_path / 'a.onnx', weights)}")
    mxnet = teachers.load_teacher(
        f"onnx:{_onnx_model(tmp_path / 'b.onnx', weights, first_nodes=True)}")
    assert (mxnet.description["mean"], mxnet.description["std"]) == (0.0, 1.0)
    # The graph's own Sub/Mul does what the default preprocessing does for the plain one.
    image = np.random.RandomState(1).randint(0, 256, (ONNX_SIZE, ONNX_SIZE, 3)).astype(np.uint8)
    path = str(tmp_path / "x.png")
    Image.fromarray(image).save(path)
    with open(path, "rb") as f:
        data = f.read()
    np.testing.assert_allclose(plain.embed(data), mxnet.embed(data), rtol=1e-4, atol=1e-6)
    explicit = teachers.load_teacher(f"onnx:{tmp_path / 'a.onnx'}", mean=0.0, std=1.0)
    np.testing.assert_allclose(explicit.embed(data), _onnx_reference(
        path, weights, mean=0.0, std=1.0), rtol=1e-4, atol=1e-4)


def test_saved_model_teacher_is_the_model_with_its_transform(tmp_path):
    weights = tiny_model.projection()
    export_dir = tiny_model.build_saved_model(str(tmp_path / "base" / "1700000000"), weights)
    reference = tiny_model.Reference(weights)
    image = np.random.RandomState(3).randint(0, 256, (20, 20, 3)).astype(np.uint8)
    path = str(tmp_path / "face.png")
    Image.fromarray(image).save(path)
    with open(path, "rb") as f:
        data = f.read()
    # An exporter's base directory: its newest export; without a transform the serving graph
    # resizes the whole 20x20 image itself (checked against the embedder of export/).
    teacher = teachers.load_teacher(f"saved_model:{tmp_path / 'base'}")
    try:
        assert teacher.dim == tiny_model.DIM and teacher.description["path"] == export_dir
        got = teacher.embed(data)
    finally:
        teacher.close()
    from export import embedder  # noqa: PLC0415 - the test may cross layers

    with embedder.load_saved_model(export_dir) as model:
        np.testing.assert_allclose(got, model.embed_bytes([data])[0], atol=1e-6)
    # With the conversion transform it was exported with: crop, then Lanczos to the model's
    # side, as PIL does it.
    os.makedirs(os.path.join(export_dir, "assets.extra"))
    with open(os.path.join(export_dir, "assets.extra", "transform.json"), "w") as f:
        json.dump({"crop_box": [2, 4, 18, 20], "image_size": tiny_model.SIZE,
                   "resampling": "lanczos"}, f)
    teacher = teachers.load_teacher(f"saved_model:{export_dir}")
    try:
        got = teacher.embed(data)
    finally:
        teacher.close()
    cropped = Image.fromarray(image).crop((2, 4, 18, 20)).resize(
        (tiny_model.SIZE, tiny_model.SIZE), Image.LANCZOS)
    np.testing.assert_allclose(got, reference(np.asarray(cropped), flip=False), atol=1e-5)


def test_dlib_teacher_detects_a_real_face_and_falls_back_on_a_frame_without_one(tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    skimage = pytest.importorskip("skimage")
    teacher = teachers.load_teacher("dlib")
    assert teacher.dim == 128
    photo = os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png")
    with open(photo, "rb") as f:
        face = teacher.embed(f.read())
    assert not teacher.fell_back and face.shape == (128,)
    # dlib's own one-call route (compute_face_descriptor(img, shape) chips internally with the
    # same 150 px / 0.25 padding) is the reference.
    import dlib  # noqa: PLC0415

    rgb = np.asarray(Image.open(photo).convert("RGB"))
    shape = teacher._predictor(rgb, teacher.face_box(rgb))  # noqa: SLF001
    want = np.asarray(teacher._recognizer.compute_face_descriptor(rgb, shape), np.float32)  # noqa: SLF001
    np.testing.assert_allclose(face, want, atol=1e-4)
    del dlib
    noise = np.random.RandomState(0).randint(0, 256, (80, 80, 3)).astype(np.uint8)
    path = str(tmp_path / "noise.png")
    Image.fromarray(noise).save(path)
    with open(path, "rb") as f:
        vector = teacher.embed(f.read())
    assert teacher.fell_back and vector.shape == (128,) and np.all(np.isfinite(vector))

    # Through the converter, in its forked workers: the same vectors, the fallback counted.
    os.makedirs(str(tmp_path / "faces" / "a"))
    os.makedirs(str(tmp_path / "faces" / "b"))
    Image.open(photo).convert("RGB").save(str(tmp_path / "faces" / "a" / "astronaut.png"))
    Image.fromarray(noise).save(str(tmp_path / "faces" / "b" / "noise.png"))
    summary = conversion.convert_folder(str(tmp_path / "faces"), str(tmp_path / "out"),
                                        num_workers=2, progress=False, teacher=teacher)
    assert summary["teacher"]["fallbacks"] == 1
    assert summary["teacher"]["fallback_files"] == ["b/noise.png"]
    column = _teacher_column(str(tmp_path / "out"))
    np.testing.assert_allclose(column["a/astronaut.png"], face, atol=1e-6)
    np.testing.assert_allclose(column["b/noise.png"], vector, atol=1e-6)


@pytest.mark.parametrize("spec,needle", [
    ("resnet", "must be saved_model:DIR, onnx:FILE or dlib"),
    ("onnx:", "needs a path"),
    ("onnx:/nonexistent.onnx", "no such file"),
    ("dlib:x", "takes no path"),
])
def test_bad_spec_is_one_line(spec, needle):
    with pytest.raises(teachers.TeacherError, match=needle):
        teachers.load_teacher(spec)


# ------------------------------------------------------------------ the converter


class _CountingTeacher(teachers.Teacher):
    """A deterministic teacher (mean colour and a hash-free projection of the pixels) that
    counts its calls, fails on chosen files and can stop the run after N images."""

    name, dim = "counting", 4

    def __init__(self, fail_on_bytes=(), stop_after=None):
        super().__init__()
        self.description = {"kind": "test"}
        self.calls = 0
        self.fail_on_bytes = set(fail_on_bytes)
        self.stop_after = stop_after

    def embed(self, data):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        if data in self.fail_on_bytes:
            raise RuntimeError("no output for this image")
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
        return np.array([rgb[..., 0].mean(), rgb[..., 1].mean(), rgb[..., 2].mean(),
                         rgb.std()], np.float32)


def _convert(faces, out, teacher, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    return conversion.convert_folder(str(faces), str(out), teacher=teacher, **kwargs)


def test_folder_teacher_column_round_trips_through_converter_and_input_fn(tmp_path, faces):
    pytest.importorskip("onnxruntime")
    weights = _weights()
    teacher = teachers.load_teacher(f"onnx:{_onnx_model(tmp_path / 't.onnx', weights)}")
    summary = _convert(faces, tmp_path / "out", teacher, num_shards=2)
    assert summary["num_images"] == 9 and summary["teacher"]["dim"] == ONNX_DIM
    manifest = manifest_lib.read_manifest(str(tmp_path / "out"))
    assert manifest["teacher"]["name"] == "onnx:t.onnx" and manifest["teacher"]["dim"] == 8
    assert manifest["options"]["teacher"]["spec"]["sha256"]
    column = _teacher_column(str(tmp_path / "out"))
    assert sorted(column) == _relpaths(faces)
    for relpath, vector in column.items():
        np.testing.assert_allclose(vector, _onnx_reference(str(faces / relpath), weights),
                                   rtol=1e-4, atol=1e-5)
    manifest_lib.verify_shards(str(tmp_path / "out"))

    # The input_fn finds the column through the manifest and keeps it with its image.
    assert input_fns.records_teacher_dim(str(tmp_path / "out")) == ONNX_DIM
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(
            str(tmp_path / "out"), image_size=24, is_training=False, batch_size=9,
            random_flip=False)
        features, labels = tf.data.make_one_shot_iterator(input_fn()).get_next()
        assert features["teacher_embedding"].shape.as_list() == [9, ONNX_DIM]
        with tf.Session() as session:
            got, images = session.run([features["teacher_embedding"], features["image"]])
    want = np.array([column[r] for r in _record_order(str(tmp_path / "out"))])
    np.testing.assert_array_equal(got, want)
    assert images.shape == (9, 24, 24, 3)


def _record_order(directory):
    names = []
    for path in ff.shard_files(directory):
        for serialized in tf.io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(serialized).features.feature
            names.append(str(feature[schema.FILENAME].bytes_list.value[0], "utf-8"))
    return names


def test_records_without_teacher_give_no_teacher_feature(tmp_path, faces):
    conversion.convert_folder(str(faces), str(tmp_path / "out"), num_workers=1, progress=False)
    assert input_fns.records_teacher_dim(str(tmp_path / "out")) == 0
    with tf.Graph().as_default():
        dataset = input_fns.train_input_fn_builder(str(tmp_path / "out"), image_size=24,
                                                   is_training=False, batch_size=3)()
        assert set(tf.data.get_output_types(dataset)[0]) == {"image"}


def test_teacher_failure_skips_the_image_with_the_reason(tmp_path, faces):
    bad = "Person_B/Person_B_0001.jpg"
    with open(str(faces / bad), "rb") as f:
        teacher = _CountingTeacher(fail_on_bytes=[f.read()])
    summary = _convert(faces, tmp_path / "out", teacher)
    assert summary["num_images"] == 8
    assert summary["skipped"] == [{"path": bad, "reason": "teacher failed: RuntimeError: no "
                                   "output for this image"}]
    assert bad not in _teacher_column(str(tmp_path / "out"))
    with pytest.raises(conversion.ConversionError, match="--strict"):
        _convert(faces, tmp_path / "strict", _CountingTeacher(fail_on_bytes=teacher.fail_on_bytes),
                 strict=True)


def test_killed_teacher_pass_resumes_without_embedding_twice(tmp_path, faces):
    whole = _CountingTeacher()
    _convert(faces, tmp_path / "whole", whole, num_shards=3)
    assert whole.calls == 9
    killed = _CountingTeacher(stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        _convert(faces, tmp_path / "out", killed, num_shards=3)
    # A kill mid-line leaves a partial last line: it is dropped, never misread.
    cache = [f for f in os.listdir(str(tmp_path / "out")) if f.startswith(".teacher-")]
    assert len(cache) == 1
    with open(str(tmp_path / "out" / cache[0]), "ab") as f:
        f.write(b'{"sha256": "abc", "embed')
    resumed = _CountingTeacher()
    _convert(faces, tmp_path / "out", resumed, num_shards=3)
    assert resumed.calls == 4
    assert ff.read_dir_bytes(str(tmp_path / "out")) == ff.read_dir_bytes(str(tmp_path / "whole"))
    # Finished: a re-run keeps every shard and embeds nothing.
    again = _CountingTeacher()
    summary = _convert(faces, tmp_path / "out", again, num_shards=3)
    assert again.calls == 0 and summary["shards_kept"] == 3


class _ForkSafeTeacher(_CountingTeacher):
    fork_safe = True


def test_fork_safe_teacher_runs_in_the_worker_pool_with_the_same_output(tmp_path, faces):
    bad = "Person_C/Person_C_0002.jpg"
    with open(str(faces / bad), "rb") as f:
        failing = [f.read()]
    _convert(faces, tmp_path / "one", _ForkSafeTeacher(fail_on_bytes=failing), num_workers=1,
             num_shards=2)
    parent = _ForkSafeTeacher(fail_on_bytes=failing)
    summary = _convert(faces, tmp_path / "two", parent, num_workers=2, num_shards=2)
    assert parent.calls == 0  # every image was embedded by a worker
    assert [item["path"] for item in summary["skipped"]] == [bad]
    assert ff.read_dir_bytes(str(tmp_path / "two")) == ff.read_dir_bytes(str(tmp_path / "one"))


def test_another_teacher_is_another_conversion(tmp_path, faces):
    _convert(faces, tmp_path / "out", _CountingTeacher())
    other = _CountingTeacher()
    other.description = {"kind": "test", "version": 2}
    with pytest.raises(conversion.ConversionError, match="other options"):
        _convert(faces, tmp_path / "out", other)
    with pytest.raises(conversion.ConversionError, match="other options"):
        conversion.convert_folder(str(faces), str(tmp_path / "out"), num_workers=1,
                                  progress=False)


def test_pairs_records_carry_both_teacher_vectors(tmp_path, faces):
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("1\t2\nPerson_A\t1\t2\nPerson_C\t3\t4\n"
                          "Person_A\t1\tPerson_B\t2\nPerson_B\t1\tPerson_C\t1\n")
    teacher = _CountingTeacher()
    conversion.convert_pairs(str(pairs_file), str(faces), str(tmp_path / "pairs"),
                             num_workers=1, progress=False, teacher=teacher)
    assert teacher.calls == 7  # distinct images, each embedded once
    column = _teacher_column(str(tmp_path / "pairs"), kind="pairs")
    assert len(column) == 7
    reference = _CountingTeacher()
    for relpath, vector in column.items():
        with open(str(faces / relpath), "rb") as f:
            np.testing.assert_array_equal(vector, reference.embed(f.read()))
    with tf.Graph().as_default():
        dataset = tf.data.TFRecordDataset(ff.shard_files(str(tmp_path / "pairs"))).map(
            lambda s: schema.parse_pair_record(s, teacher_dim=4))
        record = tf.data.make_one_shot_iterator(dataset).get_next()
        with tf.Session() as session:
            first = session.run(record)
    name = str(first["image1"]["filename"], "utf-8")
    np.testing.assert_array_equal(first["image1"]["teacher_embedding"], column[name])


def test_rec_records_carry_the_teacher_vector(tmp_path, faces):
    images = []
    for n, relpath in enumerate(_relpaths(faces)):
        with open(str(faces / relpath), "rb") as f:
            images.append((n % 3, f.read()))
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    recordio.write_dataset(str(rec_dir), images, image_shape=(24, 24))
    teacher = _CountingTeacher(fail_on_bytes=[images[4][1]])
    summary = insightface.convert_rec(str(rec_dir), str(tmp_path / "out"), num_workers=1,
                                      progress=False, teacher=teacher)
    assert summary["num_images"] == 8 and summary["teacher"]["name"] == "counting"
    assert "teacher failed" in summary["skipped"][0]["reason"]
    reference = _CountingTeacher()
    by_bytes = {}
    for path in ff.shard_files(str(tmp_path / "out")):
        for serialized in tf.io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(serialized).features.feature
            by_bytes[feature[schema.ENCODED].bytes_list.value[0]] = np.array(
                feature[schema.TEACHER_EMBEDDING].float_list.value, np.float32)
    assert len(by_bytes) == 8
    for data, vector in by_bytes.items():
        np.testing.assert_array_equal(vector, reference.embed(data))


def test_bin_pair_records_carry_the_teacher_vectors(tmp_path):
    from data_tools.insightface import bin_format as insightface_bin  # noqa: PLC0415

    ff.make_face_tree(str(tmp_path / "faces"), [2] * 10, size=24)
    blobs = []
    for relpath in _relpaths(tmp_path / "faces"):
        with open(str(tmp_path / "faces" / relpath), "rb") as f:
            blobs.append(f.read())
    path = tmp_path / "set.bin"
    insightface_bin.write_bin(str(path), blobs, [i % 2 == 0 for i in range(10)])
    failing = _CountingTeacher(fail_on_bytes=[blobs[3]])
    with pytest.raises(conversion.ConversionError, match="set.bin#3: teacher failed"):
        insightface.convert_bin(str(path), str(tmp_path / "strict"), num_workers=1,
                                progress=False, teacher=failing)
    summary = insightface.convert_bin(str(path), str(tmp_path / "out"), num_workers=1,
                                      progress=False, teacher=_CountingTeacher(
                                          fail_on_bytes=[blobs[3]]), allow_missing_pairs=True)
    assert summary["num_pairs"] == 9 and summary["teacher"]["dim"] == 4
    column = _teacher_column(str(tmp_path / "out"), kind="pairs")
    assert sorted(column) == sorted(f"set.bin#{i}" for i in range(20) if i not in (2, 3))
    reference = _CountingTeacher()
    for name, vector in column.items():
        np.testing.assert_array_equal(vector, reference.embed(blobs[int(name.split("#")[1])]))


def test_cli_with_an_onnx_teacher(tmp_path, faces, capsys):
    pytest.importorskip("onnxruntime")
    model = _onnx_model(tmp_path / "t.onnx", _weights())
    flag_values = _flags(["--input_dir", str(faces), "--output_dir", str(tmp_path / "out"),
                          f"--teacher=onnx:{model}", "--teacher_channels=bgr",
                          "--num_workers=1"])
    assert make_tfrecords.main(["make_tfrecords.py"], flag_values) == 0
    assert "teacher onnx:t.onnx (8-d)" in capsys.readouterr().out
    with open(str(tmp_path / "out" / "manifest.json")) as f:
        assert json.load(f)["options"]["teacher"]["spec"]["channels"] == "bgr"
    bad = _flags(["--input_dir", str(faces), "--output_dir", str(tmp_path / "bad"),
                  "--teacher=onnx:/missing.onnx"])
    assert make_tfrecords.main(["make_tfrecords.py"], bad) == 1
    assert "no such file" in capsys.readouterr().err


def _flags(args):
    from absl import flags  # noqa: PLC0415

    flag_values = flags.FlagValues()
    make_tfrecords.define_flags(flag_values)
    flag_values(["make_tfrecords.py"] + args)
    return flag_values


def test_cli_align_gives_the_teacher_the_raw_photo(tmp_path, faces):
    """With --align the records hold our aligned face, the teacher's vector is of the raw photo
    (it has its own detector or crop)."""
    pytest.importorskip("onnxruntime")
    from data_tools.alignment import face_alignment  # noqa: PLC0415

    weights = _weights()
    model = _onnx_model(tmp_path / "t.onnx", weights)
    # The template's five points, scaled into each 24x24 frame: a plausible face layout.
    points = face_alignment.TEMPLATE_112 * (24.0 / 112.0)
    lines = [relpath + " " + " ".join(f"{v:.3f}" for v in points.ravel())
             for relpath in _relpaths(faces)]
    (tmp_path / "points.txt").write_text("\n".join(lines) + "\n")
    flag_values = _flags(["--input_dir", str(faces), "--output_dir", str(tmp_path / "out"),
                          "--align", f"--landmarks={tmp_path / 'points.txt'}",
                          "--image_size=16", f"--teacher=onnx:{model}", "--num_workers=1"])
    assert make_tfrecords.main(["make_tfrecords.py"], flag_values) == 0
    column = _teacher_column(str(tmp_path / "out"))
    assert sorted(column) == _relpaths(faces)
    for relpath, vector in column.items():
        np.testing.assert_allclose(vector, _onnx_reference(str(faces / relpath), weights),
                                   rtol=1e-4, atol=1e-5)
        aligned = str(tmp_path / "out_aligned" / relpath)
        assert os.path.isfile(aligned)
        assert not np.allclose(vector, _onnx_reference(aligned, weights), atol=1e-3)
