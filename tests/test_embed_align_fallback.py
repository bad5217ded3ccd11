"""export.embed --align on photos where the detector finds no face: the whole frame is embedded
(centre square at the aligned size, ``image_files.transformed_png``), named in a note and
counted, for IMAGE arguments, --folder and --pairs.

A stand-in detector (never mtcnn: it is slow and optional) finds one face in every 24 x 26
frame and none in the 30 x 26 ones; expected embeddings are the numpy reference of the tiny
model on the pixels the converter's code makes of each file.
"""

import io
import os

import numpy as np
import pytest
from PIL import Image

from data_tools import image_files
from data_tools.alignment import face_alignment, face_detector, raw_faces
from evaluation import reports as report
from evaluation import verification
from export import embedder as embedder_lib
from tests.test_embed_cli import PROJECTION, run_cli
from tests.test_embed_transform import make_raw_pairs, write_frame
from tests.tiny_model import SIZE, Reference, build_saved_model

NO_FACE_SIZE = (30, 26)  # PIL (width, height) of the frames the stand-in finds no face in


class NoFaceInWideFrames:
    """Detects one face, its points on the 24-pixel template, unless the frame is 30 wide."""

    name = description = "stand-in"

    def detect(self, image):
        if image.size == NO_FACE_SIZE:
            return []
        return [face_detector.Face((0.0, 0.0, 24.0, 24.0), 0.99, face_alignment.template(24))]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("model") / "saved_model")
    build_saved_model(export_dir, PROJECTION, pixels_signature=True)
    return export_dir, Reference(PROJECTION)


@pytest.fixture(autouse=True)
def stand_in_detector(monkeypatch):
    monkeypatch.setattr(embedder_lib, "_DETECTOR_CACHE", {})
    monkeypatch.setattr(face_detector, "load_detector", NoFaceInWideFrames)


def wide_frame(path, rng):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.randint(0, 256, NO_FACE_SIZE[::-1]).astype(np.uint8)).save(path,
                                                                                   quality=92)
    return path


def decoded(png):
    return np.asarray(Image.open(io.BytesIO(png)))


def expected_embedding(reference, path):
    """The aligned face when the stand-in finds one, else the whole frame as the converter's
    --image_size makes it (centre square, Lanczos)."""
    png, result = raw_faces.aligned_png(path, SIZE, detector=NoFaceInWideFrames())
    if png is None:
        assert result.status == raw_faces.NO_FACE
        with open(path, "rb") as f:
            png = image_files.transformed_png(f.read(), SIZE)
    return reference(decoded(png), True)


def test_image_arguments_fall_back_to_the_whole_frame(model, tmp_path, capsys):
    export_dir, reference = model
    rng = np.random.RandomState(0)
    paths = [write_frame(str(tmp_path / "face1.jpg"), rng),
             wide_frame(str(tmp_path / "wall.jpg"), rng),
             write_frame(str(tmp_path / "face2.jpg"), rng)]
    status, out, err = run_cli(capsys, "--model", export_dir, "--align", "--image_size", SIZE,
                               *paths)
    assert status == 0, err
    rows = [np.array([float(v) for v in line.split()[1:]]) for line in out.splitlines()]
    assert len(rows) == 3
    for path, row in zip(paths, rows):
        np.testing.assert_allclose(row, expected_embedding(reference, path), atol=2e-6)
    # The fallback is the whole frame, not a crop of it: not the embedding of its left square.
    with Image.open(paths[1]) as image:
        left = image_files.transform_image(image.convert("L"), SIZE, (0, 0, 26, 26))
    assert not np.allclose(rows[1], reference(np.asarray(left), True), atol=1e-3)
    assert f"note: {paths[1]}: no face detected: the whole frame is used" in err
    assert "face1.jpg: no face" not in err and "face2.jpg: no face" not in err
    assert "align fallbacks: 1 of 3 photos without a detected face" in err

    # Two photos: the comparison is made, the count said.
    status, out, err = run_cli(capsys, "--model", export_dir, "--align", "--image_size", SIZE,
                               "--threshold", "1.0", paths[0], paths[1])
    assert status == 0, err
    assert "decision:" in out and "align fallbacks: 1 of 2 photos" in err

    # An unreadable photo stays an error.
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    status, _, err = run_cli(capsys, "--model", export_dir, "--align", "--image_size", SIZE,
                             paths[0], str(bad))
    assert status == 1 and "broken.jpg" in err and "whole frame" not in err


def test_folder_falls_back_and_counts(model, tmp_path, capsys):
    export_dir, reference = model
    rng = np.random.RandomState(1)
    root = tmp_path / "faces"
    paths = {"Ann/Ann_0001.jpg": write_frame(str(root / "Ann" / "Ann_0001.jpg"), rng),
             "Bob/Bob_0001.jpg": wide_frame(str(root / "Bob" / "Bob_0001.jpg"), rng),
             "Bob/Bob_0002.jpg": write_frame(str(root / "Bob" / "Bob_0002.jpg"), rng)}
    status, out, err = run_cli(capsys, "--model", export_dir, "--folder", root, "--output",
                               tmp_path / "emb", "--align", "--image_size", SIZE)
    assert status == 0, err
    names = (tmp_path / "emb.names.txt").read_text().splitlines()
    assert sorted(names) == sorted(paths)  # nothing dropped
    np.testing.assert_allclose(np.load(str(tmp_path / "emb.npy")),
                               [expected_embedding(reference, paths[n]) for n in names],
                               atol=2e-6)
    assert "note: Bob/Bob_0001.jpg: no face detected: the whole frame is used" in err
    assert "align fallbacks: 1 of 3 images without a detected face" in out


