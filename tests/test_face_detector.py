"""The face detector (mtcnn, the optional ``[align]`` extra) on a real photograph that a package
ships: scikit-image's ``astronaut.png`` (a test-only dependency), and the CLI with it.

The detector and scikit-image install with ``make test`` (requirements.txt). They cannot install
on TF 1.15 / Python 3.7 (``make test-tf1``): these tests skip there, and only there.
"""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import cli
from cli import alignment_flags
from data_tools.alignment import align, face_detector, raw_faces

# Where requirements.txt installs them (markers: mtcnn 1.0.0 needs Python 3.10, scikit-image
# 0.26 Python 3.11; both need TensorFlow 2). Elsewhere their absence is a failure, not a skip.
_TF2 = tf.__version__.startswith("2.")
DETECTOR_EXPECTED = _TF2 and sys.version_info >= (3, 10)
PHOTO_EXPECTED = _TF2 and sys.version_info >= (3, 11)

pytestmark = pytest.mark.skipif(
    not face_detector.is_available() and not DETECTOR_EXPECTED,
    reason="the mtcnn detector needs TensorFlow 2 and Python >= 3.10")

# The five points of astronaut.png (512x512), read by hand from a 6x zoom: eye centres, nose
# tip, mouth corners, as seen in the image.
ASTRONAUT_POINTS = np.array([[203.8, 101.3], [244.5, 102.5], [223.3, 126.7], [203.3, 140.0],
                             [244.2, 140.0]])
# Inter-ocular distance 41 px: 4 px is 10% of it (mtcnn 1.0.0 is within 2.1 px).
TOLERANCE = 4.0


@pytest.fixture(scope="module")
def astronaut():
    if not PHOTO_EXPECTED:
        pytest.importorskip("skimage", reason="scikit-image 0.26 needs Python >= 3.11")
    import skimage  # noqa: PLC0415 - test-only dependency

    path = os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png")
    return Image.open(path).convert("RGB")


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    # mtcnn looks for pnet.lz4 etc. in the current directory first (and unpickles them): a
    # hostile file there must not be loaded.
    here = os.getcwd()
    trap = tmp_path_factory.mktemp("cwd")
    for name in face_detector.WEIGHTS:
        (trap / name).write_bytes(b"not weights")
    os.chdir(str(trap))
    try:
        return face_detector.load_detector()
    finally:
        os.chdir(here)


def assert_near_astronaut(face, scale=1.0, offset=(0, 0)):
    points = (np.asarray(face.landmarks) - offset) / scale
    errors = np.hypot(*(points - ASTRONAUT_POINTS).T)
    assert np.max(errors) < TOLERANCE, errors


