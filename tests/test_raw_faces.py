"""Raw photos to aligned faces with a landmark file (no detector): data_tools.alignment.raw_faces
and the ``python -m data_tools.alignment.align`` CLI. The detector's own tests are in
test_face_detector.py."""

import json
import math
import os

import numpy as np
import pytest
from absl import app
from PIL import Image

import cli
from data_tools import make_tfrecords, manifest
from data_tools.alignment import align, face_alignment, raw_faces
from tests import _folder_fixtures as ff
from tests.test_reliability_inputs import decompression_bomb_png


def similarity(rng, scale):
    angle = rng.uniform(-0.6, 0.6)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)],
                                 [math.sin(angle), math.cos(angle)]])
    return np.hstack([rotation, rng.uniform(5, 40, (2, 1)) * scale])


def dot_face(rng, scale=1.5, gray=True):
    """Gaussian dots at the template points under a random similarity; returns (pixels,
    landmarks). The frame holds the whole face at any scale."""
    true = similarity(rng, scale)
    landmarks = face_alignment.transform_points(true, face_alignment.TEMPLATE_112)
    size = int(np.ceil(landmarks.max() + 40 * scale))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size))
    for x, y in landmarks:
        image += 250 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * (2.0 * scale) ** 2))
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return (pixels if gray else np.stack([pixels] * 3, axis=2)), landmarks


def dot_centres(aligned, points, radius=6):
    aligned = aligned if aligned.ndim == 2 else aligned.mean(axis=2)
    ys, xs = np.mgrid[0:aligned.shape[0], 0:aligned.shape[1]].astype(np.float64)
    centres = []
    for x, y in points:
        weight = aligned * ((np.abs(xs - x) <= radius) & (np.abs(ys - y) <= radius))
        centres.append([np.sum(weight * xs) / np.sum(weight), np.sum(weight * ys) / np.sum(weight)])
    return np.array(centres)


def landmark_line(relpath, landmarks, score=None):
    fields = [relpath] + [f"{v:.4f}" for v in np.ravel(landmarks)]
    return " ".join(fields + ([] if score is None else [f"{score:.3f}"])) + "\n"


def run_align(*args):
    return cli.run_main(align.define_flags, align.main, ["align"] + list(args))


def read_report(output_dir):
    with open(os.path.join(str(output_dir), raw_faces.REPORT_NAME), encoding="utf-8") as f:
        report = json.load(f)
    return report, {entry["path"]: entry for entry in report["images"]}


@pytest.mark.parametrize("scale", [0.8, 1.5, 3.0, 8.0])
@pytest.mark.parametrize("seed", range(3))
def test_synthetic_faces_through_a_landmark_file_land_within_a_pixel(tmp_path, seed, scale):
    """Random rotation, scale and translation, written to disk, aligned back by the CLI. At
    scale 8 the face region is first shrunk with an antialiasing filter."""
    rng = np.random.RandomState(seed)
    lines = []
    for i, gray in enumerate((True, False)):
        pixels, landmarks = dot_face(rng, scale, gray=gray)
        relpath = f"Person_{i}/face.png"
        os.makedirs(str(tmp_path / "raw" / f"Person_{i}"))
        Image.fromarray(pixels).save(str(tmp_path / "raw" / relpath))
        lines.append(landmark_line(relpath, landmarks, score=0.9))
    (tmp_path / "points.txt").write_text("".join(lines))
    assert run_align(f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
                     f"--landmarks={tmp_path / 'points.txt'}") == 0
    for i, gray in enumerate((True, False)):
        aligned = np.asarray(Image.open(str(tmp_path / "out" / f"Person_{i}/face.png")))
        assert aligned.shape == ((112, 112) if gray else (112, 112, 3))
        found = dot_centres(aligned, face_alignment.TEMPLATE_112)
        assert np.max(np.hypot(*(found - face_alignment.TEMPLATE_112).T)) < 1.0
    report, entries = read_report(tmp_path / "out")
    assert report["summary"]["aligned"] == 2
    assert entries["Person_0/face.png"]["score"] == pytest.approx(0.9)
    assert np.asarray(entries["Person_0/face.png"]["landmarks"]).shape == (5, 2)


