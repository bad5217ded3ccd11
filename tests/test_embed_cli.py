"""The embed / verify CLI on a tiny SavedModel built here with the TF1 builder API.

The model: decode -> resize to 8x8 -> (x - 127.5) / 128 -> flatten -> fixed random projection ->
L2-normalise, behind the ``serving_default`` signature the exporters write (``image_bytes`` in,
``embedding`` out). With 8x8 PNG inputs the resize is the identity, so numpy computes the same
embeddings from the pixels: the reference every test compares with.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from absl import flags
from PIL import Image

import cli
from data_tools import conversion
from data_tools import pairs as pairs_lib
from data_tools.insightface import bin_from_pairs
from evaluation import reports as report
from evaluation import verification
from export import embed
from export import embedder as embedder_lib
from tests import real_lfw, tiny_model
from tests.tiny_model import DIM, SIZE, Reference, build_saved_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PROJECTION = tiny_model.projection()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A SavedModel with the image_bytes signature only: flip TTA goes the PNG route."""
    export_dir = str(tmp_path_factory.mktemp("model") / "saved_model")
    build_saved_model(export_dir, PROJECTION)
    return export_dir, Reference(PROJECTION)


@pytest.fixture(scope="module")
def pixels_model(tmp_path_factory):
    """The same model exported with a pixels signature too: flip TTA goes the pixels route."""
    export_dir = str(tmp_path_factory.mktemp("pixels_model") / "saved_model")
    build_saved_model(export_dir, PROJECTION, pixels_signature=True)
    return export_dir, Reference(PROJECTION)


def write_png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path, format="PNG")
    return path


def random_pixels(rng, gray=False):
    shape = (SIZE, SIZE) if gray else (SIZE, SIZE, 3)
    return rng.randint(0, 256, shape).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.RandomState(1)
    root = tmp_path_factory.mktemp("images")
    pixels = {"a.png": random_pixels(rng), "b.png": random_pixels(rng),
              "c.png": random_pixels(rng), "gray.png": random_pixels(rng, gray=True)}
    paths = {name: write_png(str(root / name), p) for name, p in pixels.items()}
    return paths, pixels


