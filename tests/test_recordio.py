"""MXNet RecordIO without mxnet: framing, split records, IRHeader, index, layouts, damage."""

import os
import random
import struct

import pytest

from data_tools.insightface import recordio

MAGIC = struct.pack("<I", recordio.MAGIC)


def head(flag, length):
    return struct.pack("<II", recordio.MAGIC, (flag << 29) | length)


# ------------------------------------------------------------------ framing


def test_magic_word_bytes_are_dmlc_core_kmagic():
    assert MAGIC == b"\x0a\x23\xd7\xce"


@pytest.mark.parametrize("payload, expected", [
    (b"", head(0, 0)),
    (b"abcd", head(0, 4) + b"abcd"),
    (b"abcde", head(0, 5) + b"abcde\0\0\0"),
    # The magic word at an unaligned offset stays inside the payload.
    (b"x" + MAGIC + b"yz", head(0, 7) + b"x" + MAGIC + b"yz\0"),
    # At aligned offsets it splits the record: flag 1 first, 2 middle, 3 last.
    (b"AAAA" + MAGIC + b"BBBB" + MAGIC + b"C",
     head(1, 4) + b"AAAA" + head(2, 4) + b"BBBB" + head(3, 1) + b"C\0\0\0"),
    (MAGIC + b"tail", head(1, 0) + head(3, 4) + b"tail"),
    (b"abcd" + MAGIC, head(1, 4) + b"abcd" + head(3, 0)),
    (MAGIC + MAGIC, head(1, 0) + head(2, 0) + head(3, 0)),
])
def test_frame_matches_dmlc_core_writer(payload, expected):
    assert recordio.frame(payload) == expected
    assert recordio.parse_record(expected, 0) == (payload, len(expected))


def test_random_payloads_with_magic_words_round_trip():
    rng = random.Random(0)
    for _ in range(300):
        parts = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 9)))
                 for _ in range(rng.randrange(1, 6))]
        payload = b"".join(p + (MAGIC if rng.random() < 0.7 else b"") for p in parts)
        framed = recordio.frame(payload)
        assert len(framed) % 4 == 0
        assert recordio.parse_record(framed + b"junk", 0) == (payload, len(framed))


# ------------------------------------------------------------------ IRHeader


def test_scalar_and_array_labels_pack_like_mxnet():
    scalar = recordio.pack(recordio.IRHeader(0, 7.0, 3, 0), b"JPEG")
    assert scalar == struct.pack("<IfQQ", 0, 7.0, 3, 0) + b"JPEG"
    assert len(scalar) == recordio.IR_SIZE + 4
    header, data = recordio.unpack(scalar)
    assert header == recordio.IRHeader(0, 7.0, 3, 0) and data == b"JPEG"
    assert recordio.class_of(header) == 7.0

    array = recordio.pack(recordio.IRHeader(0, (5.0, 1.5, -2.0), 9, 1), b"img")
    assert array[:recordio.IR_SIZE] == struct.pack("<IfQQ", 3, 0.0, 9, 1)
    header, data = recordio.unpack(array)
    assert header == recordio.IRHeader(3, (5.0, 1.5, -2.0), 9, 1) and data == b"img"
    assert recordio.class_of(header) == 5.0


@pytest.mark.parametrize("payload", [b"", b"x" * 23, struct.pack("<IfQQ", 1000, 0, 0, 0) + b"ab"])
def test_short_payloads_are_refused(payload):
    with pytest.raises(ValueError):
        recordio.unpack(payload)


# ------------------------------------------------------------------ files


def _payloads(count, seed=0):
    rng = random.Random(seed)
    payloads = []
    for i in range(count):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        if i % 3 == 0:  # plant magic words at aligned and unaligned offsets
            body = body[:8] + MAGIC + body[8:12] + MAGIC + b"z" + MAGIC + body[12:]
        payloads.append(recordio.pack(recordio.IRHeader(0, float(i % 7), i, 0), body))
    return payloads


