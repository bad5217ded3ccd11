"""insightface's datasets as sources of the shard writer, without mxnet.

:func:`convert_rec` turns a training set shipped as ``train.rec`` + ``train.idx`` (+ ``property``)
(MS1MV2 ``faces_emore``, CASIA-WebFace, Glint360K) into image records; :func:`convert_bin` turns
a verification set (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...) into pair records. Both
end in :func:`data_tools.shard_writer.write_output`, like the folder and pairs-file converters:
same manifest, plan, resume, lock, determinism and sha256 checks.

``.rec``: the layout is recognised (:func:`data_tools.insightface.recordio.detect_layout`); workers
check every image record fully (framing, IRHeader, label, image decode), each reading a contiguous
byte range of the file through the index; a damaged record is skipped and listed in the manifest
with its key and offset (``strict``: fatal). Classes are remapped to 0…C−1 in numeric order of the
original ids, which ``labels.txt`` keeps (line i holds the id of label i); ``property`` is checked
against what was read. Image bytes are stored as they are (unless ``image_size`` or ``crop_box``
asks for a transform, as with image folders).

``.bin``: read by the restricted unpickler of :mod:`data_tools.insightface.bin_format`; pair i holds
images 2i and 2i+1; folds are contiguous, sized as ``KFold(10, shuffle=False)`` sizes them.
"""

import bisect
import collections
import math
import os
import random
import time

import data_tools
from data_tools import image_files, schema, teachers
from data_tools.conversion import (
    PairImage,
    PairRecord,
    check_options,
    check_positive,
    format_skips,
    teacher_manifest,
)
from data_tools.insightface import bin_format, recordio
from data_tools.shard_writer import (
    ConversionError,
    ShardOutput,
    Workers,
    locked_output,
    plan_shards,
    previous_shards,
    progress_bar,
    resolve_num_shards,
    write_output,
)

REC_NAME, IDX_NAME, PROPERTY_NAME = "train.rec", "train.idx", "property"
# Records per worker task of the check pass: one read of a contiguous byte range each.
_CHECK_CHUNK = 256

RecRecord = collections.namedtuple("RecRecord", ["key", "offset", "label", "identity",
                                                 "sha256"])
RecRecord.__doc__ = """One image record of a ``.rec``: its index key and byte offset, the
remapped label, the original class id (as text, the line of ``labels.txt``) and the sha256 of
the image bytes."""


# ------------------------------------------------------------------ worker side

_READERS = {}


def _reader(path):
    # One open file per process (the key holds the pid: a forked worker must not share the
    # parent's file offset).
    key = (os.getpid(), path)
    if key not in _READERS:
        _READERS[key] = recordio.RecordReader(path)
    return _READERS[key]


def _close_readers():
    for key in [key for key in _READERS if key[0] == os.getpid()]:
        _READERS.pop(key).close()


def _class_id(header):
    value = recordio.class_of(header)
    if not math.isfinite(value) or value < 0 or value != int(value) or value >= 2 ** 31:
        raise ValueError(f"label {value!r} is not a class id")
    return int(value)


def _check_rec_task(task):
    """Worker: check the image records of ``(path, keys, offsets, limit, image_size, crop_box)``
    (sorted by offset; ``limit`` is where the next record of the file starts). Returns
    ``[(key, offset, class id, ImageInfo, image bytes, reason)]``; reason is None when usable."""
    path, keys, offsets, limit, image_size, crop_box = task
    results = []
    reader = _reader(path)
    for offset, (key, payload) in zip(offsets, reader.read_many(offsets, keys, limit)):
        if isinstance(payload, recordio.RecordError):
            results.append((key, offset, None, None, 0, payload.reason))
            continue
        try:
            header, data = recordio.unpack(payload)
            class_id = _class_id(header)
            info = image_files.check_bytes(data, image_size, crop_box)
        except (ValueError, image_files.ImageError) as e:
            results.append((key, offset, None, None, 0, str(e)))
            continue
        results.append((key, offset, class_id, info, len(data), None))
    return results


