"""make_tfrecords --input_rec / --from_bin and make_bin: insightface sets into shards."""

import os
import struct

import pytest
from absl import app

import cli
from data_tools import make_tfrecords
from data_tools import manifest as manifest_lib
from data_tools.conversion import convert_pairs
from data_tools.insightface import bin_format as insightface_bin
from data_tools.insightface import bin_from_pairs, make_bin, recordio
from data_tools.insightface import convert as insightface
from data_tools.shard_writer import ConversionError
from tests import _folder_fixtures as ff

MAGIC = struct.pack("<I", recordio.MAGIC)


def _jpeg_with_magic(data, offset_in_payload):
    """``data`` with a JPEG comment segment holding the magic word at an offset of the record
    payload (header + labels + image) that is a multiple of 4: the writer must split there."""
    pad = (-(offset_in_payload + 2 + 4)) % 4
    body = b"x" * pad + MAGIC + b"tail"
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + data[2:]


def _images(tmp_path, counts=(3, 1, 4), array_labels=False):
    """``[(original class id, jpeg bytes)]``, class ids sparse and unsorted by name."""
    written = ff.make_face_tree(str(tmp_path / "faces"), list(counts))
    ids = [907, 12, 450, 3]
    images = []
    for n, relpath in enumerate(sorted(written)):
        with open(str(tmp_path / "faces" / relpath), "rb") as f:
            data = f.read()
        identity = ord(relpath.split("/")[0][-1]) - ord("A")
        if n == 1:  # one record split by the magic word
            data = _jpeg_with_magic(data, recordio.IR_SIZE + (8 if array_labels else 0))
        images.append((ids[identity], data))
    return images


