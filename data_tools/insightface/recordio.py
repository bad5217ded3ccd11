"""MXNet RecordIO (``.rec`` + ``.idx``), the format of insightface's training sets, without mxnet.

Framing (dmlc-core ``recordio``): every record starts on a 4-byte boundary with two little-endian
uint32, the magic word ``0xced7230a`` and ``lrec``, whose lower 29 bits are the length of the
piece that follows and whose upper 3 bits are the continuation flag; the piece is padded with
zeros to 4 bytes. A writer that meets the magic word at an aligned offset inside a payload splits
the record there, dropping the magic word: flag 1 on the first piece, 2 on middle pieces, 3 on the
last (0 for a record in one piece). A reader joins the pieces, putting the magic word back
between them.

Payload (mxnet ``recordio.pack``): the header ``IRHeader`` = struct ``'IfQQ'`` (flag, label, id,
id2; 24 bytes); when ``flag > 0``, ``flag`` float32 labels follow it (and the scalar label is 0);
the image bytes come last.

The index (``.idx``) is text, one ``key<TAB>byte offset`` line per record.

Damage never allocates from a bogus length: a length is checked against the bytes that remain
(in the file, or in the byte range being read) before anything is read. Damaged records raise
:class:`RecordError`, which names the file, the offset and (when known) the key.

Pure Python (``struct``); no numpy, no TensorFlow.
"""

import collections
import os
import struct

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_LENGTH_MASK = (1 << 29) - 1
MAX_LENGTH = _LENGTH_MASK  # the largest piece lrec can describe

IR_FORMAT = "<IfQQ"
_IR = struct.Struct(IR_FORMAT)
IR_SIZE = _IR.size  # 24

IRHeader = collections.namedtuple("IRHeader", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """mxnet's record header. ``label`` is a float, or a tuple of floats when
the record holds an array label (then ``flag`` is its length)."""


class RecordError(ValueError):
    """A damaged record or index. ``str()`` is one line naming the file and the record."""

    def __init__(self, path, offset, reason, key=None):
        where = f"record {key} at byte {offset}" if key is not None else f"byte {offset}"
        super().__init__(f"{path}: {where}: {reason}")
        self.path, self.offset, self.reason, self.key = path, offset, reason, key


# ------------------------------------------------------------------ payload header


def pack(header, data):
    """Payload bytes of ``header`` (an :class:`IRHeader`; ``label`` a number or a sequence of
    numbers, then ``flag`` is ignored) followed by ``data``, as mxnet's ``recordio.pack``."""
    label = header.label
    if isinstance(label, (list, tuple)):
        labels = struct.pack(f"<{len(label)}f", *label)
        return _IR.pack(len(label), 0.0, header.id, header.id2) + labels + bytes(data)
    return _IR.pack(header.flag, label, header.id, header.id2) + bytes(data)


def unpack(payload):
    """``(IRHeader, data)`` of a payload; raises ``ValueError`` when it is too short for its
    header or its array label."""
    if len(payload) < IR_SIZE:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the {IR_SIZE}-byte "
                         f"IRHeader")
    flag, label, id1, id2 = _IR.unpack_from(payload, 0)
    if flag == 0:
        return IRHeader(flag, label, id1, id2), payload[IR_SIZE:]
    end = IR_SIZE + 4 * flag
    if end > len(payload):
        raise ValueError(f"IRHeader announces {flag} float labels, the payload holds only "
                         f"{len(payload)} bytes")
    labels = struct.unpack_from(f"<{flag}f", payload, IR_SIZE)
    return IRHeader(flag, labels, id1, id2), payload[end:]


def class_of(header):
    """The class of an image record: the scalar label, or ``label[0]`` of an array label."""
    return header.label[0] if isinstance(header.label, tuple) else header.label


# ------------------------------------------------------------------ framing