def _read_rec_image(path, key, offset):
    header, data = recordio.unpack(_reader(path).read(offset, key))
    return data


def _encode_rec_task(task):
    """Worker: ``(index, path, key, offset, info, image_size, crop_box)`` → ``(index,
    EncodedImage or None, error or None)``."""
    index, path, key, offset, info, image_size, crop_box = task
    try:
        data = _read_rec_image(path, key, offset)
        return index, image_files.encode_bytes(data, info, image_size, crop_box), None
    except (ValueError, image_files.ImageError) as e:
        return index, None, e


def _check_bytes_task(task):
    index, data, image_size, crop_box = task
    try:
        return index, image_files.check_bytes(data, image_size, crop_box), None
    except image_files.ImageError as e:
        return index, None, str(e)


def _encode_bytes_task(task):
    index, data, info, image_size, crop_box = task
    try:
        return index, image_files.encode_bytes(data, info, image_size, crop_box), None
    except image_files.ImageError as e:
        return index, None, e


# ------------------------------------------------------------------ shared


def _summary(kind, output_dir, count, kept, skipped, start_time, num_images, extra):
    seconds = time.time() - start_time
    summary = {"kind": kind, "output_dir": output_dir}
    summary.update(extra)
    summary.update({
        "num_images": num_images, "num_shards": count, "shards_written": count - kept,
        "shards_kept": kept, "num_skipped": len(skipped), "skipped": skipped,
        "seconds": seconds, "images_per_second": num_images / max(seconds, 1e-9)})
    return summary


def _encoded_in_order(workers, items, encode_task, read_in_parent):
    """Yield the EncodedImage of each of ``items`` (``(index, info, task)``), in order: stored
    as they are in this process (one read and one hash: sending bytes back from a worker costs
    more), re-encoded by the workers, ahead of the writer."""
    tasks = [task for _, info, task in items if info.stored_format is None]
    reencoded = iter(workers.imap(encode_task, tasks)) if tasks else iter(())
    for index, info, task in items:
        if info.stored_format is None:
            _, encoded, error = next(reencoded)
        else:
            _, encoded, error = read_in_parent(task)
        yield index, encoded, error


def _metadata(base, **fields):
    manifest = {"tool_version": data_tools.__version__, "schema_version": schema.SCHEMA_VERSION}
    manifest.update(base)
    manifest.update(fields)
    return manifest


# ------------------------------------------------------------------ .rec training sets


def _rec_paths(input_rec):
    directory = os.path.abspath(input_rec)
    if not os.path.isdir(directory):
        raise ConversionError(f"--input_rec {directory} is not a directory (expected one that "
                              f"holds {REC_NAME} and {IDX_NAME})")
    rec, idx = os.path.join(directory, REC_NAME), os.path.join(directory, IDX_NAME)
    for path in (rec, idx):
        if not os.path.isfile(path):
            raise ConversionError(f"--input_rec: {path} not found (insightface sets ship "
                                  f"{REC_NAME}, {IDX_NAME} and {PROPERTY_NAME})")
    prop = os.path.join(directory, PROPERTY_NAME)
    return directory, rec, idx, prop if os.path.isfile(prop) else None


def _check_rec(workers, rec, index, layout, image_size, crop_box, size, progress):
    """The check pass over the image records, in byte-range chunks; results in key order of
    ``layout.image_keys``."""
    offset_of = dict(index)
    all_offsets = sorted(offset_of.values())
    items = sorted((offset_of[key], key) for key in layout.image_keys)
    tasks = []
    for start in range(0, len(items), _CHECK_CHUNK):
        chunk = items[start:start + _CHECK_CHUNK]
        following = bisect.bisect_right(all_offsets, chunk[-1][0])
        limit = all_offsets[following] if following < len(all_offsets) else size
        tasks.append((rec, [k for _, k in chunk], [o for o, _ in chunk], limit, image_size,
                      crop_box))
    results = {}
    with progress_bar(len(items), "checking", progress) as bar:
        for chunk in workers.imap(_check_rec_task, tasks):
            for item in chunk:
                results[item[0]] = item
            bar.update(len(chunk))
    return [results[key] for key in layout.image_keys]


