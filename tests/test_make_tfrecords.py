"""make_tfrecords.py: folder and pairs conversion, bad input, determinism, crash safety."""

import collections
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from absl import app
from PIL import Image, ImageFile

import cli
from data_tools import conversion, image_files, make_tfrecords, manifest, pairs, shard_writer
from tests import _folder_fixtures as ff

ConversionError = conversion.ConversionError


def shard_files(directory):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".tfrecord"))


def convert(input_dir, output_dir, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    return conversion.convert_folder(str(input_dir), str(output_dir), **kwargs)


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("num_workers", [1, 2])
def test_round_trip_labels_names_counts_pixels(tmp_path, num_workers):
    exts = ("jpg", "png", "pgm", "ppm", "bmp", "tif", "webp", "jpeg")
    counts = [3, 5, 1, 4, 2, 6]
    written = ff.make_face_tree(tmp_path / "faces", counts, exts=exts, gray_every=3)
    out = tmp_path / "records"
    summary = convert(tmp_path / "faces", out, num_shards=3, num_workers=num_workers)

    identities = sorted(ff.identity_name(i) for i in range(len(counts)))
    assert manifest.read_labels(str(out)) == identities
    assert summary["num_images"] == sum(counts) and summary["num_classes"] == len(counts)
    info = manifest.read_manifest(str(out))
    assert (info["kind"], info["num_images"], info["num_classes"]) == ("images", 21, 6)
    assert info["skipped"] == [] and info["dropped_classes"] == 0
    assert [s["file"] for s in info["shards"]] == [
        f"train-{k:05d}-of-00003.tfrecord" for k in range(3)]
    assert manifest.verify_shards(str(out)) == manifest.shard_paths(str(out))
    assert manifest.num_classes(str(out)) == len(counts)

    records = ff.read_records(manifest.shard_paths(str(out)))
    assert [s["records"] for s in info["shards"]] == [7, 7, 7]
    assert sorted(r["filename"].decode() for r in records) == sorted(written)
    per_identity = collections.Counter(r["identity"].decode() for r in records)
    assert [per_identity[name] for name in identities] == [
        counts[int(ord(name[-1]) - ord("A"))] for name in identities]
    for record in records:
        relpath = record["filename"].decode()
        identity = relpath.split("/")[0]
        assert record["identity"].decode() == identity
        assert record["label"] == identities.index(identity)
        source = os.path.join(str(tmp_path / "faces"), relpath)
        ext = relpath.rsplit(".", 1)[1]
        expected_format = "jpeg" if ext in ("jpg", "jpeg") else "png"
        assert record["format"].decode() == expected_format
        if ext in ("jpg", "jpeg", "png"):
            with open(source, "rb") as f:
                assert record["encoded"] == f.read()  # stored as-is, byte for byte
        pixels = written[relpath]
        assert record["channels"] == (1 if pixels.ndim == 2 else 3)
        assert (record["height"], record["width"]) == pixels.shape[:2]
        np.testing.assert_array_equal(record["pixels"], ff.pil_rgb(source))
        if ext not in ("jpg", "jpeg"):  # lossless formats: equal to the array we wrote
            rgb = pixels if pixels.ndim == 3 else np.stack([pixels] * 3, axis=-1)
            np.testing.assert_array_equal(record["pixels"], rgb)
    # Identities are mixed across shards, in a shuffled order.
    shard_of = {}
    for k, path in enumerate(manifest.shard_paths(str(out))):
        for record in ff.read_records([path]):
            shard_of.setdefault(record["identity"], set()).add(k)
    assert max(len(shards) for shards in shard_of.values()) > 1
    labels = [r["label"] for r in records]
    assert labels != sorted(labels)


@pytest.mark.parametrize("ext", ["pgm", "ppm", "bmp", "tif", "webp"])
def test_lossless_reencode_to_png(tmp_path, ext):
    rng = np.random.RandomState(7)
    pixels = ff.random_pixels(rng, 24, gray=(ext == "pgm"), height=20)
    ff.save_image(str(tmp_path / "in" / "A" / ("A_0001." + ext)), pixels, ext)
    convert(tmp_path / "in", tmp_path / "out")
    (record,) = ff.read_records(shard_files(str(tmp_path / "out")))
    assert record["format"] == b"png"
    with Image.open(io.BytesIO(record["encoded"])) as image:
        assert image.format == "PNG"
        assert image.mode == ("L" if ext == "pgm" else "RGB")  # grayscale stays grayscale
        np.testing.assert_array_equal(np.asarray(image), pixels)
    assert record["channels"] == (1 if ext == "pgm" else 3)
    assert (record["height"], record["width"]) == (20, 24)


def test_unusual_png_and_jpeg_modes_become_8bit_png(tmp_path):
    rng = np.random.RandomState(3)
    base = ff.random_pixels(rng, 16)
    folder = tmp_path / "in" / "A"
    folder.mkdir(parents=True)
    rgba = Image.fromarray(np.dstack([base, np.full((16, 16), 128, np.uint8)]), "RGBA")
    rgba.save(str(folder / "A_0001.png"))
    palette = Image.fromarray(base).quantize(colors=16)
    palette.save(str(folder / "A_0002.png"))
    gray16 = base[..., 0].astype(np.uint16) * 256 + 77  # high byte = base
    Image.fromarray(gray16).save(str(folder / "A_0003.png"))
    Image.fromarray(base).convert("CMYK").save(str(folder / "A_0004.jpg"), quality=95)
    convert(tmp_path / "in", tmp_path / "out")
    records = {r["filename"].decode(): r for r in ff.read_records(
        shard_files(str(tmp_path / "out")))}
    assert all(r["format"] == b"png" for r in records.values())
    np.testing.assert_array_equal(records["A/A_0001.png"]["pixels"], base)  # alpha dropped
    np.testing.assert_array_equal(records["A/A_0002.png"]["pixels"],
                                  np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(records["A/A_0003.png"]["pixels"][..., 0], base[..., 0])
    assert records["A/A_0003.png"]["channels"] == 1
    np.testing.assert_array_equal(records["A/A_0004.jpg"]["pixels"],
                                  ff.pil_rgb(str(folder / "A_0004.jpg")))


def test_crop_box_and_image_size(tmp_path):
    rng = np.random.RandomState(5)
    gray = ff.random_pixels(rng, 40, gray=True, height=30)
    color = ff.random_pixels(rng, 40, height=30)
    ff.save_image(str(tmp_path / "in" / "A" / "A_0001.png"), gray, "png")
    ff.save_image(str(tmp_path / "in" / "A" / "A_0002.png"), color, "png")
    ff.save_image(str(tmp_path / "in" / "B" / "B_0001.png"), ff.random_pixels(rng, 12), "png")
    summary = convert(tmp_path / "in", tmp_path / "out", crop_box="4,2,36,26", image_size=16)
    assert summary["num_images"] == 2
    assert summary["skipped"] == [{"path": "B/B_0001.png",
                                   "reason": "crop box 4,2,36,26 lies outside the 12x12 image"}]
    records = {r["filename"].decode(): r for r in ff.read_records(
        shard_files(str(tmp_path / "out")))}
    for name, pixels in (("A/A_0001.png", gray), ("A/A_0002.png", color)):
        # Reference: box (32x24) -> centred 24x24 square -> 16x16, Lanczos.
        square = pixels[2:26, 4:36][:, 4:28]
        mode = "L" if pixels.ndim == 2 else "RGB"
        lanczos = getattr(Image, "Resampling", Image).LANCZOS
        expected = np.asarray(Image.fromarray(square, mode).resize((16, 16), lanczos))
        record = records[name]
        assert (record["height"], record["width"], record["format"]) == (16, 16, b"png")
        assert record["channels"] == (1 if mode == "L" else 3)
        got = record["pixels"] if mode == "RGB" else record["pixels"][..., 0]
        np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------ bad files


def write_bad_files(root):
    """Broken or odd files next to good ones; returns {relpath: reason prefix} of the skips."""
    folder = os.path.join(root, "Person_A")
    names = sorted(os.listdir(folder))
    with open(os.path.join(folder, [n for n in names if n.endswith(".jpg")][0]), "rb") as f:
        jpeg = f.read()
    with open(os.path.join(folder, [n for n in names if n.endswith(".png")][0]), "rb") as f:
        png = f.read()
    junk = np.random.RandomState(0).randint(0, 256, 500).astype(np.uint8).tobytes()
    files = {
        "Person_A/empty.jpg": b"",
        "Person_A/truncated.jpg": jpeg[: len(jpeg) // 2],
        "Person_A/cut_by_two_bytes.jpg": jpeg[:-2],
        "Person_A/truncated.png": png[: len(png) - 30],
        "Person_B/garbage.png": png[:8] + junk,  # PNG signature, then junk
        "Person_B/text.jpeg": b"this is not an image\n" * 10,
        "Person_B/Thumbs.db": b"\x00" * 64,
        "Person_B/notes.txt": b"ignored",
        "Person_B/.DS_Store": b"\x00\x01",
        "Person_B/._Person_B_0001.jpg": b"\x00\x05\x16\x07",  # macOS resource fork
        "loose.jpg": jpeg,
    }
    for relpath, data in files.items():
        with open(os.path.join(root, relpath), "wb") as f:
            f.write(data)
    os.mkfifo(os.path.join(root, "Person_B", "fifo.png"))
    return {
        "Person_A/empty.jpg": "empty file",
        "Person_A/truncated.jpg": "corrupt or truncated",
        "Person_A/cut_by_two_bytes.jpg": "corrupt or truncated",
        "Person_A/truncated.png": "corrupt",
        "Person_B/garbage.png": "corrupt PNG header",
        "Person_B/text.jpeg": "not an image",
        "Person_B/fifo.png": "not a regular file",
        "loose.jpg": "image outside an identity folder",
    }


def test_bad_files_are_skipped_and_reported(tmp_path):
    written = ff.make_face_tree(str(tmp_path / "in"), [3, 2, 1], exts=("jpg", "png"))
    expected = write_bad_files(str(tmp_path / "in"))
    # An identity whose only file is broken has no valid image: it is not a class.
    (tmp_path / "in" / "Person_D").mkdir()
    (tmp_path / "in" / "Person_D" / "Person_D_0001.jpg").write_bytes(b"\xff\xd8\xff")
    expected["Person_D/Person_D_0001.jpg"] = "corrupt"
    summary = convert(tmp_path / "in", tmp_path / "out", num_workers=2)
    info = manifest.read_manifest(str(tmp_path / "out"))
    assert [item["path"] for item in info["skipped"]] == sorted(expected)
    for item in info["skipped"]:
        assert item["reason"].startswith(expected[item["path"]]), item
    assert (info["num_images"], info["num_classes"], info["dropped_classes"]) == (6, 3, 1)
    assert summary["num_skipped"] == len(expected)
    assert manifest.read_labels(str(tmp_path / "out")) == ["Person_A", "Person_B", "Person_C"]
    names = sorted(r["filename"].decode() for r in ff.read_records(
        shard_files(str(tmp_path / "out"))))
    assert names == sorted(written)


def test_strict_fails_listing_every_skip_and_writes_nothing(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [3, 2, 1], exts=("jpg", "png"))
    expected = write_bad_files(str(tmp_path / "in"))
    with pytest.raises(ConversionError) as error:
        convert(tmp_path / "in", tmp_path / "out", strict=True)
    for relpath in expected:
        assert relpath in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("limit", [600, 100])  # warning range (<= 2x limit) and error range
def test_decompression_bomb_guard_skips(tmp_path, monkeypatch, limit):
    ff.make_face_tree(str(tmp_path / "in"), [1], exts=("png",), size=32)  # 1024 pixels
    ff.save_image(str(tmp_path / "in" / "Person_A" / "small.png"),
                  ff.random_pixels(np.random.RandomState(0), 8), "png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    summary = convert(tmp_path / "in", tmp_path / "out")
    assert summary["num_images"] == 1
    (skip,) = summary["skipped"]
    assert skip["path"] == "Person_A/Person_A_0001.png"
    assert "decompression-bomb" in skip["reason"]


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"),
    ("file", "is not a directory"),
    ("empty", "is empty"),
    ("no_images", "holds no images"),
    ("only_corrupt", "no valid image"),
])
def test_bad_input_dir_raises_and_writes_nothing(tmp_path, setup, message):
    input_dir = tmp_path / "in"
    if setup == "file":
        input_dir.write_text("x")
    elif setup != "missing":
        input_dir.mkdir()
    if setup == "no_images":
        (input_dir / "Person_A").mkdir()
        (input_dir / "Person_A" / "Thumbs.db").write_bytes(b"x")
    if setup == "only_corrupt":
        (input_dir / "Person_A").mkdir()
        (input_dir / "Person_A" / "Person_A_0001.jpg").write_bytes(b"")
    with pytest.raises(ConversionError, match=message):
        convert(input_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_shards=0), "--num_shards"),
    (dict(num_shards=99), "would be empty"),
    (dict(image_size=-1), "--image_size"),
    (dict(crop_box="1,2,3"), "--crop_box"),
    (dict(crop_box="5,0,4,10"), "--crop_box"),
    (dict(min_images_per_class=0), "--min_images_per_class"),
    (dict(min_images_per_class=9), "no identity has"),
    (dict(name="a/b"), "--name"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    ff.make_face_tree(str(tmp_path / "in"), [2, 1])
    with pytest.raises(ConversionError, match=message):
        convert(tmp_path / "in", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_min_images_per_class_drops_small_identities(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [1, 3, 2, 1, 4])
    summary = convert(tmp_path / "in", tmp_path / "out", min_images_per_class=2)
    assert (summary["num_classes"], summary["num_images"]) == (3, 9)
    assert (summary["dropped_classes"], summary["dropped_images"]) == (2, 2)
    info = manifest.read_manifest(str(tmp_path / "out"))
    assert (info["dropped_classes"], info["dropped_images"]) == (2, 2)
    labels = manifest.read_labels(str(tmp_path / "out"))
    assert labels == ["Person_B", "Person_C", "Person_E"]
    records = ff.read_records(shard_files(str(tmp_path / "out")))
    assert sorted(set(r["label"] for r in records)) == [0, 1, 2]
    assert all(labels[r["label"]] == r["identity"].decode() for r in records)


def test_scan_nested_hidden_and_undecodable_names(tmp_path):
    root = tmp_path / "in"
    ff.make_face_tree(str(root), [1, 1], exts=("png",))
    pixels = ff.random_pixels(np.random.RandomState(1), 8)
    ff.save_image(str(root / "Person_A" / "session2" / "x.png"), pixels, "png")
    ff.save_image(str(root / "Person_A" / ".cache" / "y.png"), pixels, "png")
    ff.save_image(str(root / ".trash" / "z.png"), pixels, "png")
    with open(os.path.join(os.fsencode(str(root / "Person_B")), b"bad\xff.png"), "wb") as f:
        f.write(b"")
    scan = image_files.scan_identity_folders(str(root))
    assert [(e.identity, e.relpath) for e in scan.entries] == [
        ("Person_A", "Person_A/Person_A_0001.png"), ("Person_A", "Person_A/session2/x.png"),
        ("Person_B", "Person_B/Person_B_0001.png")]
    assert [reason for _, reason in scan.skipped] == ["name is not valid UTF-8"]


def test_concurrent_run_on_same_output_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    ff.make_face_tree(str(tmp_path / "in"), [2])
    out = tmp_path / "out"
    out.mkdir()
    with open(str(out / conversion.LOCK_NAME), "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConversionError, match="another make_tfrecords run"):
            convert(tmp_path / "in", out)
    convert(tmp_path / "in", out)
    assert manifest.verify_shards(str(out))


# ------------------------------------------------------------------ determinism and resume


def test_same_input_options_seed_give_identical_bytes(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [4, 3, 5, 2], exts=("jpg", "pgm", "png"))
    convert(tmp_path / "in", tmp_path / "a", num_shards=3, seed=11)
    convert(tmp_path / "in", tmp_path / "b", num_shards=3, seed=11, num_workers=2)
    convert(tmp_path / "in", tmp_path / "c", num_shards=3, seed=12)
    a, b, c = (ff.read_dir_bytes(str(tmp_path / d)) for d in "abc")
    assert a == b  # shards, labels.txt, manifest.json and .plan.json
    shards_a = [a[k] for k in sorted(a) if k.endswith(".tfrecord")]
    shards_c = [c[k] for k in sorted(c) if k.endswith(".tfrecord")]
    assert shards_a != shards_c  # another seed, another order ...
    key = lambda r: r["filename"]  # noqa: E731
    records_a = sorted(ff.read_records(shard_files(str(tmp_path / "a"))), key=key)
    records_c = sorted(ff.read_records(shard_files(str(tmp_path / "c"))), key=key)
    for ra, rc in zip(records_a, records_c):  # ... of the same records
        assert ra["encoded"] == rc["encoded"] and ra["label"] == rc["label"]


def test_resume_after_simulated_crash(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [3, 4, 2, 5, 3], exts=("jpg", "ppm"))
    convert(tmp_path / "in", tmp_path / "reference", num_shards=4)
    out = tmp_path / "out"
    convert(tmp_path / "in", out, num_shards=4)
    shards = shard_files(str(out))
    with open(shards[0], "rb") as f:
        first = f.read()
    # The state a crash can leave: shard 2 not renamed yet (half-written temp file), shard 3
    # never started, no manifest. Shard 1 is damaged on disk on top of that.
    os.remove(shards[2])
    os.remove(shards[3])
    os.remove(str(out / "manifest.json"))
    tmp = out / (f".{os.path.basename(shards[2])}.tmp-99999")
    tmp.write_bytes(first[: len(first) // 2])
    with open(shards[1], "r+b") as f:
        f.seek(20)
        f.write(b"\x00\x00\x00")
    with pytest.raises(manifest.ManifestError, match="not a finished conversion"):
        manifest.read_manifest(str(out))
    summary = convert(tmp_path / "in", out, num_shards=4)
    assert (summary["shards_kept"], summary["shards_written"]) == (1, 3)
    assert ff.read_dir_bytes(str(out)) == ff.read_dir_bytes(str(tmp_path / "reference"))
    assert not [f for f in os.listdir(str(out)) if ".tmp-" in f]
    # A complete output re-run with the same options is left as it is.
    summary = convert(tmp_path / "in", out, num_shards=4)
    assert (summary["shards_kept"], summary["shards_written"]) == (4, 0)


def test_changed_input_rewrites_affected_shards(tmp_path):
    written = ff.make_face_tree(str(tmp_path / "in"), [3, 3], exts=("png",))
    out = tmp_path / "out"
    convert(tmp_path / "in", out, num_shards=2)
    # Same name and size, other pixels: only the content hash in the plan can tell.
    relpath = sorted(written)[0]
    pixels = 255 - written[relpath]
    ff.save_image(str(tmp_path / "in" / relpath), pixels, "png")
    summary = convert(tmp_path / "in", out, num_shards=2)
    convert(tmp_path / "in", tmp_path / "fresh", num_shards=2)
    assert summary["shards_written"] >= 1
    assert ff.read_dir_bytes(str(out)) == ff.read_dir_bytes(str(tmp_path / "fresh"))


def test_sigkill_mid_run_then_rerun_gives_identical_shards(tmp_path):
    # Re-encoding (--image_size) makes each shard take a few milliseconds, so the run is still
    # writing when the first shard appears.
    ff.make_face_tree(str(tmp_path / "in"), [20] * 16, exts=("png", "jpg"))
    args = [f"--input_dir={tmp_path / 'in'}", "--num_shards=16", "--image_size=24",
            "--num_workers=1"]
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, ff.SCRIPT, f"--output_dir={out}"] + args,
                               cwd=ff.REPO_ROOT, env=ff.script_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:
            if out.is_dir() and shard_files(str(out)):
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "the conversion ended before it was killed"
    finished = shard_files(str(out))
    assert 1 <= len(finished) < 16 and not (out / "manifest.json").exists()

    summary = conversion.convert_folder(str(tmp_path / "in"), str(out), num_shards=16,
                                        image_size=24, num_workers=1, progress=False)
    assert summary["shards_kept"] >= 1
    convert(tmp_path / "in", tmp_path / "reference", num_shards=16, image_size=24)
    assert ff.read_dir_bytes(str(out)) == ff.read_dir_bytes(str(tmp_path / "reference"))
    assert manifest.verify_shards(str(out))


def test_other_options_refused_unless_overwrite(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [2, 3, 2])
    out = tmp_path / "out"
    convert(tmp_path / "in", out, num_shards=2, seed=1)
    before = ff.read_dir_bytes(str(out))
    with pytest.raises(ConversionError, match=r"other options \(seed 1 -> 2\)"):
        convert(tmp_path / "in", out, num_shards=2, seed=2)
    assert ff.read_dir_bytes(str(out)) == before
    convert(tmp_path / "in", out, num_shards=3, seed=2, overwrite=True)
    convert(tmp_path / "in", tmp_path / "fresh", num_shards=3, seed=2)
    assert ff.read_dir_bytes(str(out)) == ff.read_dir_bytes(str(tmp_path / "fresh"))


def test_non_empty_unrelated_output_dir_refused(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="not empty"):
        convert(tmp_path / "in", out)
    convert(tmp_path / "in", out, overwrite=True)
    assert (out / "precious.txt").read_text() == "keep me"  # --overwrite deletes only ours
    assert manifest.verify_shards(str(out))


def test_shard_verification_names_the_bad_shard(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [3, 3])
    convert(tmp_path / "in", tmp_path / "out", num_shards=2)
    path = shard_files(str(tmp_path / "out"))[1]
    with open(path, "r+b") as f:
        f.seek(30)
        f.write(b"\xff")
    with pytest.raises(manifest.ManifestError, match=os.path.basename(path)):
        manifest.verify_shards(str(tmp_path / "out"))


def test_default_num_shards_follows_input_size(tmp_path, monkeypatch):
    ff.make_face_tree(str(tmp_path / "in"), [5, 5], exts=("png",))
    total = sum(os.path.getsize(os.path.join(d, f))
                for d, _, fs in os.walk(str(tmp_path / "in")) for f in fs)
    monkeypatch.setattr(shard_writer, "TARGET_SHARD_BYTES", total // 4)
    summary = convert(tmp_path / "in", tmp_path / "out")
    assert summary["num_shards"] == 4
    assert summary["num_images"] == 10


# ------------------------------------------------------------------ work per image


def _count_image_work(monkeypatch, root):
    """Count, per relpath under ``root``, file reads, PIL header parses and full decodes."""
    relpath_of = {}
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            with open(path, "rb") as f:
                relpath_of[f.read()] = os.path.relpath(path, root).replace(os.sep, "/")
    counts = collections.defaultdict(collections.Counter)
    read_file, open_image = image_files._read_file, Image.open
    decode = ImageFile.ImageFile.load

    def counting_read(path):
        counts[os.path.relpath(path, root).replace(os.sep, "/")]["reads"] += 1
        return read_file(path)

    def counting_open(fp, *args, **kwargs):
        counts[relpath_of[fp.getvalue()]]["headers"] += 1
        return open_image(fp, *args, **kwargs)

    def counting_load(image):
        if image.tile:  # a decode, not the no-op load() of an image already in memory
            counts[relpath_of[image.fp.getvalue()]]["decodes"] += 1
        return decode(image)

    monkeypatch.setattr(image_files, "_read_file", counting_read)
    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    return counts


@pytest.mark.parametrize("image_size", [None, 24])
def test_each_image_is_read_for_the_check_and_the_write_and_decoded_once(tmp_path, monkeypatch,
                                                                         image_size):
    """The check reads and decodes every file once (PNG: one more header for verify()); the
    write reads it again and decodes only what it re-encodes."""
    written = ff.make_face_tree(str(tmp_path / "in"), [2, 2, 2], exts=("jpg", "png", "ppm"))
    assert sorted(r.rsplit(".", 1)[1] for r in written) == ["jpg", "jpg", "png", "png", "ppm",
                                                            "ppm"]
    jpeg = (tmp_path / "in" / min(r for r in written if r.endswith(".jpg"))).read_bytes()
    (tmp_path / "in" / "Person_A" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    counts = _count_image_work(monkeypatch, str(tmp_path / "in"))
    summary = convert(tmp_path / "in", tmp_path / "out", image_size=image_size)
    assert summary["num_images"] == 6 and summary["num_skipped"] == 1
    monkeypatch.undo()
    reencode = 1 if image_size else 0
    expected = {"jpg": {"reads": 2, "headers": 1 + reencode, "decodes": 1 + reencode},
                "png": {"reads": 2, "headers": 2 + reencode, "decodes": 1 + reencode},
                "ppm": {"reads": 2, "headers": 2, "decodes": 2}}
    assert sorted(counts) == sorted(
        os.path.relpath(os.path.join(d, f), str(tmp_path / "in")).replace(os.sep, "/")
        for d, _, fs in os.walk(str(tmp_path / "in")) for f in fs)
    for relpath, count in counts.items():
        if relpath.endswith("truncated.jpg"):
            assert count == {"reads": 1, "headers": 1, "decodes": 1}, relpath
        else:
            assert count == expected[relpath.rsplit(".", 1)[1]], (relpath, count)
    for record in ff.read_records(shard_files(str(tmp_path / "out"))):
        source = str(tmp_path / "in" / record["filename"].decode())
        if image_size is None and not source.endswith(".ppm"):
            with open(source, "rb") as f:
                assert record["encoded"] == f.read()
        else:
            expected_pixels = ff.pil_rgb(source)
            if image_size is not None:
                with Image.open(source) as image:
                    expected_pixels = np.asarray(image.convert("RGB").resize(
                        (image_size, image_size), getattr(Image, "Resampling", Image).LANCZOS))
            np.testing.assert_array_equal(record["pixels"], expected_pixels)


def _png_with_bad_crc(pixels, chunk):
    """A PNG whose ``chunk`` (IDAT, or a tEXt after it) has a wrong CRC; its pixels decode."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    if chunk == b"tEXt":
        body = b"tEXtkey\x00value"
        crc = (zlib.crc32(body) ^ 1) & 0xFFFFFFFF
        iend = bytes(data).rindex(b"IEND") - 4
        data[iend:iend] = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", crc)
    else:
        start = bytes(data).index(chunk)
        length = struct.unpack(">I", bytes(data[start - 4:start]))[0]
        data[start + 4 + length] ^= 0xFF  # first CRC byte
    return bytes(data)


@pytest.mark.parametrize("chunk", [b"IDAT", b"tEXt"])
def test_png_with_a_wrong_chunk_crc_is_skipped(tmp_path, chunk):
    """load() alone skips the CRCs from IDAT on: PNG files still go through verify()."""
    pixels = ff.random_pixels(np.random.RandomState(2), 16)
    data = _png_with_bad_crc(pixels, chunk)
    with Image.open(io.BytesIO(data)) as image:  # the pixels themselves are intact
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), pixels)
    ff.make_face_tree(str(tmp_path / "in"), [2], exts=("png",))
    (tmp_path / "in" / "Person_A" / "bad_crc.png").write_bytes(data)
    summary = convert(tmp_path / "in", tmp_path / "out")
    assert summary["num_images"] == 2
    (skip,) = summary["skipped"]
    assert skip["path"] == "Person_A/bad_crc.png"
    assert skip["reason"].startswith("corrupt image") and "checksum" in skip["reason"], skip


@pytest.mark.parametrize("num_workers", [1, 2])
@pytest.mark.parametrize("ext, change, message", [
    ("jpg", "rewrite", "changed during the conversion"),
    ("ppm", "rewrite", "changed during the conversion"),
    ("jpg", "delete", "became unreadable during the conversion .cannot read"),
    ("ppm", "delete", "became unreadable during the conversion .cannot read"),
])
def test_file_changed_between_check_and_write_stops_the_conversion(tmp_path, monkeypatch,
                                                                   num_workers, ext, change,
                                                                   message):
    """The write pass stores only the bytes the check validated (same sha256)."""
    written = ff.make_face_tree(str(tmp_path / "in"), [3, 3], exts=("jpg", "ppm"))
    relpath = sorted(r for r in written if r.endswith(ext))[0]
    check_images = conversion._check_images

    def check_then_change(*args, **kwargs):
        result = check_images(*args, **kwargs)
        path = str(tmp_path / "in" / relpath)
        if change == "delete":
            os.remove(path)
        else:  # another valid image under the same name
            ff.save_image(path, 255 - written[relpath], ext)
        return result

    monkeypatch.setattr(conversion, "_check_images", check_then_change)
    with pytest.raises(ConversionError, match=f"{relpath} {message}"):
        convert(tmp_path / "in", tmp_path / "out", num_workers=num_workers)
    assert not (tmp_path / "out" / "manifest.json").exists()


# ------------------------------------------------------------------ pairs


def write_pairs_tree(root, with_missing=False):
    """Identities A..F, 3 images each; 2 folds of 2 matched + 2 mismatched pairs."""
    ff.make_face_tree(root, [3] * 6, exts=("jpg", "pgm"))
    lines = ["2\t2",
             "Person_A\t1\t2", "Person_B\t2\t3",
             "Person_A\t3\tPerson_C\t1", "Person_B\t1\tPerson_C\t2",
             "Person_D\t1\t3", f"Person_E\t1\t{9 if with_missing else 2}",
             "Person_D\t2\tPerson_F\t1", f"Person_E\t3\tPerson_F\t{7 if with_missing else 3}"]
    path = os.path.join(root, "pairs.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def convert_pairs(pairs_path, input_dir, output_dir, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    return conversion.convert_pairs(pairs_path, str(input_dir), str(output_dir), **kwargs)


def test_pairs_round_trip(tmp_path):
    pairs_path = write_pairs_tree(str(tmp_path / "lfw"))
    summary = convert_pairs(pairs_path, tmp_path / "lfw", tmp_path / "out", num_shards=3)
    assert (summary["num_pairs"], summary["fold_sizes"], summary["missing_pairs"]) == (8, [4, 4], 0)
    info = manifest.read_manifest(str(tmp_path / "out"))
    assert (info["kind"], info["num_pairs"], info["num_folds"], info["fold_sizes"]) == (
        "pairs", 8, 2, [4, 4])
    assert not (tmp_path / "out" / "labels.txt").exists()
    convert_pairs(pairs_path, tmp_path / "lfw", tmp_path / "again", num_shards=3, num_workers=2)
    assert ff.read_dir_bytes(str(tmp_path / "out")) == ff.read_dir_bytes(str(tmp_path / "again"))
    records = ff.read_records(manifest.shard_paths(str(tmp_path / "out")), kind="pairs")
    parsed = pairs.read_pairs(pairs_path)
    assert [r["index"] for r in records] == list(range(8))  # file order, across shards
    for record, pair in zip(records, parsed.pairs):
        assert record["fold"] == pair.fold == record["index"] // 4
        assert record["issame"] == int(pair.issame)
        for key, name, index in (("image1", pair.name1, pair.index1),
                                 ("image2", pair.name2, pair.index2)):
            image = record[key]
            relpath = image["filename"].decode()
            assert relpath.startswith(f"{name}/{name}_{index:04d}.")
            assert image["identity"].decode() == name
            np.testing.assert_array_equal(image["pixels"],
                                          ff.pil_rgb(str(tmp_path / "lfw" / relpath)))


def test_pairs_missing_images_error_lists_all(tmp_path):
    pairs_path = write_pairs_tree(str(tmp_path / "lfw"), with_missing=True)
    with pytest.raises(pairs.MissingPairImagesError) as error:
        convert_pairs(pairs_path, tmp_path / "lfw", tmp_path / "out")
    assert error.value.missing == ["Person_E/Person_E_0009.jpg", "Person_F/Person_F_0007.jpg"]
    assert "Person_E/Person_E_0009.jpg" in str(error.value)
    assert "Person_F/Person_F_0007.jpg" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_pairs_allow_missing_skips_and_numbers_the_kept_pairs(tmp_path):
    pairs_path = write_pairs_tree(str(tmp_path / "lfw"), with_missing=True)
    # An unreadable image counts like a missing one.
    (tmp_path / "lfw" / "Person_A" / "Person_A_0002.jpg").write_bytes(b"")
    summary = convert_pairs(pairs_path, tmp_path / "lfw", tmp_path / "out",
                            allow_missing_pairs=True)
    assert (summary["num_pairs"], summary["missing_pairs"], summary["fold_sizes"]) == (
        5, 3, [3, 2])
    info = manifest.read_manifest(str(tmp_path / "out"))
    assert info["missing_pairs"] == 3
    assert [s["path"] for s in info["skipped"]] == [
        "Person_A/Person_A_0002.jpg", "Person_E/Person_E_0009.jpg",
        "Person_F/Person_F_0007.jpg"]
    records = ff.read_records(shard_files(str(tmp_path / "out")), kind="pairs")
    # Indices count the kept pairs (the evaluation stores pair i in row i of num_pairs rows).
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["fold"] for r in records] == [0, 0, 0, 1, 1]


def test_pairs_unreadable_image_is_an_error_without_allow(tmp_path):
    pairs_path = write_pairs_tree(str(tmp_path / "lfw"))
    (tmp_path / "lfw" / "Person_A" / "Person_A_0002.jpg").write_bytes(b"")
    with pytest.raises(ConversionError, match="Person_A/Person_A_0002.jpg: empty file"):
        convert_pairs(pairs_path, tmp_path / "lfw", tmp_path / "out")
    with pytest.raises(ConversionError, match="--strict"):
        convert_pairs(pairs_path, tmp_path / "lfw", tmp_path / "out", strict=True,
                      allow_missing_pairs=True)
    assert not (tmp_path / "out").exists()


def test_pairs_malformed_file_names_the_line(tmp_path):
    pairs_path = write_pairs_tree(str(tmp_path / "lfw"))
    with open(pairs_path) as f:
        lines = f.read().split("\n")
    lines[3] = "Person_A\t3\tPerson_C"
    with open(pairs_path, "w") as f:
        f.write("\n".join(lines))
    with pytest.raises(pairs.PairsFormatError, match="line 4"):
        convert_pairs(pairs_path, tmp_path / "lfw", tmp_path / "out")


# ------------------------------------------------------------------ command line


def run_main(args):
    """``main`` in-process with its own FlagValues (a subprocess costs a TensorFlow import)."""
    return cli.run_main(make_tfrecords.define_flags, make_tfrecords.main,
                        ["make_tfrecords.py"] + list(args))


def test_main_converts_and_reports(tmp_path, capsys):
    ff.make_face_tree(str(tmp_path / "in"), [2, 3])
    (tmp_path / "in" / "Person_A" / "broken.jpg").write_bytes(b"")
    assert run_main([f"--input_dir={tmp_path / 'in'}", f"--output_dir={tmp_path / 'out'}",
                     "--num_shards=2", "--num_workers=1"]) == 0
    out, err = capsys.readouterr()
    assert "5 images of 2 identities -> 2 shard(s)" in out and "1 file(s) skipped" in out
    assert "skipped Person_A/broken.jpg: empty file" in err
    assert manifest.num_classes(str(tmp_path / "out")) == 2
    assert os.path.basename(manifest.shard_paths(str(tmp_path / "out"))[0]) == (
        "train-00000-of-00002.tfrecord")

    assert run_main([f"--input_dir={tmp_path / 'in'}", f"--output_dir={tmp_path / 'out'}",
                     "--num_shards=2", "--num_workers=1", "--seed=3"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "other options (seed 0 -> 3)" in err


def test_main_pairs_mode(tmp_path, capsys):
    pairs_path = write_pairs_tree(str(tmp_path / "lfw"), with_missing=True)
    base = [f"--pairs={pairs_path}", f"--input_dir={tmp_path / 'lfw'}", "--num_workers=1"]
    assert run_main(base + [f"--output_dir={tmp_path / 'a'}"]) == 1
    _, err = capsys.readouterr()
    assert "Person_E/Person_E_0009.jpg" in err and "Person_F/Person_F_0007.jpg" in err
    assert not (tmp_path / "a").exists()
    assert run_main(base + [f"--output_dir={tmp_path / 'b'}", "--allow_missing_pairs"]) == 0
    out, err = capsys.readouterr()
    assert "6 pairs in 2 folds [4, 2]" in out
    assert "skipped Person_E/Person_E_0009.jpg: missing" in err
    info = manifest.read_manifest(str(tmp_path / "b"))
    assert [s["file"] for s in info["shards"]] == ["pairs-00000-of-00001.tfrecord"]
    assert (info["num_pairs"], info["missing_pairs"]) == (6, 2)


@pytest.mark.parametrize("args", [["--pairs=p.txt", "--seed=1"],
                                  ["--pairs=p.txt", "--min_images_per_class=2"],
                                  ["--allow_missing_pairs"], ["extra_argument"]])
def test_main_usage_errors(tmp_path, args):
    with pytest.raises(app.UsageError):
        run_main([f"--input_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}"] + args)


def test_script_reports_bad_input_in_one_line(tmp_path):
    # `python data_tools/make_tfrecords.py` from the repo root: the script finds its package.
    result = ff.run_script([f"--input_dir={tmp_path / 'nowhere'}",
                            f"--output_dir={tmp_path / 'out'}"])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == ["make_tfrecords: error: --input_dir %s does not exist"
                      % (tmp_path / "nowhere")]
    assert not (tmp_path / "out").exists()
