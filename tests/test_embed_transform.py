"""export.embed --crop_box / --image_size, and the SavedModel's transform as --pairs default.

The tiny 8x8 model of test_embed_cli; raw "frames" are larger than the faces it takes, and the
expected embeddings are computed from the converter's own crop/resize of them.
"""

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from data_tools import image_files
from data_tools import pairs as pairs_lib
from evaluation import reports as report
from evaluation import verification
from export import embedder as embedder_lib
from export import exporters
from tests.test_embed_cli import PROJECTION, run_cli
from tests.tiny_model import SIZE, Reference, build_saved_model

CROP = "3,2,19,22"  # 16 x 20 in a 24 x 26 frame; --image_size 8 squares it to 16 x 16 first
TRANSFORM = {"crop_box": [3, 2, 19, 22], "image_size": SIZE, "resampling": "lanczos"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("model") / "saved_model")
    build_saved_model(export_dir, PROJECTION, pixels_signature=True)
    return export_dir, Reference(PROJECTION)


@pytest.fixture(scope="module")
def model_with_transform(model, tmp_path_factory):
    """The same SavedModel carrying the conversion transform, as the exporters write it."""
    export_dir = str(tmp_path_factory.mktemp("transform_model") / "saved_model")
    shutil.copytree(model[0], export_dir)
    exporters.write_export_transform(export_dir, TRANSFORM)
    return export_dir, model[1]


