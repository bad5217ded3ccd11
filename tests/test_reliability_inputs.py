"""Reliability against bad input (issue 7, part 1) beyond tests/test_make_tfrecords.py.

Image trees, pairs files and records that users scrape together: every case is either converted
correctly (checked against an independent PIL decode) or skipped with its reason in the manifest,
and the run never crashes. docs/RELIABILITY.md maps each case to its test.
"""

import io
import os
import re
import resource
import struct
import zlib

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import app
from PIL import Image

import estimator_main
from data_tools import conversion, input_fns, manifest, pairs
from tests import _folder_fixtures as ff
from tests import records_helpers as rh
from training import runner

ConversionError = conversion.ConversionError
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


convert = ff.convert_quietly
shard_files = ff.shard_files


def records_by_name(directory):
    return {r["filename"].decode("utf-8"): r for r in ff.read_records(shard_files(directory))}


def skipped_reasons(directory):
    return {item["path"]: item["reason"]
            for item in manifest.read_manifest(str(directory))["skipped"]}


def image_bytes(pixels, pil_format, mode=None, **kwargs):
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **kwargs)
    return buffer.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "wb") as f:
        f.write(data)


# ------------------------------------------------------------------ image trees


def test_odd_but_valid_images_are_converted_exactly(tmp_path):
    """Wrong extensions, 1x1 images and non-ASCII names are data, not errors."""
    rng = np.random.RandomState(7)
    root = tmp_path / "in"
    rgb = ff.random_pixels(rng, 16)
    gray = ff.random_pixels(rng, 12, gray=True)
    tiny = ff.random_pixels(rng, 1)
    files = {
        "Wrong_Ext/png_named.jpg": image_bytes(rgb, "PNG"),      # the content decides, not
        "Wrong_Ext/jpeg_named.png": image_bytes(rgb, "JPEG", quality=90),  # the name
        "Wrong_Ext/bmp_named.jpeg": image_bytes(gray, "BMP"),
        "Tiny/one_pixel.png": image_bytes(tiny, "PNG"),
        "Tiny/one_pixel.jpg": image_bytes(tiny, "JPEG", quality=95),
        u"Zo\u00eb_Fran\u00e7ois/Zo\u00eb_0001.png": image_bytes(rgb, "PNG"),
        u"\u674e\u5c0f\u9f99/\u674e\u5c0f\u9f99_0001.png": image_bytes(gray, "PNG"),
    }
    for relpath, data in files.items():
        write(root / relpath, data)
    summary = convert(root, tmp_path / "out")
    assert summary["num_skipped"] == 0 and summary["num_images"] == len(files)
    records = records_by_name(tmp_path / "out")
    assert sorted(records) == sorted(files)
    expected_format = {"Wrong_Ext/png_named.jpg": b"png", "Wrong_Ext/jpeg_named.png": b"jpeg",
                       "Wrong_Ext/bmp_named.jpeg": b"png", "Tiny/one_pixel.jpg": b"jpeg"}
    for relpath, record in records.items():
        assert record["format"] == expected_format.get(relpath, b"png"), relpath
        reference = ff.pil_rgb(str(root / relpath))
        np.testing.assert_array_equal(record["pixels"], reference, err_msg=relpath)
        assert (record["height"], record["width"]) == reference.shape[:2]
    assert records["Tiny/one_pixel.png"]["pixels"].shape == (1, 1, 3)
    labels = manifest.read_labels(str(tmp_path / "out"))
    assert labels == sorted(set(relpath.split("/")[0] for relpath in files))
    for record in records.values():
        assert labels[record["label"]] == record["identity"].decode("utf-8")