def test_a_face_four_times_the_template_aligns_onto_it_without_a_shift():
    """A face 4x the template is pre-shrunk (PIL, pixel-edge convention) before the warp; its
    landmarks must follow the half-pixel mapping. Each dot's centre in the aligned face is
    measured directly (its intensity centroid) against the template point: the mean signed error
    per axis was -0.35/-0.38 px with ``(p - x0) * f``, and is within 0.01 px of a face aligned
    without the pre-shrink (scale 1.5)."""
    def mean_shift(scale):
        shifts = []
        for seed in range(3):
            pixels, landmarks = dot_face(np.random.RandomState(seed), scale)
            result = raw_faces.align_image(Image.fromarray(pixels),
                                           [raw_faces._Listed(landmarks, 0.9)])  # noqa: SLF001
            assert result.status == raw_faces.ALIGNED
            found = dot_centres(result.face.astype(np.float64), face_alignment.TEMPLATE_112)
            shifts.append(np.mean(found - face_alignment.TEMPLATE_112, axis=0))
        return np.mean(shifts, axis=0)

    direct, shrunk = mean_shift(1.5), mean_shift(4.0)
    assert np.all(np.abs(direct) < 0.02), direct
    assert np.all(np.abs(shrunk) < 0.02), shrunk


@pytest.mark.parametrize("resample", ["BOX", "BILINEAR", "LANCZOS"])
@pytest.mark.parametrize("centre", [50.3, 101.0, 170.8])
def test_resized_points_follow_the_pixel_edges_pil_scales(centre, resample):
    """A smooth vertical band centred at x = c (sub-pixel), shrunk by PIL to a quarter: its
    centroid in the small image is where ``points_in_resized`` puts it, (c + 0.5) / 4 - 0.5,
    not c / 4; mapped back, the original centre."""
    xs = np.arange(256, dtype=np.float64)
    row = 250 * np.exp(-(xs - centre) ** 2 / (2 * 6.0 ** 2))
    image = np.repeat(row[None, :], 64, axis=0).astype(np.float32)
    filter_ = getattr(getattr(Image, "Resampling", Image), resample)
    small = np.asarray(Image.fromarray(image, mode="F").resize((64, 16), filter_), np.float64)
    profile = small.mean(axis=0)
    centroid = np.sum(profile * np.arange(64)) / np.sum(profile)
    expected = face_alignment.points_in_resized([[centre, 0.0]], [0.25, 0.25])[0, 0]
    assert expected == pytest.approx((centre + 0.5) / 4 - 0.5)
    assert centroid == pytest.approx(expected, abs=1e-4)
    back = face_alignment.points_from_resized([[centroid, 0.0]], [0.25, 0.25])[0, 0]
    assert back == pytest.approx(centre, abs=1e-3)


class _CentroidMtcnn:
    """Stands in for mtcnn: reports the intensity centroids of the dots near ``guesses`` (the
    true points times the downscale), in pixel-centre coordinates of the image it is given, as
    mtcnn's own R-Net/O-Net crops (tf.image.crop_and_resize) read its boxes and points."""

    def __init__(self, guesses):
        self.guesses = guesses

    def detect_faces(self, rgb, **kwargs):
        del kwargs
        found = self.guesses
        for _ in range(3):  # re-centred windows: no truncation bias from the guess
            found = dot_centres(np.asarray(rgb, np.float64), found, radius=14)
        row = np.concatenate([[0.0], found.min(axis=0), found.max(axis=0), [0.99],
                              found[:, 0], found[:, 1]])
        return row[None, :]