def frame(payload):
    """The framed bytes of one record (split wherever the magic word sits at an aligned offset
    of ``payload``), padded to 4 bytes, as dmlc-core's ``RecordIOWriter::WriteRecord``."""
    payload = bytes(payload)
    size = len(payload)
    if size > MAX_LENGTH:
        raise ValueError(f"a record holds at most {MAX_LENGTH} bytes, got {size}")
    out = []
    start = 0
    position = payload.find(_MAGIC_BYTES)
    while position != -1:
        if position % 4 == 0:
            out.append(_FRAME.pack(MAGIC, ((1 if start == 0 else 2) << 29) | (position - start)))
            out.append(payload[start:position])
            start = position + 4
            position = payload.find(_MAGIC_BYTES, start)
        else:
            position = payload.find(_MAGIC_BYTES, position + 1)
    out.append(_FRAME.pack(MAGIC, ((3 if start else 0) << 29) | (size - start)))
    out.append(payload[start:])
    out.append(b"\0" * (-(size - start) % 4))
    return b"".join(out)


def _padded(length):
    return (length + 3) & ~3


class Truncated(ValueError):
    """The record runs past the bytes available; ``need`` is how many bytes, counted from the
    record's start, the pieces parsed so far announce."""

    def __init__(self, reason, need):
        super().__init__(reason)
        self.need = need


def parse_record(buffer, position, limit=None):
    """Read the record that starts at ``position`` of ``buffer`` (bytes-like), not reading at or
    past ``limit`` (default: the buffer's end). Returns ``(payload, next position)``.

    Raises :class:`Truncated` when the record runs past ``limit``, ``ValueError`` (the reason)
    for a missing magic word or a broken chain of continuation flags.
    """
    limit = len(buffer) if limit is None else min(limit, len(buffer))
    start = position
    pieces = []
    while True:
        if position + 8 > limit:
            raise Truncated(f"truncated: {max(0, limit - position)} byte(s) left where an 8-byte "
                            f"record head is due", position + 8 - start)
        magic, lrec = _FRAME.unpack_from(buffer, position)
        if magic != MAGIC:
            where = " in a continuation piece" if pieces else ""
            raise ValueError(f"bad magic word 0x{magic:08x} (expected 0x{MAGIC:08x}){where}")
        flag, length = lrec >> 29, lrec & _LENGTH_MASK
        if not pieces and flag not in (0, 1):
            raise ValueError(f"continuation flag {flag} where a record starts")
        if pieces and flag not in (2, 3):
            raise ValueError(f"continuation flag {flag} inside a split record")
        done = flag in (0, 3)
        if not done and length % 4:
            raise ValueError(f"a split piece of {length} bytes is not whole words")
        if position + 8 + length > limit:
            raise Truncated(f"length {length} runs past the end ({limit - position - 8} byte(s) "
                            f"left)", position + 8 + length - start)
        pieces.append(bytes(buffer[position + 8:position + 8 + length]))
        # Pieces before the last are whole words; only the last carries padding.
        position += 8 + (_padded(length) if done else length)
        if done:
            return _MAGIC_BYTES.join(pieces), position


# ------------------------------------------------------------------ index


def read_index(path):
    """The ``.idx`` file as a list of ``(key, offset)`` in file order.

    Raises :class:`RecordError` naming the line for anything but ``int<TAB>int`` lines, negative
    offsets or a repeated key.
    """
    entries, seen = [], set()
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.split()
            try:
                key, offset = int(parts[0]), int(parts[1])
                if len(parts) != 2 or offset < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise RecordError(path, 0, f"line {number} is not 'key<TAB>offset': "
                                           f"{text[:60]!r}") from None
            if key in seen:
                raise RecordError(path, 0, f"line {number} repeats key {key}")
            seen.add(key)
            entries.append((key, offset))
    return entries


# ------------------------------------------------------------------ reading