@pytest.mark.parametrize("mode", ["LA", "1", "P_transparent", "I;16", "RGBA_jpeg_cmyk"])
def test_more_pixel_modes_become_8bit(tmp_path, mode):
    """Modes not covered by test_unusual_png_and_jpeg_modes_become_8bit_png."""
    rng = np.random.RandomState(11)
    base = ff.random_pixels(rng, 16)
    path = tmp_path / "in" / "A" / "A_0001.png"
    os.makedirs(str(path.parent))
    if mode == "LA":
        image = Image.fromarray(base).convert("LA")
        expected = np.asarray(image.convert("L").convert("RGB"))
    elif mode == "1":
        image = Image.fromarray(base).convert("1")
        expected = np.asarray(image.convert("L").convert("RGB"))
    elif mode == "P_transparent":
        image = Image.fromarray(base).quantize(colors=8)
        image.info["transparency"] = 0
        expected = np.asarray(image.convert("RGB"))
    elif mode == "I;16":
        # A big-endian 16-bit grayscale PNG: TF keeps the high byte when it converts to uint8.
        values = rng.randint(0, 65536, size=(16, 16)).astype(">u2")
        image = Image.frombytes("I;16B", (16, 16), values.tobytes())
        expected = np.repeat((values.astype(np.int64) >> 8).astype(np.uint8)[..., None], 3, 2)
    else:
        path = path.with_suffix(".jpg")
        image = Image.fromarray(base).convert("CMYK")
        expected = None
    try:
        image.save(str(path))
    except (KeyError, OSError) as e:  # Pillow < 10 cannot write big-endian 16-bit PNGs
        pytest.skip(f"this Pillow cannot write {mode}: {e}")
    if expected is None:
        expected = ff.pil_rgb(str(path))
    summary = convert(tmp_path / "in", tmp_path / "out")
    assert summary["num_skipped"] == 0
    (record,) = ff.read_records(shard_files(tmp_path / "out"))
    assert record["format"] == b"png"
    np.testing.assert_array_equal(record["pixels"], expected)


def _exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif.tobytes()


def test_exif_rotated_jpeg_keeps_the_stored_pixel_order(tmp_path):
    """Orientation tags are not applied, in either storage path, exactly as the readers do.

    TensorFlow's decode_jpeg (training, eval and the serving graph) ignores EXIF orientation; if
    the converter applied it, a re-encoded record and a byte-for-byte record of the same file
    would disagree, and served images would differ from training images.
    """
    rng = np.random.RandomState(3)
    pixels = ff.random_pixels(rng, 24, height=16)  # not square: a rotation changes the shape
    data = image_bytes(pixels, "JPEG", quality=95, exif=_exif_orientation(6))
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.getexif().get(0x0112) == 6
    write(tmp_path / "in" / "A" / "A_0001.jpg", data)
    convert(tmp_path / "in", tmp_path / "as_is")
    convert(tmp_path / "in", tmp_path / "resized", crop_box="0,0,24,16")
    (as_is,) = ff.read_records(shard_files(tmp_path / "as_is"))
    (cropped,) = ff.read_records(shard_files(tmp_path / "resized"))
    assert as_is["encoded"] == data and as_is["format"] == b"jpeg"
    raw = ff.pil_rgb(str(tmp_path / "in" / "A" / "A_0001.jpg"))  # PIL: no transpose either
    assert raw.shape == (16, 24, 3)
    np.testing.assert_array_equal(as_is["pixels"], raw)
    np.testing.assert_array_equal(cropped["pixels"], raw)