def _check_property(prop, shape, classes, checked):
    """``property`` (``num_classes,h,w``) against what was read; ConversionError otherwise."""
    num_classes, height, width = shape
    if num_classes != len(classes):
        raise ConversionError(f"{prop} says {num_classes} classes, the records hold "
                              f"{len(classes)}; fix or remove {PROPERTY_NAME}")
    wrong = [(key, info) for key, _, _, info, _, _ in checked
             if info is not None and (info.height, info.width) != (height, width)]
    if wrong:
        key, info = wrong[0]
        raise ConversionError(f"{prop} says {height}x{width} images, {len(wrong)} record(s) "
                              f"differ (e.g. record {key}: {info.height}x{info.width}); fix or "
                              f"remove {PROPERTY_NAME}")


def _rec_teacher_pass(teacher, out, rec, checked, progress):
    """The teacher's vector of every usable record (the stored image bytes: a .rec holds
    aligned faces, there is no other source photo); a record it fails on becomes a damaged one
    with the reason. Returns ``({key: vector}, fallback keys, checked)``."""
    usable = [item for item in checked if item[5] is None]
    with locked_output(out.output_dir):
        cache = teachers.TeacherCache(out.output_dir, teacher)
        with progress_bar(len(usable), f"teacher {teacher.name}", progress) as bar:
            vectors, failed, fallbacks = teachers.embed_all(
                teacher, cache, [(key, lambda k=key, o=offset: _read_rec_image(rec, k, o))
                                 for key, offset, _, _, _, _ in usable], bar)
    checked = [(key, offset, None, None, 0, failed[key]) if key in failed
               else (key, offset, class_id, info, nbytes, reason)
               for key, offset, class_id, info, nbytes, reason in checked]
    return vectors, fallbacks, checked


def convert_rec(input_rec, output_dir, name="train", num_shards=None, seed=0, image_size=None,
                crop_box=None, min_images_per_class=1, num_workers=None, strict=False,
                overwrite=False, progress=True, teacher=None):
    """Convert an insightface ``train.rec``/``train.idx`` directory to sharded image records.

    ``teacher`` (a ``data_tools.teachers.Teacher``) stores its embedding of each image (made
    from the stored bytes); a record it fails on is skipped with the reason.

    Returns a summary dict like :func:`data_tools.conversion.convert_folder` (plus ``layout``).
    Raises :class:`ConversionError` for bad arguments, a missing file, an unreadable index, a
    ``property`` that disagrees with the records, a damaged record under ``strict``, or an output
    directory that holds another conversion (unless ``overwrite``).
    """
    try:
        return _convert_rec(input_rec, output_dir, name, num_shards, seed, image_size, crop_box,
                            min_images_per_class, num_workers, strict, overwrite, progress,
                            teacher)
    finally:
        _close_readers()  # the file may change before the next conversion