def test_five_points_on_the_astronaut(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    assert faces[0].score > 0.9
    assert_near_astronaut(faces[0])
    x0, y0, x1, y1 = faces[0].box
    assert x0 < ASTRONAUT_POINTS[:, 0].min() and ASTRONAUT_POINTS[:, 0].max() < x1
    assert y0 < ASTRONAUT_POINTS[:, 1].min() and ASTRONAUT_POINTS[:, 1].max() < y1


def test_pyramid_levels_never_fall_under_the_pnet_window():
    from mtcnn.utils import images  # noqa: PLC0415 - only where the detector is installed

    # mtcnn 1.0.0 alone: with min_face_size 60 a 250x250 frame gets levels of 8, 6 and 4 px.
    raw = images.build_scale_pyramid(250, 250, min_face_size=60, scale_factor=0.709)
    assert np.floor(250 * raw).min() < face_detector.PNET_WINDOW
    fixed = face_detector._levels_at_least_one_window(images.build_scale_pyramid)
    for side, min_face_size in [(250, 20), (250, 60), (512, 150), (1280, 20), (30, 25)]:
        scales = fixed(side, side, min_face_size=min_face_size, scale_factor=0.709)
        assert len(scales) >= 1
        assert np.floor(side * scales).min() >= face_detector.PNET_WINDOW
        # The top level is untouched: faces of min_face_size still fill one P-Net window.
        assert scales[0] == pytest.approx(face_detector.PNET_WINDOW / min_face_size)


@pytest.mark.parametrize("min_face_size", [40, 80])
def test_a_larger_min_face_size_still_finds_the_face(astronaut, min_face_size):
    # Before the adapter dropped the sub-window levels, mtcnn 1.0.0 found no face at all here.
    found = face_detector.load_detector(min_face_size=min_face_size).detect(astronaut)
    assert len(found) == 1
    assert_near_astronaut(found[0])
    # A face smaller than min_face_size is not looked for.
    assert face_detector.load_detector(min_face_size=400).detect(astronaut) == []


def test_grayscale_cmyk_and_huge_photos(detector, astronaut):
    assert_near_astronaut(detector.detect(astronaut.convert("L"))[0])
    assert_near_astronaut(detector.detect(np.asarray(astronaut.convert("L"))[:, :, None])[0])
    # 2560 px: detected on a 1280 px copy, points in the original pixels.
    huge = astronaut.resize((2560, 2560), Image.BICUBIC)
    assert_near_astronaut(detector.detect(huge)[0], scale=5.0)


def test_no_face(detector):
    assert detector.detect(np.full((200, 300, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((8, 8), np.uint8)) == []


def test_several_faces_largest_first(detector, astronaut):
    canvas = Image.new("RGB", (900, 512), (90, 90, 90))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(astronaut.resize((256, 256)), (600, 100))
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert_near_astronaut(faces[0])
    assert_near_astronaut(faces[1], scale=0.5, offset=(600, 100))


def test_cli_with_the_detector(detector, astronaut, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw" / "Eileen_Collins"
    raw.mkdir(parents=True)
    astronaut.save(str(raw / "photo.jpg"), quality=95)
    astronaut.convert("CMYK").save(str(raw / "cmyk.jpg"), quality=95)
    pair = Image.new("RGB", (900, 512), (90, 90, 90))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut.resize((256, 256)), (600, 100))
    pair.save(str(raw / "two.png"))
    Image.new("RGB", (300, 200), (128, 128, 128)).save(str(raw / "wall.png"))
    (raw / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    made = []
    monkeypatch.setattr(alignment_flags, "_load_detector",
                        lambda size: made.append(size) or detector)
    args = ["align", f"--input_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}"]
    assert cli.run_main(align.define_flags, align.main, args) == 0
    assert made == [20]
    out = tmp_path / "out" / "Eileen_Collins"
    assert sorted(os.listdir(str(out))) == ["cmyk.jpg", "photo.jpg", "two.png"]
    with open(str(tmp_path / "out" / raw_faces.REPORT_NAME), encoding="utf-8") as f:
        report = json.load(f)
    entries = {e["path"]: e for e in report["images"]}
    assert entries["Eileen_Collins/wall.png"]["status"] == "no_face"
    assert entries["Eileen_Collins/broken.jpg"]["status"] == "unreadable"
    assert entries["Eileen_Collins/two.png"]["faces"] == 2
    assert report["summary"]["several_faces"] == 1
    assert report["detector"].startswith("mtcnn ")
    photo = entries["Eileen_Collins/photo.jpg"]
    assert np.max(np.hypot(*(np.array(photo["landmarks"]) - ASTRONAUT_POINTS).T)) < TOLERANCE
    assert "5 images: 3 aligned (1 with several faces" in capsys.readouterr().out
    aligned = Image.open(str(out / "photo.jpg"))
    assert (aligned.format, aligned.mode, aligned.size) == ("JPEG", "RGB", (112, 112))
    # Resuming needs no detector at all.
    made[:] = []
    assert cli.run_main(align.define_flags, align.main, args) == 0
    assert made == []


def test_embed_align_verifies_two_raw_photos(detector, astronaut, tmp_path, monkeypatch,
                                             capsys):
    from export import embed  # noqa: PLC0415 - loads TensorFlow's SavedModel code
    from tests.test_embed_cli import PROJECTION  # noqa: PLC0415
    from tests.tiny_model import build_saved_model  # noqa: PLC0415

    model = str(tmp_path / "model")
    build_saved_model(model, PROJECTION)
    astronaut.save(str(tmp_path / "a.jpg"), quality=95)
    pair = Image.new("RGB", (900, 512), (90, 90, 90))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut.resize((200, 200)), (650, 50))
    pair.convert("CMYK").save(str(tmp_path / "b.jpg"), quality=95)
    Image.new("L", (300, 300), 128).save(str(tmp_path / "wall.png"))
    monkeypatch.setattr(face_detector, "load_detector", lambda: detector)

    def run(*args):
        status = cli.run_main(embed.define_flags, embed.main,
                              ["embed", f"--model={model}"] + list(args))
        return (status,) + tuple(capsys.readouterr())

    status, out, err = run("--align", "--threshold=1.0", str(tmp_path / "a.jpg"),
                           str(tmp_path / "b.jpg"))
    assert status == 0, err
    assert "b.jpg holds 2 faces: the largest is used" in err
    similarity = float(out.split("cosine similarity: ")[1].split()[0])
    # The same face (through CMYK, beside another face): nearly the same aligned pixels.
    assert similarity > 0.95
    # A photo without a face is embedded whole, named and counted (never dropped).
    status, out, err = run("--align", "--threshold=1.0", str(tmp_path / "a.jpg"),
                           str(tmp_path / "wall.png"))
    assert status == 0, err
    assert "wall.png: no face detected: the whole frame is used" in err
    assert "align fallbacks: 1 of 2 photos" in err and "decision:" in out
    status, _, err = run("--align", "--crop_box=0,0,10,10", str(tmp_path / "a.jpg"))
    assert status == 2 and "--crop_box applies to photos that are cut out by a fixed box" in err