def run_cli(capsys, *args):
    status = cli.run_main(embed.define_flags, embed.main, ["embed"] + [str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def run_program(*args):
    """``python -m export.embed ARGS`` from the repository root, without TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "export.embed"] + [str(a) for a in args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def parse_embedding_lines(out):
    rows = {}
    for line in out.strip().splitlines():
        fields = line.split()
        rows[fields[0]] = np.array([float(v) for v in fields[1:]])
    return rows


def parse_value(out, label):
    for line in out.splitlines():
        if line.startswith(label + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label!r} line in:\n{out}")


# ---------------------------------------------------------------------------------------------
# The library API.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("model_kind, flip_method", [("model", "png"),
                                                     ("pixels_model", "pixels")])
def test_embedder_matches_reference(request, images, flip, model_kind, flip_method):
    export_dir, reference = request.getfixturevalue(model_kind)
    paths, pixels = images
    names = sorted(paths)
    with embedder_lib.load_saved_model(export_dir) as embedder:
        assert embedder.embedding_size == DIM
        assert embedder.flip_method == flip_method
        got = embedder.embed_files([paths[n] for n in names], batch_size=3, flip=flip)
        blobs = [open(paths[n], "rb").read() for n in names]
        # Other batch shapes may round differently in float32.
        np.testing.assert_allclose(embedder.embed_bytes(blobs, batch_size=64, flip=flip), got,
                                   atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (len(names), DIM)
    expected = np.stack([reference(pixels[n], flip) for n in names])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # The mirror image changes the embedding (the test would not see a missing flip otherwise).
    with_flip = np.stack([reference(pixels[n], True) for n in names])
    without = np.stack([reference(pixels[n], False) for n in names])
    assert np.abs(with_flip - without).max() > 0.05


@pytest.mark.parametrize("model_kind", ["model", "pixels_model"])
def test_any_size_and_format(request, images, tmp_path, model_kind):
    export_dir, _ = request.getfixturevalue(model_kind)
    _, pixels = images
    # A 16x16 copy with 2x2 blocks resizes back exactly to the 8x8 original (bilinear with
    # half-pixel centres samples the middle of each block). As JPEG, TIFF and PGM it decodes
    # approximately / exactly through TF and PIL.
    big = np.repeat(np.repeat(pixels["a.png"], 2, axis=0), 2, axis=1)
    files = [write_png(str(tmp_path / "small.png"), pixels["a.png"]),
             write_png(str(tmp_path / "big.png"), big)]
    Image.fromarray(big).save(str(tmp_path / "big.tif"))
    Image.fromarray(pixels["gray.png"]).save(str(tmp_path / "gray.pgm"))
    files += [str(tmp_path / "big.tif"), str(tmp_path / "gray.pgm"),
              write_png(str(tmp_path / "gray.png"), pixels["gray.png"])]
    with embedder_lib.load_saved_model(export_dir) as embedder:
        for flip in (False, True):
            got = embedder.embed_files(files, flip=flip)
            np.testing.assert_allclose(got[1], got[0], atol=1e-5)
            np.testing.assert_allclose(got[2], got[0], atol=1e-5)
            np.testing.assert_allclose(got[3], got[4], atol=1e-6)


def test_find_saved_model_picks_the_best_then_the_newest_version(model, tmp_path):
    export_dir, _ = model
    base = tmp_path / "export" / "best"
    for version in ("1600000000", "1700000000", "999"):
        shutil.copytree(export_dir, str(base / version))
    os.makedirs(str(base / "temp-1800000000"))
    (base / "1900000000").mkdir()  # not a SavedModel (export in progress or broken)
    assert embedder_lib.find_saved_model(str(base)) == str(base / "1700000000")
    assert embedder_lib.find_saved_model(str(base / "999")) == str(base / "999")
    # With recorded accuracies the best export wins over the newest.
    for version, value in (("1600000000", 0.95), ("1700000000", 0.90)):
        extra = base / version / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "export_metric.json").write_text(json.dumps({"value": value}))
    assert embedder_lib.find_saved_model(str(base)) == str(base / "1600000000")


def test_report_candidates_order(tmp_path):
    saved_model = str(tmp_path / "run" / "export" / "best" / "1700000000")
    candidates = embedder_lib.report_candidates(saved_model)
    assert candidates == [
        os.path.join(saved_model, "assets.extra", "report.json"),
        str(tmp_path / "run" / "export" / "best" / "eval" / "report.json"),
        str(tmp_path / "run" / "export" / "eval" / "report.json"),
        str(tmp_path / "run" / "eval" / "report.json"),
        str(tmp_path / "eval" / "report.json"),
    ]


# ---------------------------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("names", [["a.png"], ["a.png", "b.png", "gray.png"]])
@pytest.mark.parametrize("flip", [True, False])
def test_prints_embeddings(model, images, capsys, names, flip):
    export_dir, reference = model
    paths, pixels = images
    args = ["--model", export_dir] + [paths[n] for n in names] + ([] if flip else ["--noflip"])
    status, out, _ = run_cli(capsys, *args)
    assert status == 0
    rows = parse_embedding_lines(out)
    assert list(rows) == [paths[n] for n in names]
    for name in names:
        np.testing.assert_allclose(rows[paths[name]], reference(pixels[name], flip), atol=1e-6)


def test_saves_embeddings(model, images, capsys, tmp_path):
    export_dir, reference = model
    paths, pixels = images
    names = ["c.png", "a.png", "b.png"]
    status, out, _ = run_cli(capsys, "--model", export_dir, "--output",
                             tmp_path / "out" / "emb.npy", *[paths[n] for n in names])
    assert status == 0 and "3 embeddings of size 16" in out
    saved = np.load(str(tmp_path / "out" / "emb.npy"))
    assert saved.dtype == np.float32
    np.testing.assert_allclose(saved, [reference(pixels[n], True) for n in names], atol=2e-6)
    listed = (tmp_path / "out" / "emb.names.txt").read_text().splitlines()
    assert listed == [paths[n] for n in names]


def test_two_images_with_threshold(model, images, capsys):
    export_dir, reference = model
    paths, pixels = images
    a, b = reference(pixels["a.png"], True), reference(pixels["b.png"], True)
    distance = float(np.sum((a - b) ** 2))
    for threshold, decision in ((distance + 0.01, "same person"),
                                (distance - 0.01, "different people")):
        status, out, _ = run_cli(capsys, "--model", export_dir, "--threshold", threshold,
                                 paths["a.png"], paths["b.png"])
        assert status == 0
        assert float(parse_value(out, "cosine similarity")) == pytest.approx(np.dot(a, b),
                                                                            abs=1e-5)
        assert float(parse_value(out, "squared L2 distance")) == pytest.approx(distance,
                                                                              abs=1e-5)
        assert parse_value(out, "decision").startswith(decision)
        assert "from --threshold" in parse_value(out, "threshold")


def write_fake_report(directory, threshold, flip=None):
    same = np.tile([True, False], 10)
    metrics = verification.evaluate_distances(np.where(same, 0.5, 1.5), same, n_folds=2)
    metrics["threshold"] = threshold
    extra = None if flip is None else {"flip": flip}
    return report.write_report(metrics, str(directory), extra=extra)[0]


def test_two_images_threshold_from_reports(model, images, capsys, tmp_path):
    export_dir, reference = model
    paths, pixels = images
    run_dir = tmp_path / "run"
    version = run_dir / "export" / "best" / "1700000000"
    shutil.copytree(export_dir, str(version))
    distance = float(np.sum((reference(pixels["a.png"], True)
                             - reference(pixels["b.png"], True)) ** 2))
    argv = ["--model", run_dir / "export" / "best", paths["a.png"], paths["b.png"]]

    # No report anywhere: the similarity without a decision, and why.
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0
    decision = parse_value(out, "decision")
    assert decision.startswith("none (no --threshold given and no report.json found")
    assert str(run_dir / "eval" / "report.json") in decision

    # The training run's eval report, three levels up.
    eval_report = write_fake_report(run_dir / "eval", distance + 0.05)
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0
    assert parse_value(out, "threshold").startswith(f"{distance + 0.05:.6f} (from {eval_report}")
    assert parse_value(out, "decision").startswith("same person")

    # The report stored with the SavedModel wins; it was made without flip TTA: refused with
    # the flag that matches it (issue 26 item 8), and --noflip uses it.
    model_report = write_fake_report(version / "assets.extra", distance - 0.05, flip=False)
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0
    assert parse_value(out, "decision") == (
        f"none (the threshold of {model_report} was measured without flip test-time "
        "augmentation and these embeddings are made with it: --noflip embeds as the report "
        "did, or give --threshold)")
    status, out, _ = run_cli(capsys, *argv, "--noflip")
    assert parse_value(out, "threshold").startswith(f"{distance - 0.05:.6f} (from {model_report}")
    assert "note:" not in out


def test_folder(model, capsys, tmp_path):
    export_dir, reference = model
    rng = np.random.RandomState(2)
    root = tmp_path / "faces"
    expected = {}
    for identity, count in (("Zoe", 2), ("Adam", 3), ("Mia", 1)):
        for i in range(count):
            relpath = f"{identity}/{identity}_{i + 1:04d}.png"
            expected[relpath] = random_pixels(rng)
            write_png(str(root / relpath), expected[relpath])
    (root / "Adam" / "notes.txt").write_text("not an image")
    write_png(str(root / "stray.png"), random_pixels(rng))  # outside any identity folder
    status, out, err = run_cli(capsys, "--model", export_dir, "--folder", root,
                               "--output", tmp_path / "emb", "--batch_size", 4)
    assert status == 0, err
    assert "6 images of 3 identities" in out
    assert "skipped stray.png" in err
    names = (tmp_path / "emb.names.txt").read_text().splitlines()
    assert names == sorted(expected)
    saved = np.load(str(tmp_path / "emb.npy"))
    np.testing.assert_allclose(saved, [reference(expected[n], True) for n in names], atol=2e-6)


def make_pairs_dataset(root, rng, num_identities=6, per_identity=4):
    """Identity folders of noisy copies of one pattern each, and a 2-fold LFW pairs file."""
    pixels = {}
    identities = [f"Person_{chr(ord('A') + i)}" for i in range(num_identities)]
    for name in identities:
        base = rng.randint(40, 216, (SIZE, SIZE, 3))
        for index in range(1, per_identity + 1):
            noisy = np.clip(base + rng.randint(-30, 31, base.shape), 0, 255).astype(np.uint8)
            relpath = f"{name}/{name}_{index:04d}.png"
            write_png(os.path.join(root, relpath), noisy)
            pixels[relpath] = noisy
    per_fold, pairs = 5, []
    for _fold in range(2):
        for _ in range(per_fold):
            name = identities[rng.randint(num_identities)]
            i, j = rng.choice(per_identity, 2, replace=False) + 1
            pairs.append((name, i, name, j))
        for _ in range(per_fold):
            n1, n2 = rng.choice(num_identities, 2, replace=False)
            pairs.append((identities[n1], rng.randint(per_identity) + 1,
                          identities[n2], rng.randint(per_identity) + 1))
    pairs_path = os.path.join(root, "pairs.txt")
    pairs_lib.write_pairs(pairs_path, 2, per_fold, pairs)
    return pairs_path, pairs, pixels


@pytest.mark.parametrize("model_kind, flip", [("model", True), ("model", False),
                                              ("pixels_model", True)])
def test_pairs_evaluation(request, capsys, tmp_path, model_kind, flip):
    export_dir, reference = request.getfixturevalue(model_kind)
    image_dir = str(tmp_path / "lfw")
    pairs_path, pairs, pixels = make_pairs_dataset(image_dir, np.random.RandomState(3))
    argv = ["--model", export_dir, "--pairs", pairs_path, "--image_dir", image_dir,
            "--report_dir", tmp_path / "report", "--batch_size", 7]
    status, out, err = run_cli(capsys, *(argv + ([] if flip else ["--noflip"])))
    assert status == 0, err

    def emb(name, index):
        return reference(pixels[f"{name}/{name}_{index:04d}.png"], flip)

    e1 = np.stack([emb(p[0], p[1]) for p in pairs])
    e2 = np.stack([emb(p[2], p[3]) for p in pairs])
    issame = np.array([p[0] == p[2] for p in pairs])
    expected = verification.evaluate(e1, e2, issame, n_folds=2)
    written = report.read_report(str(tmp_path / "report"))
    assert written["fold_accuracy"] == pytest.approx(expected["fold_accuracy"], abs=1e-12)
    assert written["fold_threshold"] == pytest.approx(expected["fold_threshold"], abs=1e-12)
    for key in ("accuracy", "val", "far", "auc", "eer"):
        assert written[key] == pytest.approx(expected[key], abs=1e-6), key
    assert written["num_pairs"] == 20 and written["n_folds"] == 2
    assert written["extra"]["flip"] is flip
    assert written["extra"]["num_images"] == len({(p[0], p[1]) for p in pairs}
                                                 | {(p[2], p[3]) for p in pairs})
    assert expected["accuracy"] > 0.8  # same-identity pairs really are closer
    assert float(parse_value(out, "accuracy").split()[0]) == pytest.approx(
        expected["accuracy"], abs=1e-4)
    assert os.path.isfile(str(tmp_path / "report" / "roc.png"))


def test_pairs_missing_image_is_an_error(model, capsys, tmp_path):
    export_dir, _ = model
    image_dir = str(tmp_path / "lfw")
    pairs_path, pairs, _ = make_pairs_dataset(image_dir, np.random.RandomState(4))
    missing = f"{pairs[0][0]}/{pairs[0][0]}_{pairs[0][1]:04d}.png"
    os.remove(os.path.join(image_dir, missing))
    status, _, err = run_cli(capsys, "--model", export_dir, "--pairs", pairs_path,
                             "--image_dir", image_dir)
    assert status == 1
    assert "missing" in err and missing.replace(".png", ".jpg") in err


# ---------------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------------

def test_no_saved_model(capsys, tmp_path, images):
    paths, _ = images
    status, _, err = run_cli(capsys, "--model", tmp_path, paths["a.png"])
    assert status == 1
    assert f"no SavedModel in {tmp_path}" in err
    (tmp_path / "export" / "best").mkdir(parents=True)
    status, _, err = run_cli(capsys, "--model", tmp_path, paths["a.png"])
    assert f"try one of: {tmp_path / 'export' / 'best'}" in err
    status, _, err = run_cli(capsys, "--model", tmp_path / "nowhere", paths["a.png"])
    assert status == 1 and "does not exist" in err


@pytest.mark.parametrize("content, reason", [
    (b"\xff\xd8\xff\xe0 truncated JPEG", "JPEG"),  # passes the format check, TF cannot decode
    (b"hello, I am text", "not an image TensorFlow or PIL can read (unknown format)"),
    (b"P5\n8 8\n255\n" + bytes(10), "not an image TensorFlow or PIL can read (OSError"),
    (b"", "empty file"),
])
@pytest.mark.parametrize("model_kind, flip", [("model", True), ("model", False),
                                              ("pixels_model", True)])
def test_corrupt_image_named(request, images, capsys, tmp_path, content, reason, model_kind,
                             flip):
    export_dir, _ = request.getfixturevalue(model_kind)
    paths, _ = images
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    args = ["--model", export_dir, "--batch_size", 8, paths["a.png"], bad, paths["b.png"]]
    status, out, err = run_cli(capsys, *(args + ([] if flip else ["--noflip"])))
    assert status == 1 and out == ""
    assert "cannot use 1 image(s)" in err
    line = [x for x in err.splitlines() if str(bad) in x]
    assert line and reason in line[0]


def test_missing_image_file(model, capsys, tmp_path):
    export_dir, _ = model
    status, _, err = run_cli(capsys, "--model", export_dir, tmp_path / "nope.png")
    assert status == 1 and "nope.png: cannot read: No such file" in err


@pytest.mark.parametrize("args, message", [
    ([], "--model is required"),
    (["--model", "m"], "exactly one of IMAGE arguments, --folder or --pairs (got none)"),
    (["--model", "m", "--folder", "f", "x.png"], "got --folder and IMAGE arguments"),
    (["--model", "m", "--pairs", "p"], "--pairs needs --image_dir"),
    (["--model", "m", "--folder", "f"], "--folder needs --output"),
    (["--model", "m", "--report_dir", "r", "x.png"], "apply to --pairs only"),
    (["--model", "m", "--pairs", "p", "--image_dir", "d", "--output", "o"],
     "--output applies to IMAGE arguments and --folder"),
    (["--model", "m", "--threshold", "1", "x.png"], "exactly two images"),
])
def test_usage_errors(capsys, args, message):
    status, _, err = run_cli(capsys, *args)
    assert status == 2
    assert message in err


@pytest.mark.parametrize("args, message", [
    (["--model", "m", "--batch_size", "0", "x.png"], "batch_size"),
    (["--model", "m", "--no_such_flag", "x.png"], "no_such_flag"),
])
def test_flag_errors(args, message):
    # absl's app.run reports these (exit 1) before main runs.
    with pytest.raises(flags.Error, match=message):
        run_cli(None, *args)


def test_program_help_has_no_tensorflow_banners():
    result = run_program("--help")  # absl's --help exits with status 1
    assert "--folder" in result.stdout and "--threshold" in result.stdout
    for banner in ("oneDNN", "cpu_feature_guard", "This TensorFlow binary"):
        assert banner not in result.stderr


def test_program_entry_point(model, images):
    # run() is what `python -m export.embed` and the circle-embed console script call.
    export_dir, reference = model
    paths, pixels = images
    result = run_program("--model", export_dir, "--threshold", "4", paths["a.png"],
                         paths["c.png"])
    assert result.returncode == 0, result.stderr
    a, c = reference(pixels["a.png"], True), reference(pixels["c.png"], True)
    assert float(parse_value(result.stdout, "cosine similarity")) == pytest.approx(np.dot(a, c),
                                                                                  abs=1e-5)
    assert parse_value(result.stdout, "decision").startswith("same person")


# ---------------------------------------------------------------------------------------------
# Real LFW-a (../shared/data; skipped without it). `make test-slow` runs it.
# ---------------------------------------------------------------------------------------------

LFW_TARBALL, LFW_PAIRS = real_lfw.TARBALL, real_lfw.PAIRS


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.slow  # real data: make test-slow
@real_lfw.skip_without_data
def test_real_lfw_pairs(pixels_model, capsys, tmp_path):
    export_dir, _ = pixels_model
    with tarfile.open(LFW_TARBALL, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isdir() or m.isfile()]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(str(tmp_path), members=members, **safe)
    status, out, err = run_cli(capsys, "--model", export_dir, "--pairs", LFW_PAIRS,
                               "--image_dir", tmp_path / "lfw_gray250",
                               "--report_dir", tmp_path / "report")
    assert status == 0, err
    written = report.read_report(str(tmp_path / "report"))
    assert (written["num_pairs"], written["num_same"], written["n_folds"]) == (6000, 3000, 10)
    assert written["fold_sizes"] == [600] * 10
    assert written["extra"]["num_images"] == 7701
    # A random projection of 8x8 pixels is a weak face matcher, but not a blind one.
    assert 0.5 < written["accuracy"] < 0.8
    assert "pairs: 6000 (3000 same, 3000 different) in 10 folds, 7701 images" in out


def test_pairs_from_a_bin_or_pair_records_match_the_pairs_file(model, capsys, tmp_path):
    export_dir, _ = model
    image_dir = str(tmp_path / "lfw")
    pairs_path, _, _ = make_pairs_dataset(image_dir, np.random.RandomState(5))
    bin_from_pairs.make_bin(pairs_path, image_dir, str(tmp_path / "set.bin"))
    conversion.convert_pairs(pairs_path, image_dir, str(tmp_path / "records"), num_workers=1,
                             progress=False)
    reports = {}
    for name, args in (("txt", ["--pairs", pairs_path, "--image_dir", image_dir]),
                       ("bin", ["--pairs", str(tmp_path / "set.bin"), "--n_folds", 2]),
                       ("records", ["--pairs", str(tmp_path / "records"), "--n_folds", 2])):
        status, _, err = run_cli(capsys, "--model", export_dir, "--report_dir",
                                 tmp_path / name, *args)
        assert status == 0, err
        reports[name] = report.read_report(str(tmp_path / name))
    for name in ("bin", "records"):
        for key in ("fold_accuracy", "fold_threshold", "accuracy", "auc", "num_pairs"):
            assert reports[name][key] == pytest.approx(reports["txt"][key], abs=1e-6), key
    status, _, err = run_cli(capsys, "--model", export_dir, "--pairs", str(tmp_path / "set.bin"),
                             "--image_dir", image_dir)
    assert status == 2 and "--image_dir does not apply" in err


# ---------------------------------------------------------------------------------------------
# embedding_norm (issue 26 item 4).
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("model_kind", ["model", "pixels_model"])
def test_embedder_norms_match_reference(request, images, flip, model_kind):
    """The norm of the projection before normalisation; with flip, the norm of the mean of
    the image's and its mirror's pre-normalisation embeddings (both routes of the mirror)."""
    export_dir, reference = request.getfixturevalue(model_kind)
    paths, pixels = images
    names = sorted(paths)
    with embedder_lib.load_saved_model(export_dir) as embedder:
        assert embedder.has_norm
        got = embedder.embed_files([paths[n] for n in names], batch_size=3, flip=flip,
                                   with_norm=True)
    rgb = {n: np.stack([pixels[n]] * 3, -1) if pixels[n].ndim == 2 else pixels[n]
           for n in names}
    if flip:
        unnormalised = np.stack([(reference.unnormalised(rgb[n])
                                  + reference.unnormalised(rgb[n][:, ::-1])) / 2 for n in names])
    else:
        unnormalised = np.stack([reference.unnormalised(rgb[n]) for n in names])
    np.testing.assert_allclose(got.unnormalised, unnormalised, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.norms, np.linalg.norm(unnormalised, axis=1), rtol=1e-5)
    np.testing.assert_allclose(got.embeddings, [reference(pixels[n], flip) for n in names],
                               atol=2e-6)


def test_print_norm(model, images, capsys, tmp_path):
    export_dir, reference = model
    paths, pixels = images
    status, out, _ = run_cli(capsys, "--model", export_dir, "--print_norm", "--noflip",
                             paths["a.png"], paths["b.png"], paths["c.png"])
    assert status == 0
    rows = parse_embedding_lines(out)
    for name in ("a.png", "b.png", "c.png"):
        row = rows[paths[name]]
        assert row[0] == pytest.approx(np.linalg.norm(reference.unnormalised(pixels[name])),
                                       rel=1e-5)
        np.testing.assert_allclose(row[1:], reference(pixels[name], False), atol=1e-6)
    status, out, _ = run_cli(capsys, "--model", export_dir, "--print_norm", "--threshold=1",
                             paths["a.png"], paths["b.png"])
    assert status == 0
    norms = [float(v) for v in parse_value(out, "embedding norm").split(",")]
    flipped = [np.linalg.norm((reference.unnormalised(pixels[n])
                               + reference.unnormalised(pixels[n][:, ::-1])) / 2)
               for n in ("a.png", "b.png")]
    np.testing.assert_allclose(norms, flipped, rtol=1e-5)


def test_print_norm_of_a_model_without_it(images, capsys, tmp_path):
    export_dir = str(tmp_path / "old")
    build_saved_model(export_dir, PROJECTION, norm_output=False)
    paths, _ = images
    status, _, err = run_cli(capsys, "--model", export_dir, "--print_norm", paths["a.png"])
    assert status == 1
    assert err.strip().splitlines()[-1].endswith(
        "has no 'embedding_norm' output (exported before it existed): export it again")
    with embedder_lib.load_saved_model(export_dir) as embedder:
        assert not embedder.has_norm
        embedder.embed_files([paths["a.png"]])  # the embedding alone still works


@pytest.mark.parametrize("data, flip, expected", [
    ({"threshold": 1.0, "flip": True}, True, 1.0),           # training report, flip eval
    ({"threshold": 1.0, "flip": True}, False, None),         # ... no threshold_single: refused
    ({"threshold": 1.0, "threshold_single": 1.1, "flip": True}, False, 1.1),
    ({"threshold": 1.0, "flip": False}, True, None),         # eval_flip=False run
    ({"threshold": 1.0, "flip": False}, False, 1.0),
    ({"threshold": 1.0, "threshold_single": 1.1}, True, 1.0),  # older training report: flip
    ({"threshold": 1.0, "extra": {"flip": False}}, True, None),  # export.embed --pairs report
])
def test_decision_threshold_checks_the_report_flip(tmp_path, data, flip, expected):
    """Issue 26 item 8: the report's flip setting must be the embeddings'."""
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / "report.json").write_text(json.dumps(data))
    threshold, source, notes = embedder_lib.decision_threshold(str(tmp_path), flip=flip)
    assert threshold == expected, source
    assert not notes
    if expected is None:
        assert "flip test-time augmentation" in source


def test_decision_threshold_of_a_report_without_flip_notes_it(tmp_path):
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / "report.json").write_text(json.dumps({"threshold": 1.0}))
    threshold, _, notes = embedder_lib.decision_threshold(str(tmp_path), flip=True)
    assert threshold == 1.0 and len(notes) == 1 and "does not say" in notes[0]