class RecordReader:
    """Random and ranged access to a ``.rec`` file (a context manager).

    :meth:`read` fetches one record by offset; :meth:`read_many` fetches the records of a list
    of offsets with one read per contiguous byte range (what a worker does with its slice of the
    index); :meth:`scan` walks the file (or a byte range) record after record.
    """

    def __init__(self, path, chunk_bytes=16 << 20):
        self.path = path
        self._file = open(path, "rb")
        self.size = os.fstat(self._file.fileno()).st_size
        self.chunk_bytes = chunk_bytes

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, offset, length):
        # Never ask for more than the file holds: read(n) may allocate n bytes up front.
        return self._read_file(offset, max(0, min(length, self.size - offset)))

    def _read_file(self, offset, length):
        self._file.seek(offset)
        return self._file.read(length)

    def read(self, offset, key=None):
        """The payload of the record at byte ``offset``; :class:`RecordError` if damaged."""
        available = self.size - offset
        if offset < 0 or available < 8:
            raise RecordError(self.path, offset,
                              f"offset beyond the end of the file ({self.size} bytes)", key)
        # Read what the heads announce, never more than the file holds: one read for a record
        # in one piece (the head and a typical JPEG fit in the first), one more per split piece.
        want = min(available, 8 << 10)
        buffer = b""
        while True:
            buffer += self._read(offset + len(buffer), want - len(buffer))
            try:
                return parse_record(buffer, 0)[0]
            except Truncated as e:
                if e.need > available or e.need <= len(buffer):
                    raise RecordError(self.path, offset, str(e), key) from None
                want = e.need
            except ValueError as e:
                raise RecordError(self.path, offset, str(e), key) from None

    def read_many(self, offsets, keys=None, limit=None):
        """Yield ``(key, payload or RecordError)`` for each offset, in the given order.

        The offsets are sorted and grouped into byte ranges of about ``chunk_bytes``, each read
        at once (a worker's slice of the index costs a few large reads); each record is parsed
        within ``[its offset, the next offset)`` (the file end, or ``limit``, for the last), so a
        damaged length cannot reach into the next record.
        """
        keys = list(offsets) if keys is None else list(keys)
        end = self.size if limit is None else min(limit, self.size)
        order = sorted(range(len(offsets)), key=lambda i: offsets[i])
        bound = [0] * len(offsets)
        for n, i in enumerate(order):
            following = offsets[order[n + 1]] if n + 1 < len(order) else end
            bound[i] = max(offsets[i], min(following, end))
        results, ready = {}, 0
        n = 0
        while n < len(order):
            start = offsets[order[n]]
            m = n
            while m + 1 < len(order) and bound[order[m + 1]] - start <= self.chunk_bytes:
                m += 1
            stop = bound[order[m]]
            buffer = self._read(start, stop - start) if start < end else b""
            for i in order[n:m + 1]:
                try:
                    results[i] = parse_record(buffer, offsets[i] - start, bound[i] - start)[0]
                except ValueError as e:
                    results[i] = RecordError(self.path, offsets[i], str(e), keys[i])
            n = m + 1
            while ready in results:
                yield keys[ready], results.pop(ready)
                ready += 1

    def scan(self, start=0, stop=None):
        """Yield ``(offset, payload)`` of the records that start in ``[start, stop)``, reading
        sequentially in chunks. A damaged record raises :class:`RecordError` (without an index
        there is no telling where the next record starts)."""
        stop = self.size if stop is None else min(stop, self.size)
        position, base, buffer = start, start, b""
        while position < stop:
            try:
                payload, following = parse_record(buffer, position - base)
            except Truncated as e:
                if e.need > self.size - position or (base == position and e.need <= len(buffer)):
                    raise RecordError(self.path, position, str(e)) from None
                base = position
                buffer = self._read(position, max(self.chunk_bytes, e.need))
                continue
            except ValueError as e:
                raise RecordError(self.path, position, str(e)) from None
            yield position, payload
            position = base + following


# ------------------------------------------------------------------ writing


class RecordWriter:
    """Write a ``.rec`` file and, when ``idx_path`` is given, its ``.idx`` (a context manager)."""

    def __init__(self, path, idx_path=None):
        self.path = path
        self._file = open(path, "wb")
        self._idx = open(idx_path, "w", encoding="ascii") if idx_path else None

    def write(self, payload, key=None):
        """Append one record; returns its byte offset. With an index, ``key`` is its key."""
        offset = self._file.tell()
        self._file.write(frame(payload))
        if self._idx is not None:
            if key is None:
                raise ValueError("a key is needed to write an indexed record")
            self._idx.write(f"{key}\t{offset}\n")
        return offset

    def close(self):
        self._file.close()
        if self._idx is not None:
            self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ insightface datasets

HEADER0 = "header0"
FLAT = "flat"

