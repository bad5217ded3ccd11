r"""Convert face folders, or an LFW pairs file, to sharded TFRecords.

Training images (one sub-folder per identity, the layout of LFW, CASIA-WebFace and
MS-Celeb-1M_clean_align)::

    python data_tools/make_tfrecords.py --input_dir=faces/ --output_dir=records/train

writes ``train-00000-of-000NN.tfrecord`` shards (identities mixed across shards in a seeded order),
``labels.txt`` (line i names label i; identities sorted by name) and ``manifest.json``.

Verification pairs (LFW View 2 ``pairs.txt``), in pairs-file order so that folds stay contiguous::

    python data_tools/make_tfrecords.py --pairs=pairs.txt --input_dir=lfw/ --output_dir=records/lfw

How it works: workers (``--num_workers`` processes, PIL only) check every image fully, reading and
decoding each file once; then a deterministic plan assigns records to shards. Shard by shard, the
parent reads again the files that are stored as they are (no decoder: the check pass recorded
their record fields, and their sha256 must still match), the workers re-encode the others, and the
parent serialises the records (``schema``) and writes them. Each shard is written under a
temporary name and renamed when complete, ``manifest.json`` last, so a killed run never leaves a
shard that looks complete but is not. ``.plan.json`` keeps the plan digest and sha256 of every
finished shard: re-running the same command keeps the finished shards and writes the rest,
byte-identical to an uninterrupted run.
"""

import os
import sys

if __package__ in (None, ""):
    # Run as a script, sys.path[0] is data_tools/ and the package itself is not importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import collections  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data_tools  # noqa: E402
from data_tools import image_files, schema  # noqa: E402
from data_tools import manifest as manifest_lib  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent runs are the user's lookout.
    fcntl = None

TARGET_SHARD_BYTES = 100 * 1024 * 1024
PLAN_NAME = ".plan.json"
LOCK_NAME = ".lock"
# Temporary files this tool creates: shards being written and atomically replaced JSON/text.
_TMP_RE = re.compile(r"^\.(.+\.tfrecord|manifest\.json|labels\.txt|\.plan\.json)\.tmp-\d+$")
_MAX_LISTED_SKIPS = 20


class ConversionError(ValueError):
    """Bad input, options or output state. The CLI prints it as one message and exits 1."""


ImageRecord = collections.namedtuple("ImageRecord", ["relpath", "identity", "label", "sha256"])
PairImage = collections.namedtuple("PairImage", ["relpath", "identity", "sha256"])
PairRecord = collections.namedtuple("PairRecord", ["index", "fold", "issame", "image1", "image2"])


def shard_filename(name, index, num_shards):
    """``{name}-00003-of-00010.tfrecord``."""
    return "%s-%05d-of-%05d.tfrecord" % (name, index, num_shards)


# ------------------------------------------------------------------ argument checks