def test_detector_points_on_a_downscaled_photo_map_back_to_the_original_pixels():
    """A 2,000 px photo is detected on a 1,280 px copy: points found there (pixel centres of the
    copy) map back onto the dots of the original with the half-pixel mapping. Dividing by the
    factor alone put them 0.28 px off (0.5 * (1 / 0.64 - 1))."""
    from data_tools.alignment import face_detector  # noqa: PLC0415 - imports no detector package

    points = face_alignment.TEMPLATE_112 * 9.0 + [700.3, 350.7]
    height, width = 1600, 2000
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width), np.float32)
    for x, y in points:
        box = (slice(int(y) - 40, int(y) + 40), slice(int(x) - 40, int(x) + 40))
        image[box] += 250 * np.exp(-((xs[box] - x) ** 2 + (ys[box] - y) ** 2) / (2 * 6.0 ** 2))
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    detector = object.__new__(face_detector.MtcnnDetector)
    detector.max_side, detector.min_face_size = 1280, 40
    detector._mtcnn = _CentroidMtcnn(points * 0.64)  # noqa: SLF001
    (face,) = detector.detect(pixels)
    errors = np.asarray(face.landmarks) - points
    assert np.max(np.abs(errors)) < 0.02, errors


def test_a_tree_aligned_before_issue_26_is_not_resumed_into(tmp_path, capsys):
    """Same options, other pixels: a report without the alignment revision (written before the
    half-pixel mapping) is refused, so one tree never holds two alignments."""
    pixels, landmarks = dot_face(np.random.RandomState(0), 4.0)
    os.makedirs(str(tmp_path / "raw" / "Person_A"))
    Image.fromarray(pixels).save(str(tmp_path / "raw" / "Person_A" / "a.png"))
    (tmp_path / "points.txt").write_text(landmark_line("Person_A/a.png", landmarks))
    args = [f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
            f"--landmarks={tmp_path / 'points.txt'}"]
    assert run_align(*args) == 0
    path = tmp_path / "out" / raw_faces.REPORT_NAME
    report = json.loads(path.read_text())
    assert report["options"].pop("alignment_revision") == raw_faces.ALIGNMENT_REVISION
    path.write_text(json.dumps(report))
    capsys.readouterr()
    assert run_align(*args) != 0
    assert "written with other options" in capsys.readouterr().err
    assert run_align(*(args + ["--overwrite"])) == 0