def _png_chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def decompression_bomb_png(side):
    """A valid side x side 8-bit grayscale PNG of zeros: ~side^2 bytes decoded, ~side^2/1000
    on disk. The zlib stream is built row by row, so making it needs no big buffer."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    chunks = [compressor.compress(row) for _ in range(side)]
    chunks.append(compressor.flush())
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", b"".join(chunks)) + _png_chunk(b"IEND", b""))


def test_10000x10000_decompression_bomb_is_skipped_without_decoding(tmp_path):
    """PIL's default limit (89.5 Mpixel), a real 100 Mpixel file: skipped, memory stays flat."""
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 10000 ** 2
    ff.make_face_tree(str(tmp_path / "in"), [2], exts=("png",))
    bomb = decompression_bomb_png(10000)
    assert len(bomb) < 200 * 1024
    write(tmp_path / "in" / "Person_A" / "bomb.png", bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    summary = convert(tmp_path / "in", tmp_path / "out")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0
    assert summary["num_images"] == 2
    reasons = skipped_reasons(tmp_path / "out")
    assert list(reasons) == ["Person_A/bomb.png"]
    assert "10000x10000 pixels exceed" in reasons["Person_A/bomb.png"]
    # A decode would take 100 MB (L) to 300 MB (RGB); the header check takes nothing.
    assert grown_mib < 50, f"peak memory grew by {grown_mib:.0f} MiB"


def test_symlink_loops_are_skipped_with_their_reason(tmp_path):
    root = tmp_path / "in"
    ff.make_face_tree(str(root), [2, 1], exts=("png",))
    os.symlink("self.jpg", str(root / "Person_B" / "self.jpg"))          # file -> itself
    os.symlink("b.png", str(root / "Person_B" / "a.png"))                # a -> b -> a
    os.symlink("a.png", str(root / "Person_B" / "b.png"))
    os.symlink("..", str(root / "Person_B" / "up"))                      # folder -> parent
    os.symlink(str(root), str(root / "Everyone"))                        # identity -> root
    os.symlink("Person_A", str(root / "Alias_A"))                        # a plain alias
    summary = convert(root, tmp_path / "out")
    reasons = skipped_reasons(tmp_path / "out")
    for relpath in ("Person_B/self.jpg", "Person_B/a.png", "Person_B/b.png"):
        assert reasons.pop(relpath).startswith("cannot stat: Too many levels of symbolic links")
    assert reasons.pop("Everyone").startswith("symlink loop")
    assert not reasons
    # Links inside an identity are not followed (os.walk's default), so "up" adds nothing; an
    # identity folder that is a link to another folder is an identity like any other.
    labels = manifest.read_labels(str(tmp_path / "out"))
    assert labels == ["Alias_A", "Person_A", "Person_B"]
    assert summary["num_images"] == 2 + 2 + 1


def test_empty_identity_folder_is_not_a_class(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [2, 1])
    (tmp_path / "in" / "Empty_Person").mkdir()
    (tmp_path / "in" / "Only_Notes").mkdir()
    (tmp_path / "in" / "Only_Notes" / "notes.txt").write_text("no images here")
    summary = convert(tmp_path / "in", tmp_path / "out")
    assert summary["num_classes"] == 2 and summary["num_skipped"] == 0
    assert manifest.read_labels(str(tmp_path / "out")) == ["Person_A", "Person_B"]


@pytest.mark.parametrize("how", [
    "simulated",
    pytest.param("chmod", marks=pytest.mark.skipif(IS_ROOT, reason="root reads mode-000 folders")),
])
def test_unreadable_identity_folder_is_skipped_with_its_reason(tmp_path, monkeypatch, how):
    root = tmp_path / "in"
    ff.make_face_tree(str(root), [2, 2, 1], exts=("png",))
    locked = root / "Person_B"
    if how == "chmod":
        os.chmod(str(locked), 0)
    else:
        real_scandir = os.scandir

        def scandir(path="."):
            if os.path.abspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", path)
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        summary = convert(root, tmp_path / "out")
    finally:
        os.chmod(str(locked), 0o755)
    assert skipped_reasons(tmp_path / "out") == {"Person_B": "cannot list folder: Permission "
                                                             "denied"}
    assert summary["num_classes"] == 2
    assert manifest.read_labels(str(tmp_path / "out")) == ["Person_A", "Person_C"]


@pytest.mark.parametrize("how", [
    "simulated",
    pytest.param("chmod", marks=pytest.mark.skipif(IS_ROOT, reason="root reads mode-000 files")),
])
def test_unreadable_image_file_is_skipped_with_its_reason(tmp_path, monkeypatch, how):
    ff.make_face_tree(str(tmp_path / "in"), [3], exts=("png",))
    path = tmp_path / "in" / "Person_A" / "Person_A_0002.png"
    if how == "chmod":
        os.chmod(str(path), 0)
    else:
        # What open() raises on a mode-000 file for a user who is not root (CI runs as root).
        real_open = open

        def guarded_open(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(file) == str(
                    path.resolve()):
                raise PermissionError(13, "Permission denied", file)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", guarded_open)
    try:
        summary = convert(tmp_path / "in", tmp_path / "out")
    finally:
        os.chmod(str(path), 0o644)
    assert summary["num_images"] == 2
    assert skipped_reasons(tmp_path / "out") == {
        "Person_A/Person_A_0002.png": "cannot read: Permission denied"}


# ------------------------------------------------------------------ pairs files

PAIRS_LINES = ["1\t2", "Ann\t1\t2", "Bob\t1\t2", "Ann\t1\tBob\t1", "Bob\t2\tCid\t1"]
PAIRS_IMAGES = ["Ann/Ann_0001.png", "Ann/Ann_0002.png", "Bob/Bob_0001.png", "Bob/Bob_0002.png",
                "Cid/Cid_0001.png"]


def write_pairs_tree(root, lines, images=PAIRS_IMAGES, newline="\n"):
    rng = np.random.RandomState(0)
    for relpath in images:
        ff.save_image(os.path.join(str(root), "images", relpath), ff.random_pixels(rng, 8), "png")
    path = os.path.join(str(root), "pairs.txt")
    with open(path, "wb") as f:
        f.write((newline.join(lines) + newline).encode("utf-8"))
    return path, os.path.join(str(root), "images")


def convert_pairs(pairs_path, image_dir, output_dir, **kwargs):
    return conversion.convert_pairs(pairs_path, image_dir, str(output_dir), num_workers=1,
                                    progress=False, **kwargs)


def test_duplicate_pairs_are_kept_at_their_positions(tmp_path):
    """A repeated pair is unusual, not wrong: both copies count, as the evaluation counts them."""
    lines = ["1\t3", "Ann\t1\t2", "Ann\t1\t2", "Bob\t1\t2",
             "Ann\t1\tBob\t1", "Ann\t1\tBob\t1", "Bob\t2\tCid\t1"]
    pairs_path, image_dir = write_pairs_tree(tmp_path, lines)
    summary = convert_pairs(pairs_path, image_dir, tmp_path / "out")
    assert summary["num_pairs"] == 6 and summary["missing_pairs"] == 0
    records = ff.read_records(shard_files(tmp_path / "out"), kind="pairs", with_pixels=False)
    assert [r["index"] for r in records] == list(range(6))
    assert [r["issame"] for r in records] == [1, 1, 1, 0, 0, 0]
    assert records[0]["image1"]["encoded"] == records[1]["image1"]["encoded"]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings_give_identical_records(tmp_path, newline):
    pairs_path, image_dir = write_pairs_tree(tmp_path / "ref", PAIRS_LINES)
    convert_pairs(pairs_path, image_dir, tmp_path / "ref" / "out")
    pairs_path, image_dir = write_pairs_tree(tmp_path / "var", PAIRS_LINES, newline=newline)
    parsed = pairs.read_pairs(pairs_path)
    assert [p.line for p in parsed.pairs] == [2, 3, 4, 5]
    convert_pairs(pairs_path, image_dir, tmp_path / "var" / "out")
    a = [r for r in ff.read_records(shard_files(tmp_path / "ref" / "out"), kind="pairs",
                                    with_pixels=False)]
    b = [r for r in ff.read_records(shard_files(tmp_path / "var" / "out"), kind="pairs",
                                    with_pixels=False)]
    assert a == b


def test_unknown_identity_is_an_error_listing_the_image(tmp_path):
    lines = list(PAIRS_LINES)
    lines[4] = "Bob\t2\tZed_Unknown\t1"
    pairs_path, image_dir = write_pairs_tree(tmp_path, lines)
    with pytest.raises(pairs.MissingPairImagesError) as error:
        convert_pairs(pairs_path, image_dir, tmp_path / "out")
    assert error.value.missing == ["Zed_Unknown/Zed_Unknown_0001.jpg"]
    assert not (tmp_path / "out").exists()
    summary = convert_pairs(pairs_path, image_dir, tmp_path / "out", allow_missing_pairs=True)
    assert (summary["num_pairs"], summary["missing_pairs"]) == (3, 1)


@pytest.mark.parametrize("content, line, message", [
    (b"1\t1\nJos\xe9\t1\t2\nAnn\t1\tBob\t1\n", 2, "not UTF-8"),           # Latin-1 name
    (b"1\t1\r\nAnn\t1\t2\r\nAnn\t1\tB\xffb\t1\r\n", 3, "not UTF-8"),
    (b"\xff\xfe1\x00\t\x001\x00\n\x00", 1, "not UTF-8"),                    # UTF-16
    (b"1\t1\nAnn\t1.0\t2\nAnn\t1\tBob\t1\n", 2, "must be an integer"),
    (b"1\t1\nAnn\t-1\t2\nAnn\t1\tBob\t1\n", 2, "at least 1"),
    (b"1\t1\nAnn\t1\t2\t\t\t\nAnn\t1\tBob\t1\n", 2, None),                  # trailing tabs: fine
])
def test_pairs_file_encodings_and_numbers(tmp_path, content, line, message):
    path = tmp_path / "pairs.txt"
    path.write_bytes(content)
    if message is None:
        assert len(pairs.read_pairs(str(path)).pairs) == 2
        return
    with pytest.raises(pairs.PairsFormatError) as error:
        pairs.read_pairs(str(path))
    assert error.value.line == line and message in str(error.value)


def test_non_utf8_pairs_file_is_one_line_on_the_command_line(tmp_path):
    pairs_path, image_dir = write_pairs_tree(tmp_path, PAIRS_LINES)
    with open(pairs_path, "rb") as f:
        data = f.read().replace(b"Cid\t1", b"C\xefd\t1")
    with open(pairs_path, "wb") as f:
        f.write(data)
    result = ff.run_script([f"--pairs={pairs_path}", f"--input_dir={image_dir}",
                            f"--output_dir={tmp_path / 'out'}", "--num_workers=1"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "line 5: not UTF-8" in result.stderr


# ------------------------------------------------------------------ records


def test_truncated_shard_is_named_by_the_manifest_check(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [3, 3])
    convert(tmp_path / "in", tmp_path / "out", num_shards=2)
    path = shard_files(tmp_path / "out")[0]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)
    with pytest.raises(manifest.ManifestError, match=os.path.basename(path) + " has"):
        manifest.verify_shards(str(tmp_path / "out"))


@pytest.mark.parametrize("damage", ["truncate", "flip_length"])
def test_damaged_shard_stops_the_reader_with_a_data_loss_error(tmp_path, damage):
    """Without the manifest check, TFRecord's own CRCs still stop the input: never silent."""
    directory = str(tmp_path / "records")
    rh.write_image_records(directory, num_classes=2, per_class=3, num_shards=1)
    (path,) = shard_files(directory)
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(os.path.getsize(path) - 7)
        else:
            f.seek(2)  # inside the first record's length field, which has its own CRC
            f.write(b"\x7f")
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, image_size=32, num_classes=2,
                                                    batch_size=2, is_training=False)
        _, labels = tf.data.make_one_shot_iterator(input_fn()).get_next()
        with tf.Session() as session:
            with pytest.raises(tf.errors.DataLossError):
                for _ in range(10):
                    session.run(labels)


def test_verify_shards_checks_what_a_manifest_records(tmp_path):
    """Manifests of other writers (tests/records_helpers.py) list files without sha256."""
    directory = str(tmp_path / "records")
    rh.write_image_records(directory, num_classes=2, per_class=2, num_shards=2)
    assert len(manifest.verify_shards(directory)) == 2
    os.remove(shard_files(directory)[1])
    with pytest.raises(manifest.ManifestError, match="train-00001-of-00002.tfrecord listed"):
        manifest.verify_shards(directory)


@pytest.fixture
def estimator_flags():
    """Parse estimator_main's global flags; the defaults come back afterwards."""

    def parse(args):
        estimator_main.FLAGS.unparse_flags()
        estimator_main.FLAGS(["estimator_main.py"] + list(args))
        return estimator_main

    yield parse
    estimator_main.FLAGS.unparse_flags()


@pytest.mark.parametrize("damage", ["bit_flip", "truncate"])
def test_training_refuses_a_damaged_shard_before_any_graph(tmp_path, estimator_flags,
                                                           monkeypatch, damage):
    ff.make_face_tree(str(tmp_path / "in"), [3, 3, 3], exts=("png",))
    convert(tmp_path / "in", tmp_path / "train", num_shards=3)
    path = shard_files(tmp_path / "train")[1]
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(os.path.getsize(path) - 1)
        else:
            f.seek(40)
            byte = f.read(1)
            f.seek(40)
            f.write(bytes([byte[0] ^ 0x10]))
    module = estimator_flags(["--mode=train", f"--train_records={tmp_path / 'train'}",
                              f"--model_dir={tmp_path / 'run'}", "--backbone=tiny",
                              "--image_size=32", "--embedding_size=16", "--batch_size=4",
                              "--train_steps=2"])
    reached = []
    monkeypatch.setattr(runner, "run_mode", reached.append)
    with pytest.raises(app.UsageError, match=re.escape(os.path.basename(path))):
        module.main(["estimator_main.py"])
    assert not reached