def write_frame(path, rng, base=None):
    """A 24 x 26 grayscale "frame" (a JPEG: what a raw photo is), and its decoded pixels."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = rng.randint(0, 256, (26, 24)) if base is None else base + rng.randint(-25, 26,
                                                                                  base.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def converted(path, crop_box=(3, 2, 19, 22), image_size=SIZE):
    """The pixels the converter would store for ``path``."""
    with Image.open(path) as image:
        return np.asarray(image_files.transform_image(image.convert("L"), image_size, crop_box))


def test_image_arguments_get_the_converters_crop_and_resize(model, tmp_path, capsys):
    export_dir, reference = model
    rng = np.random.RandomState(0)
    paths = [write_frame(str(tmp_path / f"f{i}.jpg"), rng) for i in range(3)]
    status, out, err = run_cli(capsys, "--model", export_dir, "--crop_box", CROP,
                               "--image_size", SIZE, *paths)
    assert status == 0, err
    rows = [np.array([float(v) for v in line.split()[1:]]) for line in out.splitlines()]
    for path, row in zip(paths, rows):
        np.testing.assert_allclose(row, reference(converted(path), True), atol=2e-6)
    # --crop_box alone crops (16 x 20: the model's own resize does the rest), as the converter.
    status, out, err = run_cli(capsys, "--model", export_dir, "--crop_box", CROP, paths[0])
    assert status == 0, err
    with embedder_lib.load_saved_model(export_dir) as embedder:
        cropped = Image.open(paths[0]).convert("L").crop((3, 2, 19, 22))
        buffer = io.BytesIO()
        cropped.save(buffer, format="PNG")
        expected = embedder.embed_bytes([buffer.getvalue()], flip=True)[0]
    np.testing.assert_allclose([float(v) for v in out.split()[1:]], expected, atol=2e-6)


def test_folder_gets_the_crop_and_resize(model, tmp_path, capsys):
    export_dir, reference = model
    rng = np.random.RandomState(1)
    root = tmp_path / "faces"
    paths = {}
    for identity in ("Ann", "Bob"):
        for i in (1, 2):
            relpath = f"{identity}/{identity}_{i:04d}.jpg"
            paths[relpath] = write_frame(str(root / relpath), rng)
    status, out, err = run_cli(capsys, "--model", export_dir, "--folder", root, "--output",
                               tmp_path / "emb", "--crop_box", CROP, "--image_size", SIZE)
    assert status == 0, err
    names = (tmp_path / "emb.names.txt").read_text().splitlines()
    saved = np.load(str(tmp_path / "emb.npy"))
    np.testing.assert_allclose(saved, [reference(converted(paths[n]), True) for n in names],
                               atol=2e-6)


def make_raw_pairs(root, rng):
    """Identity folders of raw frames (noisy copies of one frame each) and a 2-fold pairs file."""
    names = [f"Person_{c}" for c in "ABCDEF"]
    for name in names:
        base = rng.randint(40, 216, (26, 24))
        for index in (1, 2, 3):
            write_frame(os.path.join(root, name, f"{name}_{index:04d}.jpg"), rng, base)
    pairs = []
    for _fold in range(2):
        for k in range(5):
            pairs.append((names[k], 1 + k % 3, names[k], 1 + (k + 1) % 3))
        for k in range(5):
            pairs.append((names[k], 1, names[k + 1], 2))
    path = os.path.join(root, "pairs.txt")
    pairs_lib.write_pairs(path, 2, 5, pairs)
    return path, pairs


def test_pairs_use_the_saved_models_transform_by_default(model_with_transform, tmp_path,
                                                         capsys):
    export_dir, reference = model_with_transform
    image_dir = str(tmp_path / "lfw")
    pairs_path, pairs = make_raw_pairs(image_dir, np.random.RandomState(2))

    def emb(name, index):
        return reference(converted(os.path.join(image_dir, name, f"{name}_{index:04d}.jpg")),
                         True)

    expected = verification.evaluate(np.stack([emb(p[0], p[1]) for p in pairs]),
                                     np.stack([emb(p[2], p[3]) for p in pairs]),
                                     np.array([p[0] == p[2] for p in pairs]), n_folds=2)
    status, _, err = run_cli(capsys, "--model", export_dir, "--pairs", pairs_path,
                             "--image_dir", image_dir, "--report_dir", tmp_path / "report")
    assert status == 0, err
    assert f"transform: crop_box=3,2,19,22 image_size={SIZE} (the model's" in err
    written = report.read_report(str(tmp_path / "report"))
    assert written["fold_accuracy"] == pytest.approx(expected["fold_accuracy"], abs=1e-12)
    assert written["fold_threshold"] == pytest.approx(expected["fold_threshold"], abs=1e-9)
    assert written["auc"] == pytest.approx(expected["auc"], abs=1e-9)
    assert written["extra"]["crop_box"] == TRANSFORM["crop_box"]
    assert written["extra"]["image_size"] == SIZE

    # --crop_box=none: the frames as they are (the model squeezes whole frames to 8 x 8).
    status, _, err = run_cli(capsys, "--model", export_dir, "--pairs", pairs_path,
                             "--image_dir", image_dir, "--report_dir", tmp_path / "raw",
                             "--crop_box", "none")
    assert status == 0, err
    assert "transform: none (the flags)" in err
    raw = report.read_report(str(tmp_path / "raw"))
    assert raw["extra"]["crop_box"] is None and raw["extra"]["image_size"] is None
    assert raw["fold_threshold"] != pytest.approx(expected["fold_threshold"], abs=1e-6)


def test_embedder_reads_the_saved_models_transform(model, model_with_transform):
    with embedder_lib.load_saved_model(model_with_transform[0]) as embedder:
        assert embedder.transform() == embedder_lib.Transform((3, 2, 19, 22), SIZE)
    with embedder_lib.load_saved_model(model[0]) as embedder:
        assert embedder.transform() is None
    assert embedder_lib.Transform.make(None, None) is None
    assert embedder_lib.Transform.from_dict(
        {"crop_box": None, "image_size": None, "resampling": None}) is None
    with pytest.raises(ValueError, match="bicubic"):
        embedder_lib.Transform.from_dict({"crop_box": None, "image_size": 8,
                                          "resampling": "bicubic"})


def test_bad_crop_boxes(model, tmp_path, capsys):
    export_dir, _ = model
    path = write_frame(str(tmp_path / "f.jpg"), np.random.RandomState(3))
    status, _, err = run_cli(capsys, "--model", export_dir, "--crop_box", "1,2,3", path)
    assert status == 2 and "--crop_box" in err
    status, _, err = run_cli(capsys, "--model", export_dir, "--crop_box", "0,0,30,10", path)
    assert status == 1
    assert "crop box 0,0,30,10 lies outside the 24x26 image" in err


def test_pairs_of_faces_already_cropped_get_a_hint(model_with_transform, tmp_path, capsys):
    """The SavedModel's default transform on images smaller than its crop box."""
    export_dir, _ = model_with_transform
    image_dir = str(tmp_path / "faces")
    rng = np.random.RandomState(4)
    for name in ("Person_A", "Person_B"):
        for index in (1, 2):
            path = os.path.join(image_dir, name, f"{name}_{index:04d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(rng.randint(0, 256, (SIZE, SIZE)).astype(np.uint8)).save(path)
    pairs_path = os.path.join(image_dir, "pairs.txt")
    pairs_lib.write_pairs(pairs_path, 2, 1, [("Person_A", 1, "Person_A", 2),
                                              ("Person_A", 1, "Person_B", 1),
                                              ("Person_B", 1, "Person_B", 2),
                                              ("Person_B", 2, "Person_A", 2)])
    args = ["--model", export_dir, "--pairs", pairs_path, "--image_dir", image_dir]
    status, _, err = run_cli(capsys, *args)
    assert status == 1
    assert "lies outside the 8x8 image" in err and "--crop_box=none sends the images" in err
    status, _, err = run_cli(capsys, *(args + ["--crop_box=none"]))
    assert status == 0, err