def write_hostile_tree(root, rng):
    """One photo of each kind the converter's tests call hostile, plus good ones; returns the
    landmark-file text (every image listed but ``unlisted.png``, and one absent image)."""
    good, landmarks = dot_face(rng, 2.0, gray=False)
    people = root / "Person_A"
    os.makedirs(str(people))
    Image.fromarray(good).save(str(people / "rgb.jpg"), quality=95)
    Image.fromarray(good).convert("L").save(str(people / "gray.png"))
    Image.fromarray(good).convert("CMYK").save(str(people / "cmyk.jpg"), quality=95)
    Image.fromarray(good).save(str(people / "unlisted.png"))
    (people / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    (people / "truncated.png").write_bytes((people / "gray.png").read_bytes()[:200])
    (people / "empty.jpg").write_bytes(b"")
    (people / "bomb.png").write_bytes(decompression_bomb_png(10000))
    (root / "top.png").write_bytes((people / "gray.png").read_bytes())
    (people / "notes.txt").write_text("not an image")
    text = "# name x1 y1 ... x5 y5 score\n"
    for name in ("rgb.jpg", "gray.png", "cmyk.jpg", "corrupt.jpg", "truncated.png", "empty.jpg",
                 "bomb.png"):
        text += landmark_line("Person_A/" + name, landmarks, 0.99)
    text += landmark_line("top.png", landmarks)
    text += landmark_line("Person_B\\absent.jpg", landmarks)
    return text


def test_hostile_inputs_are_reported_and_the_tree_is_mirrored(tmp_path, capsys):
    rng = np.random.RandomState(0)
    (tmp_path / "points.txt").write_text(write_hostile_tree(tmp_path / "raw", rng))
    args = [f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
            f"--landmarks={tmp_path / 'points.txt'}"]
    assert run_align(*args) == 0
    out = tmp_path / "out"
    assert sorted(os.listdir(str(out / "Person_A"))) == ["cmyk.jpg", "gray.png", "rgb.jpg"]
    assert (out / "top.png").is_file()
    assert Image.open(str(out / "Person_A" / "rgb.jpg")).format == "JPEG"
    assert Image.open(str(out / "Person_A" / "cmyk.jpg")).mode == "RGB"
    assert Image.open(str(out / "Person_A" / "gray.png")).mode == "L"
    report, entries = read_report(out)
    status = {path: entry["status"] for path, entry in entries.items()}
    assert status == {
        "Person_A/rgb.jpg": "aligned", "Person_A/gray.png": "aligned",
        "Person_A/cmyk.jpg": "aligned", "top.png": "aligned",
        "Person_A/unlisted.png": "not_in_landmark_file",
        "Person_A/corrupt.jpg": "unreadable", "Person_A/truncated.png": "unreadable",
        "Person_A/empty.jpg": "unreadable", "Person_A/bomb.png": "unreadable"}
    assert "10000x10000 pixels exceed" in entries["Person_A/bomb.png"]["reason"]
    assert "0 bytes" in entries["Person_A/empty.jpg"]["reason"]
    assert report["listed_missing"] == ["Person_B/absent.jpg"]
    assert report["summary"]["aligned"] == 4 and report["summary"]["unreadable"] == 4
    captured = capsys.readouterr()
    assert "not_in_landmark_file Person_A/unlisted.png" in captured.err
    assert "Person_B/absent.jpg" in captured.err
    assert "9 images: 4 aligned" in captured.out


def test_rerun_resumes_and_redoes_changed_files(tmp_path, capsys):
    rng = np.random.RandomState(1)
    (tmp_path / "points.txt").write_text(write_hostile_tree(tmp_path / "raw", rng))
    args = [f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
            f"--landmarks={tmp_path / 'points.txt'}"]
    assert run_align(*args) == 0
    first, _ = read_report(tmp_path / "out")
    capsys.readouterr()
    assert run_align(*args) == 0
    assert "0 done now, 9 kept" in capsys.readouterr().out
    second, _ = read_report(tmp_path / "out")
    assert second["images"] == first["images"]
    # A deleted output and a changed photo are done again; the rest is kept.
    os.remove(str(tmp_path / "out" / "Person_A" / "rgb.jpg"))
    gray = tmp_path / "raw" / "Person_A" / "gray.png"
    gray.write_bytes(b"now corrupt")
    assert run_align(*args) == 0
    assert "2 done now, 7 kept" in capsys.readouterr().out
    _, entries = read_report(tmp_path / "out")
    assert entries["Person_A/gray.png"]["status"] == "unreadable"
    assert not (tmp_path / "out" / "Person_A" / "gray.png").exists()  # no stale face
    assert (tmp_path / "out" / "Person_A" / "rgb.jpg").is_file()
    # Other options: refused, unless --overwrite.
    assert run_align(*(args + ["--image_size=96"])) == 1
    assert "other options" in capsys.readouterr().err
    assert run_align(*(args + ["--image_size=96", "--overwrite"])) == 0
    assert Image.open(str(tmp_path / "out" / "Person_A" / "rgb.jpg")).size == (96, 96)


def test_interrupted_run_keeps_what_it_saved(tmp_path, monkeypatch):
    rng = np.random.RandomState(2)
    (tmp_path / "points.txt").write_text(write_hostile_tree(tmp_path / "raw", rng))
    monkeypatch.setattr(raw_faces, "SAVE_EVERY", 2)
    calls = []
    real = raw_faces.align_file

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(raw_faces, "align_file", interrupting)
    kwargs = dict(landmarks_path=str(tmp_path / "points.txt"), progress=False)
    with pytest.raises(KeyboardInterrupt):
        raw_faces.align_folder(str(tmp_path / "raw"), str(tmp_path / "out"), **kwargs)
    report, _ = read_report(tmp_path / "out")
    assert len(report["images"]) == 4
    monkeypatch.setattr(raw_faces, "align_file", real)
    summary = raw_faces.align_folder(str(tmp_path / "raw"), str(tmp_path / "out"), **kwargs)
    assert (summary["kept"], summary["processed"], summary["num_images"]) == (4, 5, 9)


@pytest.mark.parametrize("text, message", [
    ("a.jpg 1 2 3\n", "11 or 12 fields"),
    ("a.jpg 1 2 3 4 5 6 7 8 9 x\n", "numbers"),
    ("a.jpg 1 2 3 4 5 6 7 8 9 nan\n", "NaN"),
    ("a.jpg 1 2 3 4 5 6 7 8 9 10\n./a.jpg 1 2 3 4 5 6 7 8 9 10\n", "listed twice"),
    ("\n# nothing\n", "lists no image"),
])
def test_bad_landmark_files(tmp_path, text, message):
    path = tmp_path / "points.txt"
    path.write_text(text)
    with pytest.raises(face_alignment.LandmarkFileError, match=message):
        face_alignment.read_landmark_file(str(path))


def test_landmark_file_layout(tmp_path):
    path = tmp_path / "points.txt"
    path.write_text("dir\\a.jpg 1 2 3 4 5 6 7 8 9 10 0.75\n./b.png 1 2 3 4 5 6 7 8 9 10\n")
    entries = face_alignment.read_landmark_file(str(path))
    assert list(entries) == ["dir/a.jpg", "b.png"]
    points, score = entries["dir/a.jpg"]
    np.testing.assert_array_equal(points, [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
    assert score == 0.75 and entries["b.png"][1] is None


def test_bad_arguments(tmp_path, capsys):
    (tmp_path / "raw" / "a").mkdir(parents=True)
    assert run_align(f"--input_dir={tmp_path / 'raw'}",
                     f"--output_dir={tmp_path / 'out'}") == 1
    assert "no image files" in capsys.readouterr().err
    Image.new("L", (20, 20)).save(str(tmp_path / "raw" / "a" / "x.png"))
    assert run_align(f"--input_dir={tmp_path / 'raw'}",
                     f"--output_dir={tmp_path / 'raw' / 'aligned'}") == 1
    assert "inside --input_dir" in capsys.readouterr().err
    assert run_align(f"--input_dir={tmp_path / 'nowhere'}",
                     f"--output_dir={tmp_path / 'out'}") == 1
    (tmp_path / "points.txt").write_text("a/x.png 1 2\n")
    assert run_align(f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
                     f"--landmarks={tmp_path / 'points.txt'}") == 1
    assert "line 1" in capsys.readouterr().err


def test_degenerate_landmarks_fail_one_image_only(tmp_path):
    (tmp_path / "raw" / "a").mkdir(parents=True)
    Image.new("RGB", (50, 50)).save(str(tmp_path / "raw" / "a" / "x.png"))
    (tmp_path / "points.txt").write_text("a/x.png 1 1 1 1 1 1 1 1 1 1\n")
    summary = raw_faces.align_folder(str(tmp_path / "raw"), str(tmp_path / "out"),
                                     landmarks_path=str(tmp_path / "points.txt"),
                                     progress=False)
    assert summary["failed"] == 1 and "coincide" in summary["entries"][0]["reason"]


def test_encode_face_keeps_the_format_of_the_name():
    face = np.zeros((16, 16, 3), np.uint8)
    assert raw_faces.encode_face(face, "a.JPG")[:3] == b"\xff\xd8\xff"
    assert raw_faces.encode_face(face, "a.png")[:4] == b"\x89PNG"
    assert raw_faces.encode_face(face, "a.bmp")[:2] == b"BM"
    assert raw_faces.encode_face(face[:, :, 0], "a.pgm")[:2] == b"P5"


def run_make_tfrecords(*args):
    return cli.run_main(make_tfrecords.define_flags, make_tfrecords.main,
                        ["make_tfrecords"] + list(args))


def dot_tree(root, rng, names):
    """Dot faces at ``names`` (relpaths) under ``root``; returns the landmark-file text."""
    text = ""
    for relpath in names:
        pixels, landmarks = dot_face(rng, rng.uniform(1.0, 2.5), gray=relpath.endswith(".png"))
        os.makedirs(os.path.dirname(str(root / relpath)), exist_ok=True)
        Image.fromarray(pixels).save(str(root / relpath), quality=95)
        text += landmark_line(relpath, landmarks)
    return text


def test_make_tfrecords_align_converts_aligned_faces(tmp_path, capsys):
    rng = np.random.RandomState(3)
    names = ["Person_A/Person_A_0001.jpg", "Person_A/Person_A_0002.png",
             "Person_B/Person_B_0001.jpg"]
    (tmp_path / "points.txt").write_text(dot_tree(tmp_path / "raw", rng, names))
    args = [f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'records'}",
            "--align", f"--landmarks={tmp_path / 'points.txt'}", "--num_workers=1"]
    assert run_make_tfrecords(*args) == 0
    out = capsys.readouterr().out
    assert "3 images: 3 aligned" in out and "3 images of 2 identities" in out
    records = ff.read_records(ff.shard_files(tmp_path / "records"))
    assert sorted(r["filename"].decode() for r in records) == names
    for record in records:
        assert record["pixels"].shape == (112, 112, 3)
        found = dot_centres(record["pixels"], face_alignment.TEMPLATE_112)
        assert np.max(np.hypot(*(found - face_alignment.TEMPLATE_112).T)) < 1.5  # JPEG q95
    options = manifest.read_manifest(str(tmp_path / "records"))["options"]
    assert options["align"]["image_size"] == 112
    assert options["align"]["landmarks"] == str(tmp_path / "points.txt")
    assert options["input_dir"] == str(tmp_path / "records_aligned")
    # Re-running keeps both steps.
    assert run_make_tfrecords(*args) == 0
    out = capsys.readouterr().out
    assert "0 done now, 3 kept" in out and "0 written, 1 kept" in out


def test_align_follows_symlinked_identity_folders_like_the_converter(tmp_path, capsys):
    # data_tools.lfw_holdout links its identity folders into the split: --align must see them.
    rng = np.random.RandomState(4)
    names = ["Person_A/Person_A_0001.jpg", "Person_B/deeper/Person_B_0001.png"]
    (tmp_path / "points.txt").write_text(dot_tree(tmp_path / "all", rng, names))
    split = tmp_path / "split"
    split.mkdir()
    for identity in ("Person_A", "Person_B"):
        os.symlink(str(tmp_path / "all" / identity), str(split / identity))
    os.symlink(str(tmp_path), str(split / "Loop"))  # contains the split: never followed
    assert raw_faces.list_images(str(split)) == names
    args = [f"--input_dir={split}", f"--output_dir={tmp_path / 'records'}", "--align",
            f"--landmarks={tmp_path / 'points.txt'}", "--num_workers=1"]
    assert run_make_tfrecords(*args) == 0
    out = capsys.readouterr().out
    assert "2 images: 2 aligned" in out and "2 images of 2 identities" in out


def test_make_tfrecords_align_pairs_aligns_the_pairs_images_only(tmp_path, capsys):
    rng = np.random.RandomState(4)
    names = ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg", "C/C_0001.jpg"]
    (tmp_path / "points.txt").write_text(dot_tree(tmp_path / "raw", rng, names))
    (tmp_path / "pairs.txt").write_text("1\t1\nA\t1\t2\nA\t1\tB\t1\n")
    assert run_make_tfrecords(
        f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'pairs'}",
        f"--pairs={tmp_path / 'pairs.txt'}", "--align", "--image_size=64",
        f"--landmarks={tmp_path / 'points.txt'}", f"--aligned_dir={tmp_path / 'al'}",
        "--num_workers=1") == 0
    assert "3 images: 3 aligned" in capsys.readouterr().out
    assert not (tmp_path / "al" / "C").exists()
    records = ff.read_records(ff.shard_files(tmp_path / "pairs"), kind="pairs")
    assert [r["issame"] for r in records] == [True, False]
    assert records[0]["image1"]["pixels"].shape == (64, 64, 3)


@pytest.mark.parametrize("args, message", [
    (["--align", "--crop_box=0,0,10,10"], "--crop_box does not apply"),
    (["--landmarks=x.txt"], "--landmarks needs --align"),
    (["--aligned_dir=x"], "--aligned_dir needs --align"),
])
def test_make_tfrecords_align_usage(tmp_path, args, message):
    with pytest.raises(app.UsageError, match=message):
        run_make_tfrecords(f"--input_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}",
                           *args)