def _convert_rec(input_rec, output_dir, name, num_shards, seed, image_size, crop_box,
                 min_images_per_class, num_workers, strict, overwrite, progress, teacher=None):
    start_time = time.time()
    crop_box, num_workers = check_options(name, num_shards, image_size, crop_box, num_workers)
    check_positive(min_images_per_class, "min_images_per_class", allow_none=False)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConversionError(f"--seed must be an integer, got {seed!r}")
    directory, rec, idx, prop = _rec_paths(input_rec)
    output_dir = os.path.abspath(output_dir)
    options = {"kind": "images", "input_rec": directory, "name": name, "num_shards": num_shards,
               "seed": seed, "image_size": image_size, "crop_box": crop_box,
               "min_images_per_class": min_images_per_class}
    if teacher is not None:
        options["teacher"] = teachers.describe(teacher)
    out = ShardOutput(output_dir, name, options, overwrite, progress)
    previous_shards(out)  # refuse early, before the long part
    try:
        shape = recordio.read_property(prop) if prop else None
        index = recordio.read_index(idx)
        size = os.path.getsize(rec)
        with recordio.RecordReader(rec) as reader:
            offset_of = dict(index)
            layout = recordio.detect_layout(index, lambda key: reader.read(offset_of[key], key))
    except ValueError as e:  # RecordError included
        raise ConversionError(f"--input_rec: {e}") from None
    if not layout.image_keys:
        raise ConversionError(f"{rec} holds no image records")

    with Workers(num_workers) as workers:
        checked = _check_rec(workers, rec, index, layout, image_size, crop_box, size, progress)
        teacher_of, fallbacks = None, ()
        if teacher is not None:
            teacher_of, fallbacks, checked = _rec_teacher_pass(teacher, out, rec, checked,
                                                               progress)
        skipped = [{"path": f"{REC_NAME}#{key}", "key": key, "offset": offset,
                    "reason": reason}
                   for key, offset, _, _, _, reason in checked if reason is not None]
        if strict and skipped:
            first = skipped[0]
            raise ConversionError(f"--strict: {rec}: record {first['key']} at byte "
                                  f"{first['offset']}: {first['reason']} ({len(skipped)} "
                                  f"damaged record(s) in all)")
        by_class = collections.defaultdict(list)
        for key, offset, class_id, info, nbytes, reason in checked:
            if reason is None:
                by_class[class_id].append((key, offset, info, nbytes))
        if not by_class:
            raise ConversionError(f"no usable image record in {rec}: {len(skipped)} damaged, "
                                  f"e.g. {format_skips(skipped[:3])}")
        if shape is not None:
            _check_property(prop, shape, by_class, checked)
        originals = sorted(c for c, items in by_class.items()
                           if len(items) >= min_images_per_class)
        dropped = [c for c, items in by_class.items() if len(items) < min_images_per_class]
        if not originals:
            raise ConversionError(f"no class has --min_images_per_class={min_images_per_class} "
                                  f"valid images")
        records, sizes, info_of = [], 0, {}
        for label, original in enumerate(originals):
            for key, offset, info, nbytes in sorted(by_class[original], key=lambda i: i[0]):
                records.append(RecRecord(key, offset, label, str(original), info.sha256))
                info_of[key] = info
                sizes += nbytes
        # Sorted list + seeded shuffle: the order depends on the input, options and seed only.
        random.Random(seed).shuffle(records)
        reencoded = sum(int(info.reencode) for info in info_of.values())
        count = resolve_num_shards(num_shards, sizes, len(records), "images")
        descriptors = [list(r) for r in records]
        if teacher_of is not None:
            descriptors = [d + [teachers.vector_digest(teacher_of[r.key])]
                           for d, r in zip(descriptors, records)]
        shards = plan_shards(out, count, descriptors)

        def parent_read(task):
            return _encode_rec_task(task)

        def examples(run):
            items = [(i, info_of[r.key], (i, rec, r.key, r.offset, info_of[r.key], image_size,
                                          crop_box)) for i, r in enumerate(run)]
            encoded = _encoded_in_order(workers, items, _encode_rec_task, parent_read)
            for record, (_, image, error) in zip(run, encoded):
                if error is not None:
                    raise ConversionError(f"{rec}: record {record.key} changed or became "
                                          f"unreadable during the conversion ({error}); re-run "
                                          f"to resume")
                yield schema.image_example(
                    image.encoded, image.format, image.height, image.width, image.channels,
                    record.label, record.identity, f"{REC_NAME}#{record.key}",
                    teacher_embedding=None if teacher_of is None else teacher_of[record.key])

        def build_manifest(manifest_shards):
            extra = {}
            if teacher is not None:
                extra["teacher"] = teacher_manifest(teacher, [r.key for r in records],
                                                    fallbacks, teacher_of)
            return _metadata(dict({
                "kind": "images", "num_images": len(records), "num_classes": len(originals),
                "dropped_classes": len(dropped),
                "dropped_images": sum(len(by_class[c]) for c in dropped),
                "shards": manifest_shards, "skipped": skipped, "options": options,
                "formats": {"reencoded": reencoded, "as_is": len(records) - reencoded},
            }, **extra), source={"format": "insightface_rec", "layout": layout.kind,
                       "property": list(shape) if shape else None,
                       "image_records": len(layout.image_keys)})

        manifest, kept = write_output(out, shards, records, examples, build_manifest,
                                      labels=[str(c) for c in originals])
    return _summary("images", output_dir, count, kept, skipped, start_time, len(records), {
        "num_classes": len(originals), "dropped_classes": len(dropped),
        "dropped_images": manifest["dropped_images"], "layout": layout.kind,
        **({"teacher": manifest["teacher"]} if "teacher" in manifest else {})})