def _write(tmp_path, payloads, keys=None):
    rec, idx = str(tmp_path / "train.rec"), str(tmp_path / "train.idx")
    keys = list(range(len(payloads))) if keys is None else keys
    with recordio.RecordWriter(rec, idx) as writer:
        offsets = [writer.write(p, key=k) for k, p in zip(keys, payloads)]
    return rec, idx, offsets


@pytest.mark.parametrize("chunk_bytes", [1, 256, 1 << 20])
def test_written_file_reads_back_every_way(tmp_path, chunk_bytes):
    payloads = _payloads(60)
    keys = [k * 3 + 10 for k in range(len(payloads))]
    rec, idx, offsets = _write(tmp_path, payloads, keys)
    index = recordio.read_index(idx)
    assert index == list(zip(keys, offsets))
    with recordio.RecordReader(rec, chunk_bytes=chunk_bytes) as reader:
        for (key, offset), payload in zip(index, payloads):
            assert reader.read(offset, key) == payload
        assert [p for _, p in reader.scan()] == payloads
        assert [o for o, _ in reader.scan()] == offsets
        # A worker's slice, asked in a shuffled order, comes back in that order.
        order = list(range(10, 40))
        random.Random(1).shuffle(order)
        got = list(reader.read_many([offsets[i] for i in order], [keys[i] for i in order]))
        assert got == [(keys[i], payloads[i]) for i in order]
        # A byte range: the records that start in it.
        start, stop = offsets[20], offsets[30]
        assert [p for _, p in reader.scan(start, stop)] == payloads[20:30]


def test_index_damage_names_the_line(tmp_path):
    path = tmp_path / "train.idx"
    path.write_bytes(b"0\t0\n1\tx\n")
    with pytest.raises(recordio.RecordError, match="line 2"):
        recordio.read_index(str(path))
    path.write_bytes(b"0\t0\n0\t8\n")
    with pytest.raises(recordio.RecordError, match="repeats key 0"):
        recordio.read_index(str(path))