def _check_positive(value, flag, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConversionError("--%s must be a positive integer, got %r" % (flag, value))
    return value


def _check_name(name):
    if (not name or name.startswith(".") or "/" in name or os.sep in name
            or not re.match(r"^[\w.-]+$", name)):
        raise ConversionError("--name must be a plain file name prefix (letters, digits, "
                              "'_', '-', '.'), got %r" % (name,))
    return name


def _check_crop_box(crop_box):
    try:
        box = image_files.parse_crop_box(crop_box)
    except ValueError as e:
        raise ConversionError("--crop_box: %s" % e) from None
    return list(box) if box is not None else None


def _check_input_dir(input_dir):
    if not os.path.exists(input_dir):
        raise ConversionError("--input_dir %s does not exist" % input_dir)
    if not os.path.isdir(input_dir):
        raise ConversionError("--input_dir %s is not a directory" % input_dir)
    if not os.listdir(input_dir):
        raise ConversionError("--input_dir %s is empty" % input_dir)


def _resolve_workers(num_workers):
    _check_positive(num_workers, "num_workers")
    return num_workers or os.cpu_count() or 1


# ------------------------------------------------------------------ worker pool


def _pool_context():
    # The workers only run image_files (PIL, numpy), never TensorFlow, so forking this parent,
    # which has TF loaded, is safe; "spawn" would re-run __main__ and import TF in every worker.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _ignore_sigint():
    # Ctrl-C reaches the whole process group; the parent alone handles it (terminating the
    # pool), instead of every worker printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Workers(object):
    """Ordered parallel map over PIL tasks; runs in-process for a single worker.

    Create it before any progress bar: tqdm starts a monitor thread, and a process should fork
    before it has threads.
    """

    def __init__(self, num_workers):
        self.num_workers = num_workers
        self._pool = None

    def __enter__(self):
        if self.num_workers > 1:
            self._pool = _pool_context().Pool(self.num_workers, initializer=_ignore_sigint)
        return self

    def imap(self, func, tasks):
        if self._pool is None:
            return (func(task) for task in tasks)
        # Small chunks keep the ordered stream flowing; large ones cut IPC overhead.
        chunksize = max(1, min(32, len(tasks) // (4 * self.num_workers)))
        return self._pool.imap(func, tasks, chunksize)

    def __exit__(self, exc_type, exc_value, traceback):
        if self._pool is not None:
            if exc_type is None:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()
            self._pool = None


def _progress(total, desc, enabled):
    # disable=None: a bar on a terminal only, so log files do not fill with carriage returns.
    return tqdm(total=total, desc=desc, unit="img", disable=None if enabled else True,
                dynamic_ncols=True)


def _check_images(workers, input_dir, relpaths, image_size, crop_box, progress):
    """Full validation of every image; returns ``(infos, reasons)`` aligned with ``relpaths``."""
    tasks = [(i, os.path.join(input_dir, relpath), image_size, crop_box)
             for i, relpath in enumerate(relpaths)]
    infos = [None] * len(tasks)
    reasons = [None] * len(tasks)
    with _progress(len(tasks), "checking", progress) as bar:
        for index, info, reason in workers.imap(image_files.check_task, tasks):
            infos[index] = info
            reasons[index] = reason
            bar.update(1)
    return infos, reasons


# ------------------------------------------------------------------ output directory state


def _canonical(value):
    return json.loads(json.dumps(value, sort_keys=True))


def _load_state(output_dir):
    """The previous conversion's ``.plan.json`` (or, without one, its manifest), or None."""
    for filename in (PLAN_NAME, manifest_lib.MANIFEST_NAME):
        path = os.path.join(output_dir, filename)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    state = json.load(f)
            except ValueError:
                continue
            if isinstance(state, dict) and isinstance(state.get("options"), dict):
                state["source"] = filename
                return state
    return None


def _previous_shards(output_dir, options, overwrite):
    """Check ``output_dir`` against ``options``; returns ``{file: shard state}`` to resume from.

    Raises :class:`ConversionError` when the directory holds other files, or a conversion with
    different options, and ``overwrite`` is false.
    """
    if not os.path.exists(output_dir):
        return {}
    if not os.path.isdir(output_dir):
        raise ConversionError("--output_dir %s exists and is not a directory" % output_dir)
    if overwrite or not [f for f in os.listdir(output_dir) if f != LOCK_NAME]:
        return {}
    state = _load_state(output_dir)
    if state is None:
        raise ConversionError("--output_dir %s is not empty and holds no conversion to resume; "
                              "use an empty directory, or pass --overwrite to replace its "
                              ".tfrecord files, labels.txt and manifest.json" % output_dir)
    previous, current = _canonical(state["options"]), _canonical(options)
    if previous != current:
        changes = ["%s %s -> %s" % (key, json.dumps(previous.get(key)),
                                    json.dumps(current.get(key)))
                   for key in sorted(set(previous) | set(current))
                   if previous.get(key) != current.get(key)]
        raise ConversionError("--output_dir %s holds a conversion made with other options (%s); "
                              "pass --overwrite to replace it, or choose another --output_dir"
                              % (output_dir, "; ".join(changes)))
    if state["source"] != PLAN_NAME:
        return {}
    return {shard["file"]: shard for shard in state.get("shards", []) if "file" in shard}


def _lock(output_dir):
    if fcntl is None:
        return None
    fd = os.open(os.path.join(output_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConversionError("another make_tfrecords run is writing to %s" % output_dir) from None
    return fd


def _is_artifact(filename):
    return (filename in (manifest_lib.MANIFEST_NAME, manifest_lib.LABELS_NAME, PLAN_NAME)
            or filename.endswith(".tfrecord") or _TMP_RE.match(filename) is not None)


def _clean_output_dir(output_dir, overwrite):
    """Remove what must not survive into this run.

    Always: temporary files of killed runs, and the manifest (it comes back last, when the
    output is complete again). With ``overwrite``: every file this tool writes.
    """
    for filename in os.listdir(output_dir):
        path = os.path.join(output_dir, filename)
        if not os.path.isfile(path) or filename == LOCK_NAME:
            continue
        if ((overwrite and _is_artifact(filename)) or _TMP_RE.match(filename)
                or filename == manifest_lib.MANIFEST_NAME):
            os.remove(path)


# ------------------------------------------------------------------ shard writing


_Shard = collections.namedtuple("_Shard", ["file", "start", "stop", "plan"])


def _plan_shards(name, num_shards, descriptors, options):
    """Contiguous slices of the record list, each with a digest of everything it will hold."""
    total = len(descriptors)
    shards = []
    for k in range(num_shards):
        start, stop = k * total // num_shards, (k + 1) * total // num_shards
        filename = shard_filename(name, k, num_shards)
        plan = hashlib.sha256(json.dumps(
            {"file": filename, "options": options, "records": descriptors[start:stop],
             "schema_version": schema.SCHEMA_VERSION, "tool_version": data_tools.__version__},
            sort_keys=True).encode("utf-8")).hexdigest()
        shards.append(_Shard(filename, start, stop, plan))
    return shards


def _write_plan(output_dir, options, entries):
    manifest_lib.atomic_write_text(os.path.join(output_dir, PLAN_NAME), manifest_lib.dumps({
        "options": options, "shards": entries, "schema_version": schema.SCHEMA_VERSION,
        "tool_version": data_tools.__version__}))


def _fsync_file(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _encoded_sources(workers, input_dir, sources, info_of, image_size, crop_box):
    """Yield the EncodedImage of each ``(relpath, sha256)``, in order, checking it is unchanged.

    ``info_of`` maps a relpath to its :class:`image_files.ImageInfo` from the check pass. Files
    stored as they are cost one read and one hash, here: sending their bytes back from a worker
    would cost more. The workers re-encode the others, ahead of the writer.
    """
    paths = [os.path.join(input_dir, relpath) for relpath, _ in sources]
    infos = [info_of[relpath] for relpath, _ in sources]
    tasks = [(i, paths[i], info, image_size, crop_box)
             for i, info in enumerate(infos) if info.stored_format is None]
    reencoded = iter(workers.imap(image_files.encode_task, tasks)) if tasks else iter(())
    for i, (relpath, _) in enumerate(sources):
        if infos[i].stored_format is None:
            _, encoded, error = next(reencoded)
        else:
            _, encoded, error = image_files.encode_task(
                (i, paths[i], infos[i], image_size, crop_box))
        if isinstance(error, image_files.ImageChanged):
            raise ConversionError("%s changed during the conversion; re-run to resume" % relpath)
        if error is not None:
            raise ConversionError("%s became unreadable during the conversion (%s); re-run to "
                                  "resume" % (relpath, error))
        yield encoded


def _write_shards(output_dir, name, options, shards, records, mode, previous, workers,
                  input_dir, info_of, image_size, crop_box, progress):
    """Write the planned shards, keeping finished ones from an earlier run of the same plan.

    ``mode`` supplies ``sources(record) -> [(relpath, sha256)]`` and
    ``serialize(record, [EncodedImage]) -> bytes``; ``previous`` maps file names to the shard
    states of ``.plan.json``; ``info_of`` maps each source relpath to its ImageInfo. Returns the
    manifest shard entries and the number of shards kept.
    """
    entries, todo = [], []
    for shard in shards:
        path = os.path.join(output_dir, shard.file)
        old = previous.get(shard.file, {})
        entry = {"file": shard.file, "plan": shard.plan, "records": shard.stop - shard.start,
                 "bytes": None, "sha256": None}
        if (old.get("plan") == shard.plan and old.get("sha256") and os.path.isfile(path)
                and manifest_lib.sha256_file(path) == old["sha256"]):
            entry["bytes"], entry["sha256"] = os.path.getsize(path), old["sha256"]
        else:
            todo.append(len(entries))
        entries.append(entry)
    # The plan goes down first: whatever happens next, the next run knows what was intended.
    _write_plan(output_dir, options, entries)

    total = sum(entries[i]["records"] for i in todo)
    with _progress(total, "writing", progress) as bar:
        for i in todo:
            shard, entry = shards[i], entries[i]
            path = os.path.join(output_dir, shard.file)
            tmp = os.path.join(output_dir, ".%s.tmp-%d" % (shard.file, os.getpid()))
            shard_records = records[shard.start:shard.stop]
            per_record = [mode.sources(record) for record in shard_records]
            flat = [source for sources in per_record for source in sources]
            encoded = _encoded_sources(workers, input_dir, flat, info_of, image_size, crop_box)
            try:
                with tf.io.TFRecordWriter(tmp) as writer:
                    for record, sources in zip(shard_records, per_record):
                        writer.write(mode.serialize(record, [next(encoded) for _ in sources]))
                        bar.update(1)
                _fsync_file(tmp)
                entry["bytes"] = os.path.getsize(tmp)
                entry["sha256"] = manifest_lib.sha256_file(tmp)
                # Recorded before the rename, so that a shard under its final name always has
                # its sha256 in the plan; a kill in between leaves only the temp file.
                _write_plan(output_dir, options, entries)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise

    # Shards of an earlier plan with another shard count would be picked up by a glob.
    planned = set(entry["file"] for entry in entries)
    stale = re.compile(r"^%s-\d{5}-of-\d{5}\.tfrecord$" % re.escape(name))
    for filename in os.listdir(output_dir):
        if stale.match(filename) and filename not in planned:
            os.remove(os.path.join(output_dir, filename))
    manifest_shards = [{k: entry[k] for k in ("file", "records", "bytes", "sha256")}
                       for entry in entries]
    return manifest_shards, len(shards) - len(todo)


class _ImageMode(object):
    @staticmethod
    def sources(record):
        return [(record.relpath, record.sha256)]

    @staticmethod
    def serialize(record, encoded):
        image = encoded[0]
        return schema.image_example(image.encoded, image.format, image.height, image.width,
                                    image.channels, record.label, record.identity,
                                    record.relpath)


class _PairMode(object):
    @staticmethod
    def sources(record):
        return [(record.image1.relpath, record.image1.sha256),
                (record.image2.relpath, record.image2.sha256)]

    @staticmethod
    def serialize(record, encoded):
        images = []
        for source, image in zip((record.image1, record.image2), encoded):
            images.append({"encoded": image.encoded, "format": image.format,
                           "height": image.height, "width": image.width,
                           "channels": image.channels, "identity": source.identity,
                           "filename": source.relpath})
        return schema.pair_example(record.index, record.fold, record.issame, images[0],
                                   images[1])


def _auto_num_shards(total_bytes):
    return max(1, int(round(float(total_bytes) / TARGET_SHARD_BYTES)))


def _resolve_num_shards(num_shards, total_bytes, num_records, what):
    if num_shards is None:
        return min(_auto_num_shards(total_bytes), num_records)
    if num_shards > num_records:
        raise ConversionError("--num_shards=%d is more than the %d %s to write: a shard would be "
                              "empty" % (num_shards, num_records, what))
    return num_shards


def _format_skips(skipped):
    return "; ".join("%s: %s" % (item["path"], item["reason"]) for item in skipped)


def _write_failure(output_dir, error):
    """ConversionError for an output that cannot be written (disk full, quota, read-only)."""
    detail = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    return ConversionError("cannot write to %s (%s: %s); finished shards are kept and no "
                           "manifest.json was written: free space (or fix the directory) and "
                           "re-run the same command to resume"
                           % (output_dir, type(error).__name__, detail))


def _finish(output_dir, manifest, labels=None):
    if labels is not None:
        manifest_lib.atomic_write_text(os.path.join(output_dir, manifest_lib.LABELS_NAME),
                                       "".join(label + "\n" for label in labels))
    manifest_lib.write_manifest(output_dir, manifest)


def _format_counts(records_formats):
    counts = collections.Counter(records_formats)
    return {key: counts[key] for key in sorted(counts)}


# ------------------------------------------------------------------ images mode


def _write_output(output_dir, name, options, shards, records, mode, overwrite, workers,
                  input_dir, info_of, image_size, crop_box, progress, build_manifest,
                  labels=None):
    """Write the planned shards under the output lock, then the manifest (and labels) last.

    Both conversion modes end here: the lock, the resume check, the shard writing and the
    one-line full-disk error live once. Returns (manifest, number of shards kept).
    """
    os.makedirs(output_dir, exist_ok=True)
    lock = _lock(output_dir)
    try:
        # Checked again under the lock: another run may have finished in the meantime.
        previous = _previous_shards(output_dir, options, overwrite)
        _clean_output_dir(output_dir, overwrite)
        manifest_shards, kept = _write_shards(output_dir, name, options, shards, records, mode,
                                              previous, workers, input_dir, info_of,
                                              image_size, crop_box, progress)
        manifest = build_manifest(manifest_shards)
        _finish(output_dir, manifest, labels=labels)
    except (OSError, tf.errors.OpError) as e:
        raise _write_failure(output_dir, e) from None
    finally:
        if lock is not None:
            os.close(lock)
    return manifest, kept


def convert_folder(input_dir, output_dir, name="train", num_shards=None, seed=0, image_size=None,
                   crop_box=None, min_images_per_class=1, num_workers=None, strict=False,
                   overwrite=False, progress=True):
    """Convert a folder tree with one sub-folder per identity to sharded image records.

    ``crop_box`` is ``'x0,y0,x1,y1'`` or a 4-tuple; ``image_size`` centre-crops to a square and
    resizes (after ``crop_box``). Returns a summary dict (``kind, output_dir, num_images,
    num_classes, dropped_classes, dropped_images, num_shards, shards_written, shards_kept,
    num_skipped, skipped, seconds, images_per_second``). Raises :class:`ConversionError` for bad
    arguments, a missing or empty input, no valid image, a skip under ``strict``, or an output
    directory that holds another conversion (unless ``overwrite``); nothing is written then.
    """
    start_time = time.time()
    _check_name(name)
    _check_positive(num_shards, "num_shards")
    _check_positive(image_size, "image_size")
    _check_positive(min_images_per_class, "min_images_per_class", allow_none=False)
    crop_box = _check_crop_box(crop_box)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConversionError("--seed must be an integer, got %r" % (seed,))
    num_workers = _resolve_workers(num_workers)
    input_dir, output_dir = os.path.abspath(input_dir), os.path.abspath(output_dir)
    _check_input_dir(input_dir)
    options = {"kind": "images", "input_dir": input_dir, "name": name, "num_shards": num_shards,
               "seed": seed, "image_size": image_size, "crop_box": crop_box,
               "min_images_per_class": min_images_per_class}
    _previous_shards(output_dir, options, overwrite)  # refuse early, before the long part

    scan = image_files.scan_identity_folders(input_dir)
    if not scan.entries and not scan.skipped:
        raise ConversionError("--input_dir %s holds no images in identity folders (expected "
                              "<input_dir>/<identity>/<image>.jpg, .png, ...)" % input_dir)
    with _Workers(num_workers) as workers:
        relpaths = [entry.relpath for entry in scan.entries]
        infos, reasons = _check_images(workers, input_dir, relpaths, image_size, crop_box,
                                       progress)
        skipped = [{"path": path, "reason": reason} for path, reason in scan.skipped]
        skipped += [{"path": relpath, "reason": reason}
                    for relpath, reason in zip(relpaths, reasons) if reason is not None]
        skipped.sort(key=lambda item: item["path"])
        if strict and skipped:
            raise ConversionError("--strict: %d file(s) skipped: %s"
                                  % (len(skipped), _format_skips(skipped)))

        valid = collections.OrderedDict()
        for entry, info in zip(scan.entries, infos):
            valid.setdefault(entry.identity, [])
            if info is not None:
                valid[entry.identity].append((entry, info))
        if not any(valid.values()):
            raise ConversionError("no valid image under %s: %d file(s) skipped, e.g. %s"
                                  % (input_dir, len(skipped), _format_skips(skipped[:3])))
        identities = sorted(k for k, v in valid.items() if len(v) >= min_images_per_class)
        dropped = [k for k, v in valid.items() if len(v) < min_images_per_class]
        if not identities:
            raise ConversionError("no identity has --min_images_per_class=%d valid images "
                                  "(the largest has %d)" % (min_images_per_class,
                                                            max(len(v) for v in valid.values())))
        records, sizes, reencoded, info_of = [], 0, 0, {}
        for label, identity in enumerate(identities):
            for entry, info in valid[identity]:
                records.append(ImageRecord(entry.relpath, identity, label, info.sha256))
                info_of[entry.relpath] = info
                sizes += entry.size
                reencoded += int(info.reencode)
        # Sorted list + seeded shuffle: the order depends on the input, options and seed only.
        random.Random(seed).shuffle(records)
        count = _resolve_num_shards(num_shards, sizes, len(records), "images")
        shards = _plan_shards(name, count, [list(r) for r in records], options)

        def image_manifest(manifest_shards):
            return {
                "kind": "images", "num_images": len(records), "num_classes": len(identities),
                "dropped_classes": len(dropped),
                "dropped_images": sum(len(valid[k]) for k in dropped),
                "shards": manifest_shards, "skipped": skipped,
                "formats": {"reencoded": reencoded, "as_is": len(records) - reencoded},
                "options": options, "tool_version": data_tools.__version__,
                "schema_version": schema.SCHEMA_VERSION,
                "transform": image_files.describe_transform(image_size, crop_box),
            }

        manifest, kept = _write_output(output_dir, name, options, shards, records, _ImageMode,
                                       overwrite, workers, input_dir, info_of, image_size,
                                       crop_box, progress, image_manifest, labels=identities)
    seconds = time.time() - start_time
    return {
        "kind": "images", "output_dir": output_dir, "num_images": len(records),
        "num_classes": len(identities), "dropped_classes": len(dropped),
        "dropped_images": manifest["dropped_images"], "num_shards": count,
        "shards_written": count - kept, "shards_kept": kept, "num_skipped": len(skipped),
        "skipped": skipped, "seconds": seconds,
        "images_per_second": len(records) / max(seconds, 1e-9),
    }


# ------------------------------------------------------------------ pairs mode


def convert_pairs(pairs_path, input_dir, output_dir, name="pairs", num_shards=None,
                  image_size=None, crop_box=None, allow_missing_pairs=False, num_workers=None,
                  strict=False, overwrite=False, progress=True):
    """Convert an LFW-format pairs file and its images to pair records, in pairs-file order.

    Each record holds both images, ``issame``, the fold and the pair's position in the file.
    A missing image raises ``pairs.MissingPairImagesError`` listing every missing path, an
    unreadable one a :class:`ConversionError` listing every such file, unless
    ``allow_missing_pairs``, which leaves those pairs out and records them (``missing_pairs``,
    ``skipped``). Returns a summary dict like :func:`convert_folder` (``num_pairs, num_folds,
    fold_sizes, missing_pairs`` instead of the class counts).
    """
    start_time = time.time()
    _check_name(name)
    _check_positive(num_shards, "num_shards")
    _check_positive(image_size, "image_size")
    crop_box = _check_crop_box(crop_box)
    num_workers = _resolve_workers(num_workers)
    pairs_path = os.path.abspath(pairs_path)
    input_dir, output_dir = os.path.abspath(input_dir), os.path.abspath(output_dir)
    if not os.path.isfile(pairs_path):
        raise ConversionError("--pairs %s does not exist" % pairs_path)
    _check_input_dir(input_dir)
    options = {"kind": "pairs", "pairs": pairs_path, "input_dir": input_dir, "name": name,
               "num_shards": num_shards, "image_size": image_size, "crop_box": crop_box,
               "allow_missing_pairs": bool(allow_missing_pairs)}
    _previous_shards(output_dir, options, overwrite)

    pairs_file = pairs_lib.read_pairs(pairs_path)
    relpath_pairs, kept_pairs, missing = pairs_lib.resolve_pairs(
        pairs_file, input_dir, allow_missing=allow_missing_pairs)
    position = {pair.line: i for i, pair in enumerate(pairs_file.pairs)}
    unique = sorted(set(path for two in relpath_pairs for path in two))
    with _Workers(num_workers) as workers:
        infos, reasons = _check_images(workers, input_dir, unique, image_size, crop_box, progress)
        info_of = dict(zip(unique, infos))
        unreadable = [{"path": path, "reason": reason}
                      for path, reason in zip(unique, reasons) if reason is not None]
        if unreadable and not allow_missing_pairs:
            raise ConversionError("%d image(s) named by the pairs file cannot be used (pass "
                                  "--allow_missing_pairs to skip their pairs): %s"
                                  % (len(unreadable), _format_skips(unreadable)))
        skipped = sorted([{"path": path, "reason": "missing (named by the pairs file)"}
                          for path in missing] + unreadable, key=lambda item: item["path"])
        if strict and skipped:
            raise ConversionError("--strict: %d pair image(s) skipped: %s"
                                  % (len(skipped), _format_skips(skipped)))

        records, sizes = [], 0
        for pair, (path1, path2) in zip(kept_pairs, relpath_pairs):
            if info_of[path1] is None or info_of[path2] is None:
                continue
            records.append(PairRecord(
                position[pair.line], pair.fold, pair.issame,
                PairImage(path1, pair.name1, info_of[path1].sha256),
                PairImage(path2, pair.name2, info_of[path2].sha256)))
            sizes += (os.path.getsize(os.path.join(input_dir, path1))
                      + os.path.getsize(os.path.join(input_dir, path2)))
        if not records:
            raise ConversionError("no pair of %s has two usable images under %s"
                                  % (pairs_path, input_dir))
        fold_sizes = [0] * pairs_file.num_folds
        for record in records:
            fold_sizes[record.fold] += 1
        count = _resolve_num_shards(num_shards, sizes, len(records), "pairs")
        descriptors = [[r.index, r.fold, r.issame, list(r.image1), list(r.image2)]
                       for r in records]
        shards = _plan_shards(name, count, descriptors, options)

        used = set(p for r in records for p in (r.image1.relpath, r.image2.relpath))

        def pair_manifest(manifest_shards):
            return {
                "kind": "pairs", "num_pairs": len(records), "num_folds": pairs_file.num_folds,
                "pairs_per_fold": pairs_file.pairs_per_fold, "fold_sizes": fold_sizes,
                "missing_pairs": len(pairs_file.pairs) - len(records),
                "num_images": len(used),
                "formats": {"reencoded": sum(int(info_of[p].reencode) for p in used),
                            "as_is": sum(int(not info_of[p].reencode) for p in used)},
                "shards": manifest_shards, "skipped": skipped, "options": options,
                "tool_version": data_tools.__version__, "schema_version": schema.SCHEMA_VERSION,
                "transform": image_files.describe_transform(image_size, crop_box),
            }

        manifest, kept = _write_output(output_dir, name, options, shards, records, _PairMode,
                                       overwrite, workers, input_dir, info_of, image_size,
                                       crop_box, progress, pair_manifest)
    seconds = time.time() - start_time
    return {
        "kind": "pairs", "output_dir": output_dir, "num_pairs": len(records),
        "num_images": 2 * len(records), "num_folds": pairs_file.num_folds,
        "fold_sizes": fold_sizes, "missing_pairs": manifest["missing_pairs"],
        "num_shards": count, "shards_written": count - kept, "shards_kept": kept,
        "num_skipped": len(skipped), "skipped": skipped, "seconds": seconds,
        "images_per_second": 2 * len(records) / max(seconds, 1e-9),
    }


# ------------------------------------------------------------------ command line


def format_summary(summary):
    """One human-readable paragraph of a conversion summary."""
    if summary["kind"] == "images":
        what = "%d images of %d identities" % (summary["num_images"], summary["num_classes"])
        dropped = ", %d identities dropped (%d images) by --min_images_per_class" % (
            summary["dropped_classes"], summary["dropped_images"])
    else:
        what = "%d pairs in %d folds %s" % (summary["num_pairs"], summary["num_folds"],
                                            summary["fold_sizes"])
        dropped = ", %d pairs left out" % summary["missing_pairs"]
    return ("%s -> %d shard(s) in %s (%d written, %d kept from an earlier run); %d file(s) "
            "skipped%s; %.1f s, %.0f images/s" % (
                what, summary["num_shards"], summary["output_dir"], summary["shards_written"],
                summary["shards_kept"], summary["num_skipped"], dropped, summary["seconds"],
                summary["images_per_second"]))


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "input_dir" in flag_values:
        return
    flags.DEFINE_string("input_dir", None, "Face folder tree, one sub-folder per identity (with "
                        "--pairs: the image root the pairs file refers to).",
                        flag_values=flag_values)
    flags.DEFINE_string("output_dir", None, "Directory for the shards, labels.txt and "
                        "manifest.json.", flag_values=flag_values)
    flags.DEFINE_string("name", None, "Shard file prefix (default: 'train', or 'pairs' with "
                        "--pairs).", flag_values=flag_values)
    flags.DEFINE_integer("num_shards", None, "Number of shards (default: about one per %d MB of "
                         "input)." % (TARGET_SHARD_BYTES // 2 ** 20), lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the order in which images are spread over the "
                         "shards.", flag_values=flag_values)
    flags.DEFINE_integer("image_size", None, "Centre-crop to a square and resize to this size "
                         "(re-encodes as PNG). Default: keep the images as they are.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_string("crop_box", None, "'x0,y0,x1,y1': crop every image to this box (before "
                        "--image_size), e.g. the face region of LFW-a's 250x250 frames.",
                        flag_values=flag_values)
    flags.DEFINE_integer("min_images_per_class", 1, "Drop identities with fewer valid images.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("num_workers", None, "Worker processes (default: the CPU count).",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_boolean("strict", False, "Fail (exit 1, nothing written) when any file would "
                         "be skipped.", flag_values=flag_values)
    flags.DEFINE_boolean("overwrite", False, "Replace a conversion with other options in "
                         "--output_dir.", flag_values=flag_values)
    flags.DEFINE_string("pairs", None, "LFW View 2 pairs.txt: write pair records instead of "
                        "training shards.", flag_values=flag_values)
    flags.DEFINE_boolean("allow_missing_pairs", False, "With --pairs: leave out pairs whose "
                         "images are missing or unreadable instead of failing.",
                         flag_values=flag_values)
    flags.mark_flags_as_required(["input_dir", "output_dir"], flag_values=flag_values)


_USER_ERRORS = (ConversionError, pairs_lib.PairsFormatError, pairs_lib.MissingPairImagesError)


def main(argv, flag_values=None):
    """CLI body for ``absl.app.run``: returns 0 on success, 1 with a message on bad input.

    ``flag_values`` (default ``absl.flags.FLAGS``) must hold the flags of :func:`define_flags`,
    already parsed.
    """
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    FLAGS = flags.FLAGS if flag_values is None else flag_values  # noqa: N806 - absl idiom
    if FLAGS.pairs:
        for flag in ("seed", "min_images_per_class"):
            if FLAGS[flag].present:
                raise app.UsageError("--%s does not apply to --pairs (pairs keep the file's "
                                     "order and all identities)" % flag)
    elif FLAGS.allow_missing_pairs:
        raise app.UsageError("--allow_missing_pairs needs --pairs")
    common = dict(input_dir=FLAGS.input_dir, output_dir=FLAGS.output_dir,
                  num_shards=FLAGS.num_shards, image_size=FLAGS.image_size,
                  crop_box=FLAGS.crop_box, num_workers=FLAGS.num_workers, strict=FLAGS.strict,
                  overwrite=FLAGS.overwrite, progress=True)
    try:
        if FLAGS.pairs:
            summary = convert_pairs(FLAGS.pairs, name=FLAGS.name or "pairs",
                                    allow_missing_pairs=FLAGS.allow_missing_pairs, **common)
        else:
            summary = convert_folder(name=FLAGS.name or "train", seed=FLAGS.seed,
                                     min_images_per_class=FLAGS.min_images_per_class, **common)
    except _USER_ERRORS as e:
        print("make_tfrecords: error: %s" % e, file=sys.stderr)
        return 1
    for item in summary["skipped"][:_MAX_LISTED_SKIPS]:
        print("skipped %s: %s" % (item["path"], item["reason"]), file=sys.stderr)
    if len(summary["skipped"]) > _MAX_LISTED_SKIPS:
        print("... and %d more skipped files, all listed in %s" % (
            len(summary["skipped"]) - _MAX_LISTED_SKIPS,
            os.path.join(summary["output_dir"], manifest_lib.MANIFEST_NAME)), file=sys.stderr)
    print(format_summary(summary))
    return 0


def run():
    """Console-script entry point (``circle-make-tfrecords``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