# ------------------------------------------------------------------ .bin verification sets


def convert_bin(bin_path, output_dir, name="pairs", num_shards=None, image_size=None,
                crop_box=None, allow_missing_pairs=False, num_workers=None, strict=False,
                overwrite=False, progress=True, max_bytes=bin_format.DEFAULT_MAX_BYTES,
                teacher=None):
    """Convert an insightface verification ``.bin`` to pair records, in the file's order.

    Returns a summary dict like :func:`data_tools.conversion.convert_pairs`. An image that does
    not decode is an error naming it, unless ``allow_missing_pairs`` leaves its pair out (listed
    in ``skipped``; ``strict`` makes that fatal too). ``teacher``: as :func:`convert_rec` (an
    image it fails on counts as one that does not decode).
    """
    start_time = time.time()
    crop_box, num_workers = check_options(name, num_shards, image_size, crop_box, num_workers)
    bin_path = os.path.abspath(bin_path)
    if not os.path.isfile(bin_path):
        raise ConversionError(f"--from_bin {bin_path} does not exist")
    output_dir = os.path.abspath(output_dir)
    options = {"kind": "pairs", "from_bin": bin_path, "name": name, "num_shards": num_shards,
               "image_size": image_size, "crop_box": crop_box,
               "allow_missing_pairs": bool(allow_missing_pairs)}
    if teacher is not None:
        options["teacher"] = teachers.describe(teacher)
    out = ShardOutput(output_dir, name, options, overwrite, progress)
    previous_shards(out)
    try:
        bins, issame = bin_format.read_bin(bin_path, max_bytes=max_bytes)
        sizes_of_folds = bin_format.fold_sizes(len(issame))
    except bin_format.BinFormatError as e:
        raise ConversionError(str(e)) from None
    folds = [k for k, n in enumerate(sizes_of_folds) for _ in range(n)]
    base = os.path.basename(bin_path)

    with Workers(num_workers) as workers:
        infos, reasons = [None] * len(bins), [None] * len(bins)
        tasks = [(i, data, image_size, crop_box) for i, data in enumerate(bins)]
        with progress_bar(len(tasks), "checking", progress) as bar:
            for i, info, reason in workers.imap(_check_bytes_task, tasks):
                infos[i], reasons[i] = info, reason
                bar.update(1)
        teacher_of, fallbacks = None, ()
        if teacher is not None:
            usable = [i for i, reason in enumerate(reasons) if reason is None]
            with locked_output(out.output_dir):
                cache = teachers.TeacherCache(out.output_dir, teacher)
                with progress_bar(len(usable), f"teacher {teacher.name}", progress) as bar:
                    teacher_of, failed, fallbacks = teachers.embed_all(
                        teacher, cache, [(i, bins[i]) for i in usable], bar)
            for i, reason in failed.items():
                infos[i], reasons[i] = None, reason
        bad = [{"path": f"{base}#{i}", "reason": reason}
               for i, reason in enumerate(reasons) if reason is not None]
        if bad and not allow_missing_pairs:
            raise ConversionError(f"{bin_path}: {len(bad)} image(s) cannot be used (pass "
                                  f"--allow_missing_pairs to leave their pairs out): "
                                  f"{format_skips(bad[:5])}")
        if strict and bad:
            raise ConversionError(f"--strict: {len(bad)} pair image(s) skipped: "
                                  f"{format_skips(bad)}")
        records, sizes = [], 0
        bin_pair = {}  # record index (kept pairs, no gaps) -> the pair's place in the .bin
        for i, same in enumerate(issame):
            a, b = 2 * i, 2 * i + 1
            if infos[a] is None or infos[b] is None:
                continue
            bin_pair[len(records)] = i
            records.append(PairRecord(len(records), folds[i], same,
                                      PairImage(f"{base}#{a}", "", infos[a].sha256),
                                      PairImage(f"{base}#{b}", "", infos[b].sha256)))
            sizes += len(bins[a]) + len(bins[b])
        if not records:
            raise ConversionError(f"no pair of {bin_path} has two usable images")
        fold_sizes = [0] * len(sizes_of_folds)
        for record in records:
            fold_sizes[record.fold] += 1
        count = resolve_num_shards(num_shards, sizes, len(records), "pairs")
        descriptors = [[r.index, r.fold, r.issame, list(r.image1), list(r.image2)]
                       for r in records]
        if teacher_of is not None:
            descriptors = [d + [[teachers.vector_digest(teacher_of[j])
                                 for j in (2 * bin_pair[r.index], 2 * bin_pair[r.index] + 1)]]
                           for d, r in zip(descriptors, records)]
        shards = plan_shards(out, count, descriptors)
        used = [j for r in records for j in (2 * bin_pair[r.index], 2 * bin_pair[r.index] + 1)]
        reencoded = sum(int(infos[j].reencode) for j in used)

        def examples(run):
            items = [(n, infos[j], (n, bins[j], infos[j], image_size, crop_box))
                     for n, j in enumerate(j for r in run for j in (2 * bin_pair[r.index],
                                                                    2 * bin_pair[r.index] + 1))]
            encoded = _encoded_in_order(workers, items, _encode_bytes_task, _encode_bytes_task)
            for record in run:
                images = []
                for k, source in enumerate((record.image1, record.image2)):
                    _, image, error = next(encoded)
                    if error is not None:
                        raise ConversionError(f"{source.relpath}: {error}")
                    j = 2 * bin_pair[record.index] + k
                    images.append({"encoded": image.encoded, "format": image.format,
                                   "height": image.height, "width": image.width,
                                   "channels": image.channels, "identity": source.identity,
                                   "filename": source.relpath,
                                   "teacher_embedding": None if teacher_of is None
                                   else teacher_of[j]})
                yield schema.pair_example(record.index, record.fold, record.issame, images[0],
                                          images[1])

        num_pairs = len(issame)

        def build_manifest(manifest_shards):
            extra = {}
            if teacher is not None:
                extra["teacher"] = teacher_manifest(teacher, used, fallbacks, teacher_of)
            return _metadata(dict({
                "kind": "pairs", "num_pairs": len(records), "num_folds": len(sizes_of_folds),
                "pairs_per_fold": (num_pairs // (2 * len(sizes_of_folds))
                                   if num_pairs % (2 * len(sizes_of_folds)) == 0 else None),
                "fold_sizes": fold_sizes, "missing_pairs": num_pairs - len(records),
                "num_images": len(used), "shards": manifest_shards, "skipped": bad,
                "options": options,
                "formats": {"reencoded": reencoded, "as_is": len(used) - reencoded},
            }, **extra), source={"format": "insightface_bin", "num_pairs": num_pairs})

        manifest, kept = write_output(out, shards, records, examples, build_manifest)
    return _summary("pairs", output_dir, count, kept, bad, start_time, 2 * len(records), {
        "num_pairs": len(records), "num_folds": len(sizes_of_folds), "fold_sizes": fold_sizes,
        "missing_pairs": manifest["missing_pairs"],
        **({"teacher": manifest["teacher"]} if "teacher" in manifest else {})})