class _CountingReader(recordio.RecordReader):
    """Records every read length: a damaged length must never become an allocation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lengths = []

    def _read_file(self, offset, length):
        self.lengths.append(length)
        return super()._read_file(offset, length)


def _damage(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("what", ["huge_length", "bad_magic", "bad_flag", "bit_flip_in_magic",
                                  "continuation_flag_cleared"])
def test_damaged_record_is_one_error_and_neighbours_still_read(tmp_path, what):
    payloads = _payloads(12)
    rec, idx, offsets = _write(tmp_path, payloads)
    bad = 6  # key 6 is split (6 % 3 == 0): its continuation pieces matter
    assert recordio.frame(payloads[bad]).count(MAGIC) > 1
    damage = {
        "huge_length": (offsets[bad] + 4, struct.pack("<I", recordio.MAX_LENGTH)),
        "bad_magic": (offsets[bad], b"\0\0\0\0"),
        "bad_flag": (offsets[bad] + 4, struct.pack("<I", (2 << 29) | 4)),
        "bit_flip_in_magic": (offsets[bad] + 1, bytes([MAGIC[1] ^ 0x10])),
        "continuation_flag_cleared": None,
    }[what]
    if damage is None:
        framed = recordio.frame(payloads[bad])
        second = framed.index(MAGIC, 4)  # head of the second piece
        lrec = struct.unpack_from("<I", framed, second + 4)[0] & ((1 << 29) - 1)
        damage = (offsets[bad] + second + 4, struct.pack("<I", lrec))
    _damage(rec, *damage)
    size = os.path.getsize(rec)
    with _CountingReader(rec, chunk_bytes=64) as reader:
        with pytest.raises(recordio.RecordError) as info:
            reader.read(offsets[bad], key=bad)
        message = str(info.value)
        assert rec in message and f"record 6 at byte {offsets[bad]}" in message
        assert "\n" not in message
        results = dict(reader.read_many(offsets, list(range(len(offsets)))))
        assert isinstance(results.pop(bad), recordio.RecordError)
        assert results == {k: p for k, p in enumerate(payloads) if k != bad}
        assert max(reader.lengths) <= size


def test_truncated_file(tmp_path):
    payloads = _payloads(5)
    rec, idx, offsets = _write(tmp_path, payloads)
    with open(rec, "r+b") as f:
        f.truncate(offsets[4] + 20)
    with recordio.RecordReader(rec) as reader:
        assert reader.read(offsets[3]) == payloads[3]
        with pytest.raises(recordio.RecordError, match="runs past the end|truncated"):
            reader.read(offsets[4], key=4)
        with pytest.raises(recordio.RecordError, match="beyond the end"):
            reader.read(offsets[4] + 1000, key=4)
        results = list(reader.read_many(offsets))
        assert [p for _, p in results[:4]] == payloads[:4]
        assert isinstance(results[4][1], recordio.RecordError)
        scanned = []
        with pytest.raises(recordio.RecordError):
            for _, payload in reader.scan():
                scanned.append(payload)
        assert scanned == payloads[:4]


def test_a_length_larger_than_the_file_never_allocates(tmp_path):
    rec = tmp_path / "x.rec"
    rec.write_bytes(head(0, recordio.MAX_LENGTH) + b"abcd")
    with _CountingReader(str(rec), chunk_bytes=1 << 30) as reader:
        with pytest.raises(recordio.RecordError, match="runs past the end"):
            reader.read(0)
        with pytest.raises(recordio.RecordError):
            list(reader.scan())
        assert max(reader.lengths) <= 12


# ------------------------------------------------------------------ datasets


def _images(count, classes):
    return [(c * 10 + 3, b"\xff\xd8\xff" + bytes([i % 256]) * (i % 5) + MAGIC * (i % 2))
            for i, c in enumerate(random.Random(2).choice(range(classes)) for _ in range(count))]


@pytest.mark.parametrize("layout", [recordio.HEADER0, recordio.FLAT])
@pytest.mark.parametrize("array_labels", [False, True])
def test_datasets_of_both_layouts(tmp_path, layout, array_labels):
    images = _images(25, 4)
    rec = recordio.write_dataset(str(tmp_path), images, layout=layout, array_labels=array_labels,
                                 image_shape=(112, 112))
    index = recordio.read_index(str(tmp_path / "train.idx"))
    offsets = dict(index)
    with recordio.RecordReader(rec) as reader:
        found = recordio.detect_layout(index, lambda key: reader.read(offsets[key], key))
        assert found.kind == layout
        got = []
        for key in found.image_keys:
            header, data = recordio.unpack(reader.read(offsets[key], key))
            assert isinstance(header.label, tuple) == array_labels
            got.append((int(recordio.class_of(header)), data))
    if layout == recordio.HEADER0:
        classes = sorted(set(c for c, _ in images))
        assert found.identity_range == (26, 26 + len(classes))
        assert sorted(got) == sorted(images)
    else:
        assert found.identity_range is None and got == images
    assert recordio.read_property(str(tmp_path / "property")) == (
        len(set(c for c, _ in images)), 112, 112)


def test_flat_set_with_array_labels_is_not_taken_for_header0(tmp_path):
    # Record 0 of a shuffled set holds an image with a two-float label: it has image bytes.
    images = [(5, b"\xff\xd8\xffimage"), (2, b"\xff\xd8\xffother")]
    rec = recordio.write_dataset(str(tmp_path), images, layout=recordio.FLAT, array_labels=True)
    index = recordio.read_index(str(tmp_path / "train.idx"))
    with recordio.RecordReader(rec) as reader:
        layout = recordio.detect_layout(index, lambda key: reader.read(dict(index)[key]))
    assert layout.kind == recordio.FLAT and layout.image_keys == [0, 1]


@pytest.mark.parametrize("text", ["", "10,112", "a,b,c", "0,112,112", "1,2,3,4"])
def test_bad_property_files(tmp_path, text):
    path = tmp_path / "property"
    path.write_text(text)
    with pytest.raises(ValueError, match="property"):
        recordio.read_property(str(path))