Layout = collections.namedtuple("Layout", ["kind", "image_keys", "identity_range"])
Layout.__doc__ = """How a ``train.rec`` is organised: ``kind`` is :data:`HEADER0` (record 0's
label is ``[first identity record, end]``, images are records 1 … label[0]−1, identity records
hold ``[start, end)`` ranges) or :data:`FLAT` (shuffled sets: every key of the index is an
image); ``image_keys`` lists the image records' keys in index order; ``identity_range`` is
``(first, end)`` of the identity records (None for FLAT)."""


def _header0_label(payload):
    """``(first, end)`` when the payload is a header0 record, else None."""
    try:
        header, data = unpack(payload)
    except ValueError:
        return None
    if header.flag != 2 or data:
        return None
    first, end = header.label
    if first != int(first) or end != int(end) or not 1 <= first <= end:
        return None
    return int(first), int(end)


def detect_layout(index, read):
    """The :class:`Layout` of a dataset from its index (``[(key, offset)]``) and ``read(key)``
    (the payload of a record).

    Header0 is recognised by record 0 (an array label of two integers ``1 <= first <= end``, no
    image bytes) whose image keys ``1 … first−1`` are all in the index; anything else is a
    flat set. Raises ``ValueError`` for an empty index.
    """
    if not index:
        raise ValueError("the index is empty")
    keys = [key for key, _ in index]
    present = set(keys)
    if 0 in present:
        bounds = _header0_label(read(0))
        if bounds is not None and all(k in present for k in range(1, bounds[0])):
            return Layout(HEADER0, list(range(1, bounds[0])), bounds)
    return Layout(FLAT, keys, None)


def read_property(path):
    """``(num_classes, height, width)`` from insightface's ``property`` file
    (``num_classes,h,w``); raises ``ValueError`` naming the file otherwise."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read().strip()
    try:
        values = tuple(int(v) for v in text.split(","))
        if len(values) != 3 or min(values) < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{path}: expected 'num_classes,height,width', "
                         f"got {text[:60]!r}") from None
    return values


def write_dataset(directory, images, layout=HEADER0, array_labels=False, num_classes=None,
                  image_shape=None, name="train"):
    """Write an insightface dataset (``train.rec``, ``train.idx``, and ``property`` when
    ``image_shape`` = ``(h, w)`` is given) from ``images``, a list of ``(class, image bytes)``.

    :data:`HEADER0`: images are grouped by class as insightface's packing scripts do (record 0
    the header, then the images, then one identity record per class with its ``[start, end)``);
    :data:`FLAT`: records ``0 … n−1`` in the given order. ``array_labels`` stores each class as
    ``[class, 0.0]`` (an array label) instead of a scalar. Returns the ``.rec`` path. For tests,
    benchmarks and users who want to hand a set to insightface tools.
    """
    rec = os.path.join(directory, name + ".rec")
    idx = os.path.join(directory, name + ".idx")

    def label(value):
        return (float(value), 0.0) if array_labels else float(value)

    classes = sorted(set(c for c, _ in images))
    with RecordWriter(rec, idx) as writer:
        if layout == HEADER0:
            ordered = sorted(images, key=lambda item: item[0])
            first = len(ordered) + 1
            writer.write(pack(IRHeader(0, (float(first), float(first + len(classes))), 0, 0),
                              b""), key=0)
            starts = {}
            for key, (cls, data) in enumerate(ordered, start=1):
                starts.setdefault(cls, [key, key])[1] = key + 1
                writer.write(pack(IRHeader(0, label(cls), key, 0), data), key=key)
            for n, cls in enumerate(classes):
                start, end = starts[cls]
                writer.write(pack(IRHeader(0, (float(start), float(end)), first + n, 0), b""),
                             key=first + n)
        elif layout == FLAT:
            for key, (cls, data) in enumerate(images):
                writer.write(pack(IRHeader(0, label(cls), key, 0), data), key=key)
        else:
            raise ValueError(f"layout must be {HEADER0!r} or {FLAT!r}, got {layout!r}")
    if image_shape is not None:
        with open(os.path.join(directory, "property"), "w", encoding="ascii") as f:
            count = len(classes) if num_classes is None else num_classes
            f.write(f"{count},{image_shape[0]},{image_shape[1]}")
    return rec