def _convert_rec(rec_dir, out, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    return insightface.convert_rec(str(rec_dir), str(out), **kwargs)


def _records(out, kind="images"):
    return ff.read_records(ff.shard_files(out), kind=kind, with_pixels=False)


@pytest.mark.parametrize("layout", [recordio.HEADER0, recordio.FLAT])
@pytest.mark.parametrize("array_labels", [False, True])
def test_rec_to_records(tmp_path, layout, array_labels):
    images = _images(tmp_path, array_labels=array_labels)
    assert recordio.frame(recordio.pack(recordio.IRHeader(0, (1.0, 0.0) if array_labels
                                                          else 1.0, 0, 0), images[1][1])
                          ).count(MAGIC) > 1
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    recordio.write_dataset(str(rec_dir), images, layout=layout, array_labels=array_labels,
                           image_shape=(32, 32))
    summary = _convert_rec(rec_dir, tmp_path / "out", num_shards=2)
    assert summary["num_images"] == 8 and summary["num_classes"] == 3
    assert summary["layout"] == layout
    labels = manifest_lib.read_labels(str(tmp_path / "out"))
    assert labels == ["12", "450", "907"]
    records = _records(tmp_path / "out")
    got = sorted((labels[r["label"]], r["encoded"]) for r in records)
    assert got == sorted((str(c), data) for c, data in images)
    assert all(r["format"] == b"jpeg" and r["height"] == 32 for r in records)
    manifest = manifest_lib.read_manifest(str(tmp_path / "out"))
    assert manifest["source"]["layout"] == layout and manifest["num_classes"] == 3
    manifest_lib.verify_shards(str(tmp_path / "out"))


def _rec_dir(tmp_path, layout=recordio.HEADER0, shape=(32, 32)):
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    recordio.write_dataset(str(rec_dir), _images(tmp_path), layout=layout, image_shape=shape)
    return rec_dir


def test_rec_is_deterministic_resumes_and_workers_agree(tmp_path):
    rec_dir = _rec_dir(tmp_path)
    _convert_rec(rec_dir, tmp_path / "a", num_shards=3, seed=5)
    _convert_rec(rec_dir, tmp_path / "b", num_shards=3, seed=5, num_workers=2)
    first = ff.read_dir_bytes(str(tmp_path / "a"))
    assert first == ff.read_dir_bytes(str(tmp_path / "b"))
    # A killed run: one shard and the manifest gone. The re-run keeps the others.
    os.remove(ff.shard_files(tmp_path / "a")[1])
    os.remove(str(tmp_path / "a" / "manifest.json"))
    summary = _convert_rec(rec_dir, tmp_path / "a", num_shards=3, seed=5)
    assert (summary["shards_kept"], summary["shards_written"]) == (2, 1)
    assert ff.read_dir_bytes(str(tmp_path / "a")) == first
    # Other options in the same directory are refused.
    with pytest.raises(ConversionError, match="other options"):
        _convert_rec(rec_dir, tmp_path / "a", num_shards=3, seed=6)


def _damage(rec_dir, key, offset_in_record, data):
    offsets = dict(recordio.read_index(str(rec_dir / "train.idx")))
    with open(str(rec_dir / "train.rec"), "r+b") as f:
        f.seek(offsets[key] + offset_in_record)
        f.write(data)
    return offsets[key]


@pytest.mark.parametrize("damage", [(0, b"\0\0\0\0"), (4, struct.pack("<I", (1 << 29) - 1)),
                                    (8 + recordio.IR_SIZE, b"\0" * 16)])
def test_damaged_record_is_skipped_and_listed_or_fatal_with_strict(tmp_path, damage):
    rec_dir = _rec_dir(tmp_path)
    offset = _damage(rec_dir, 3, *damage)
    summary = _convert_rec(rec_dir, tmp_path / "out", min_images_per_class=1)
    assert summary["num_images"] == 7
    manifest = manifest_lib.read_manifest(str(tmp_path / "out"))
    (item,) = manifest["skipped"]
    assert (item["key"], item["offset"]) == (3, offset)
    with pytest.raises(ConversionError) as info:
        _convert_rec(rec_dir, tmp_path / "strict", strict=True)
    message = str(info.value)
    assert f"train.rec: record 3 at byte {offset}" in message and "\n" not in message
    assert not os.path.exists(str(tmp_path / "strict" / "manifest.json"))


def test_truncated_rec(tmp_path):
    rec_dir = _rec_dir(tmp_path, layout=recordio.FLAT)
    offsets = dict(recordio.read_index(str(rec_dir / "train.idx")))
    with open(str(rec_dir / "train.rec"), "r+b") as f:
        f.truncate(offsets[7] + 30)
    summary = _convert_rec(rec_dir, tmp_path / "out")
    assert summary["num_images"] == 7 and summary["skipped"][0]["key"] == 7


@pytest.mark.parametrize("shape, needle", [((32, 40), "32x40 images"), (None, "4 classes")])
def test_property_is_checked(tmp_path, shape, needle):
    rec_dir = _rec_dir(tmp_path)
    if shape is None:
        (rec_dir / "property").write_text("4,32,32")
    else:
        (rec_dir / "property").write_text(f"3,{shape[0]},{shape[1]}")
    with pytest.raises(ConversionError, match=needle):
        _convert_rec(rec_dir, tmp_path / "out")


# ------------------------------------------------------------------ .bin


def _pairs_set(tmp_path, num_pairs=20):
    written = ff.make_face_tree(str(tmp_path / "faces"), [2] * num_pairs, size=24)
    paths = sorted(written)
    bins, issame = [], []
    for i in range(num_pairs):
        a = paths[2 * i]
        b = paths[2 * i + 1] if i % 2 == 0 else paths[(2 * i + 2) % len(paths)]
        for relpath in (a, b):
            with open(str(tmp_path / "faces" / relpath), "rb") as f:
                bins.append(f.read())
        issame.append(i % 2 == 0)
    return bins, issame


def _convert_bin(path, out, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    return insightface.convert_bin(str(path), str(out), **kwargs)


@pytest.mark.parametrize("protocol", [2, 4])
def test_bin_to_pair_records(tmp_path, protocol):
    bins, issame = _pairs_set(tmp_path, 23)
    path = tmp_path / "lfw.bin"
    insightface_bin.write_bin(str(path), bins, issame, protocol=protocol)
    summary = _convert_bin(path, tmp_path / "out", num_shards=2)
    assert summary["num_pairs"] == 23 and summary["fold_sizes"] == [3, 3, 3] + [2] * 7
    records = _records(tmp_path / "out", kind="pairs")
    assert [r["index"] for r in records] == list(range(23))
    assert [r["fold"] for r in records] == insightface_bin.folds(23)
    assert [bool(r["issame"]) for r in records] == issame
    assert [r[k]["encoded"] for r in records for k in ("image1", "image2")] == bins
    manifest = manifest_lib.read_manifest(str(tmp_path / "out"))
    assert manifest["kind"] == "pairs" and manifest["num_folds"] == 10


def test_bin_with_a_broken_image(tmp_path):
    bins, issame = _pairs_set(tmp_path)
    bins[5] = bins[5][:40]
    path = tmp_path / "set.bin"
    insightface_bin.write_bin(str(path), bins, issame)
    with pytest.raises(ConversionError, match=r"set.bin#5"):
        _convert_bin(path, tmp_path / "out")
    summary = _convert_bin(path, tmp_path / "out", allow_missing_pairs=True)
    assert summary["num_pairs"] == 19 and summary["missing_pairs"] == 1
    # The kept pairs are numbered 0..18 (the evaluation's rows), each with its own .bin images.
    records = sorted(_records(tmp_path / "out", "pairs"), key=lambda r: r["index"])
    assert [r["index"] for r in records] == list(range(19))
    assert [r["issame"] for r in records] == [s for i, s in enumerate(issame) if i != 2]
    assert records[2]["image1"]["filename"].decode().endswith("set.bin#6")


def run_main(args):
    return cli.run_main(make_tfrecords.define_flags, make_tfrecords.main,
                        ["make_tfrecords.py"] + list(args))


def test_cli(tmp_path, capsys):
    rec_dir = _rec_dir(tmp_path)
    assert run_main([f"--input_rec={rec_dir}", f"--output_dir={tmp_path / 'r'}",
                     "--num_workers=1"]) == 0
    assert "8 images of 3 identities" in capsys.readouterr().out
    bins, issame = _pairs_set(tmp_path / "p")
    insightface_bin.write_bin(str(tmp_path / "lfw.bin"), bins, issame)
    assert run_main([f"--from_bin={tmp_path / 'lfw.bin'}",
                     f"--output_dir={tmp_path / 'b'}", "--num_workers=1"]) == 0
    assert "20 pairs in 10 folds" in capsys.readouterr().out
    # A hostile .bin: one line, exit 1, nothing run.
    (tmp_path / "evil.bin").write_bytes(b"cos\nsystem\n(S'touch %s'\ntR." % str(
        tmp_path / "pwned").encode())
    assert run_main([f"--from_bin={tmp_path / 'evil.bin'}",
                     f"--output_dir={tmp_path / 'e'}"]) == 1
    err = capsys.readouterr().err
    assert "refusing global os.system" in err and err.count("\n") == 1
    assert not os.path.exists(str(tmp_path / "pwned"))
    with pytest.raises(app.UsageError, match="exactly one of"):
        run_main([f"--input_rec={rec_dir}", f"--input_dir={rec_dir}",
                  f"--output_dir={tmp_path / 'x'}"])


def test_make_bin_then_from_bin_gives_the_pairs_path_images(tmp_path):
    faces = tmp_path / "faces"
    ff.make_face_tree(str(faces), [2, 2, 1, 1] * 5, size=40)
    names = [ff.identity_name(i) for i in range(20)]
    names_with_two = [n for i, n in enumerate(names) if [2, 2, 1, 1][i % 4] == 2]
    # One matched and one mismatched pair per fold.
    lines = ["10\t1"]
    for fold in range(10):
        a = names_with_two[fold]
        b = names[(names.index(a) + 2) % 20]
        lines += [f"{a}\t1\t2", f"{a}\t1\t{b}\t1"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    out_bin = tmp_path / "lfw.bin"
    assert cli.run_main(make_bin.define_flags, make_bin.main, [
        "make_bin", f"--pairs={tmp_path / 'pairs.txt'}", f"--image_dir={faces}",
        f"--output={out_bin}", "--crop_box=4,4,36,36", "--image_size=16",
        "--num_workers=1"]) == 0
    _convert_bin(out_bin, tmp_path / "from_bin")
    convert_pairs(str(tmp_path / "pairs.txt"), str(faces), str(tmp_path / "from_pairs"),
                  crop_box="4,4,36,36", image_size=16, num_workers=1, progress=False)
    a = _records(tmp_path / "from_bin", kind="pairs")
    b = _records(tmp_path / "from_pairs", kind="pairs")
    assert len(a) == len(b) == 20
    for x, y in zip(a, b):
        assert (x["index"], x["fold"], x["issame"]) == (y["index"], y["fold"], y["issame"])
        for k in ("image1", "image2"):
            assert x[k]["encoded"] == y[k]["encoded"]
    # A missing pairs file, an unwritable output: one line, exit 1.
    for args in ([f"--pairs={tmp_path / 'nope.txt'}", f"--output={out_bin}"],
                 [f"--pairs={tmp_path / 'pairs.txt'}",
                  f"--output={tmp_path / 'no_dir' / 'x.bin'}"]):
        assert cli.run_main(make_bin.define_flags, make_bin.main,
                            ["make_bin", f"--image_dir={faces}", "--num_workers=1"]
                            + args) == 1
    # A missing image is an error naming it.
    os.remove(str(faces / names_with_two[0] / (f"{names_with_two[0]}_0002.jpg")))
    with pytest.raises(Exception, match="missing"):
        bin_from_pairs.make_bin(str(tmp_path / "pairs.txt"), str(faces), str(tmp_path / "x.bin"))