def test_pairs_fall_back_and_the_report_counts(model, tmp_path, capsys):
    export_dir, reference = model
    image_dir = str(tmp_path / "lfw")
    rng = np.random.RandomState(2)
    pairs_path, pairs = make_raw_pairs(image_dir, rng)
    wide = ["Person_A/Person_A_0001.jpg", "Person_C/Person_C_0002.jpg"]
    for relpath in wide:
        wide_frame(os.path.join(image_dir, *relpath.split("/")), rng)

    def emb(name, index):
        return expected_embedding(reference,
                                  os.path.join(image_dir, name, f"{name}_{index:04d}.jpg"))

    expected = verification.evaluate(np.stack([emb(p[0], p[1]) for p in pairs]),
                                     np.stack([emb(p[2], p[3]) for p in pairs]),
                                     np.array([p[0] == p[2] for p in pairs]), n_folds=2)
    status, out, err = run_cli(capsys, "--model", export_dir, "--pairs", pairs_path,
                               "--image_dir", image_dir, "--align", "--image_size", SIZE,
                               "--report_dir", tmp_path / "report")
    assert status == 0, err
    for relpath in wide:
        assert f"note: {relpath}: no face detected: the whole frame is used" in err
    written = report.read_report(str(tmp_path / "report"))
    num_images = written["extra"]["num_images"]
    assert f"align fallbacks: 2 of {num_images} images without a detected face" in out
    assert written["extra"]["align_fallbacks"] == 2
    assert written["extra"]["align_fallback_images"] == sorted(wide)
    assert written["fold_accuracy"] == pytest.approx(expected["fold_accuracy"], abs=1e-12)
    assert written["fold_threshold"] == pytest.approx(expected["fold_threshold"], abs=1e-9)
    assert written["auc"] == pytest.approx(expected["auc"], abs=1e-9)

    # Without --align there is no count (null in the report).
    status, out, err = run_cli(capsys, "--model", export_dir, "--pairs", pairs_path,
                               "--image_dir", image_dir, "--crop_box", "none",
                               "--report_dir", tmp_path / "plain")
    assert status == 0, err
    assert "align fallbacks" not in out
    assert report.read_report(str(tmp_path / "plain"))["extra"]["align_fallbacks"] is None


def test_fallback_frame_is_upright_by_its_exif_tag(model, tmp_path, capsys):
    """A phone photo stored on its side with an EXIF orientation tag: the detector sees it upright
    (``open_image(exif_transpose=True)``), and so must the whole-frame fallback."""
    export_dir, reference = model
    rng = np.random.RandomState(3)
    sideways = Image.fromarray(rng.randint(0, 256, NO_FACE_SIZE).astype(np.uint8))  # 26 x 30
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view (30 x 26 upright)
    path = str(tmp_path / "phone.jpg")
    sideways.save(path, quality=92, exif=exif)
    with open(path, "rb") as f:
        data = f.read()
    upright = decoded(image_files.transformed_png(data, SIZE, exif_transpose=True))
    as_stored = decoded(image_files.transformed_png(data, SIZE))
    with Image.open(path) as stored:
        expected_upright = image_files.transform_image(stored.transpose(Image.ROTATE_270), SIZE)
    np.testing.assert_array_equal(upright, np.asarray(expected_upright))
    assert not np.array_equal(upright, as_stored)

    status, out, err = run_cli(capsys, "--model", export_dir, "--align", "--image_size", SIZE,
                               path)
    assert status == 0, err
    assert "align fallbacks: 1 of 1 photo without a detected face" in err
    row = np.array([float(v) for v in out.split()[1:]])
    np.testing.assert_allclose(row, reference(upright, True), atol=2e-6)


def test_gallery_counts_and_marks_fallbacks(model, tmp_path, capsys):
    """``export.gallery enrol/search --align``: the whole-frame fallbacks counted and named, and a
    search result on a frame without a face says so."""
    import cli  # noqa: PLC0415
    from export import gallery  # noqa: PLC0415 - absl flags of its own

    export_dir, _ = model
    rng = np.random.RandomState(4)
    root = tmp_path / "people"
    write_frame(str(root / "Ann" / "Ann_0001.jpg"), rng)
    wide_frame(str(root / "Bob" / "Bob_0001.jpg"), rng)
    index = str(tmp_path / "gallery.npz")

    def run_gallery(*args):
        status = cli.run_main(gallery.define_flags, gallery.main,
                              ["gallery"] + [str(a) for a in args])
        return (status,) + capsys.readouterr()

    status, out, err = run_gallery("enrol", "--model", export_dir, "--folder", root, "--index",
                                   index, "--align", "--image_size", SIZE)
    assert status == 0, err
    assert "enrolled 2 new image(s)" in out
    assert "align fallbacks: 1 of 2 new images without a detected face" in err
    assert "no face detected: Bob/Bob_0001.jpg" in err

    probe_face = write_frame(str(tmp_path / "probe.jpg"), rng)
    probe_wall = wide_frame(str(tmp_path / "wall.jpg"), rng)
    status, out, err = run_gallery("search", "--index", index, "--align", "--image_size", SIZE,
                                   probe_face, probe_wall)
    assert status == 0, err
    assert "align fallbacks: 1 of 2 photos without a detected face" in err
    lines = {line.split(": ", 1)[0]: line for line in out.splitlines() if ": " in line}
    assert "[no face detected" in lines[probe_wall]
    assert "[no face detected" not in lines[probe_face]

    # Without --align: no count.
    status, out, err = run_gallery("search", "--index", index, probe_face)
    assert status == 0, err
    assert "align fallbacks" not in err
