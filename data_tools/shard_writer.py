"""The shard writer every record source feeds: image folders and pairs files today
(``data_tools.conversion``), other dataset formats next.

A source hands over its records, in their final order, with a JSON-able descriptor of each (what
the record will hold) and a function that turns a run of records into serialised ``tf.Example``
bytes. This module does the rest, the same for every source:

* the output directory: an advisory lock (``.lock``) against a concurrent run, the refusal of a
  directory that holds something else or a conversion with other options (unless ``overwrite``),
  and the removal of what a killed run left behind;
* the plan: contiguous slices of the records, one per shard, each with a digest of everything it
  will hold (``.plan.json``), so that a re-run of the same command keeps the finished shards and
  writes the rest, byte-identical to an uninterrupted run;
* each shard written under a temporary name, fsynced, its size and sha256 recorded in the plan,
  then renamed; ``labels.txt`` and ``manifest.json`` last, so a killed run never leaves a shard or
  an output that looks complete but is not;
* a full disk (or any write failure) as one :class:`ConversionError` that says how to resume.

It also holds the ordered worker pool the sources use to check and re-encode images.
"""

import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import signal

import tensorflow.compat.v1 as tf
from tqdm import tqdm

import data_tools
from data_tools import fileio, schema
from data_tools import manifest as manifest_lib

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent runs are the user's lookout.
    fcntl = None

TARGET_SHARD_BYTES = 100 * 1024 * 1024
PLAN_NAME = ".plan.json"
LOCK_NAME = ".lock"
# Caches a conversion keeps between runs (the teacher's embeddings, data_tools/teachers.py):
# not a conversion by themselves, and kept by --overwrite (they are keyed by content).
_CACHE_RE = re.compile(r"^\.teacher-[0-9a-f]+\.jsonl$")
# Temporary files this tool creates: shards being written and atomically replaced JSON/text.
_TMP_RE = re.compile(r"^\.(.+\.tfrecord|manifest\.json|labels\.txt|\.plan\.json)\.tmp-\d+$")


class ConversionError(ValueError):
    """Bad input, options or output state. The CLI prints it as one message and exits 1."""


class ShardOutput(collections.namedtuple(
        "ShardOutput", ["output_dir", "name", "options", "overwrite", "progress"])):
    """Where and how a conversion writes: the one options object of the shard writer.

    ``output_dir`` (absolute) receives ``{name}-0000k-of-0000n.tfrecord`` shards; ``options`` is
    the JSON-able dict of everything that determines the bytes (recorded in the plan and the
    manifest, compared on resume); ``overwrite`` replaces a conversion made with other options;
    ``progress`` shows progress bars on a terminal.
    """


Shard = collections.namedtuple("Shard", ["file", "start", "stop", "plan"])


def shard_filename(name, index, num_shards):
    """``{name}-00003-of-00010.tfrecord``."""
    return f"{name}-{index:05d}-of-{num_shards:05d}.tfrecord"


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


class Workers:
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


def progress_bar(total, desc, enabled):
    """A tqdm bar counting images; ``disable=None`` shows it on a terminal only, so log files do
    not fill with carriage returns."""
    return tqdm(total=total, desc=desc, unit="img", disable=None if enabled else True,
                dynamic_ncols=True)


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


def previous_shards(out):
    """Check ``out.output_dir`` against ``out.options``; returns ``{file: shard state}`` to
    resume from.

    Raises :class:`ConversionError` when the directory holds other files, or a conversion with
    different options, and ``out.overwrite`` is false. Call it early too, to refuse before the
    long part.
    """
    output_dir, options, overwrite = out.output_dir, out.options, out.overwrite
    if not os.path.exists(output_dir):
        return {}
    if not os.path.isdir(output_dir):
        raise ConversionError(f"--output_dir {output_dir} exists and is not a directory")
    if overwrite or not [f for f in os.listdir(output_dir)
                         if f != LOCK_NAME and not _CACHE_RE.match(f)]:
        return {}
    state = _load_state(output_dir)
    if state is None:
        raise ConversionError(f"--output_dir {output_dir} is not empty and holds no conversion to "
                              "resume; use an empty directory, or pass --overwrite to replace its "
                              ".tfrecord files, labels.txt and manifest.json")
    previous, current = _canonical(state["options"]), _canonical(options)
    if previous != current:
        changes = [f"{key} {json.dumps(previous.get(key))} -> {json.dumps(current.get(key))}"
                   for key in sorted(set(previous) | set(current))
                   if previous.get(key) != current.get(key)]
        raise ConversionError(f"--output_dir {output_dir} holds a conversion made with other "
                              f"options ({'; '.join(changes)}); "
                              "pass --overwrite to replace it, or choose another --output_dir")
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
        raise ConversionError(f"another make_tfrecords run is writing to {output_dir}") from None
    return fd


@contextlib.contextmanager
def locked_output(output_dir):
    """Hold the output directory's lock (created if need be) for work before the shards, such
    as the teacher's pass; released before :func:`write_output` takes it again."""
    os.makedirs(output_dir, exist_ok=True)
    lock = _lock(output_dir)
    try:
        yield
    finally:
        if lock is not None:
            os.close(lock)


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


# ------------------------------------------------------------------ plan


def _auto_num_shards(total_bytes):
    return max(1, int(round(float(total_bytes) / TARGET_SHARD_BYTES)))


def resolve_num_shards(num_shards, total_bytes, num_records, what):
    """``num_shards``, or about one shard per :data:`TARGET_SHARD_BYTES` of input when None;
    never more shards than records (``what`` names them in the error)."""
    if num_shards is None:
        return min(_auto_num_shards(total_bytes), num_records)
    if num_shards > num_records:
        raise ConversionError(f"--num_shards={num_shards} is more than the {num_records} {what} to "
                              "write: a shard would be empty")
    return num_shards


def plan_shards(out, num_shards, descriptors):
    """Contiguous slices of the record list, each with a digest of everything it will hold."""
    total = len(descriptors)
    shards = []
    for k in range(num_shards):
        start, stop = k * total // num_shards, (k + 1) * total // num_shards
        filename = shard_filename(out.name, k, num_shards)
        plan = hashlib.sha256(json.dumps(
            {"file": filename, "options": out.options, "records": descriptors[start:stop],
             "schema_version": schema.SCHEMA_VERSION, "tool_version": data_tools.__version__},
            sort_keys=True).encode("utf-8")).hexdigest()
        shards.append(Shard(filename, start, stop, plan))
    return shards


def _write_plan(out, entries):
    fileio.atomic_write_text(os.path.join(out.output_dir, PLAN_NAME), manifest_lib.dumps({
        "options": out.options, "shards": entries, "schema_version": schema.SCHEMA_VERSION,
        "tool_version": data_tools.__version__}))


# ------------------------------------------------------------------ shard writing


def _fsync_file(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_shards(out, shards, records, examples, previous):
    """Write the planned shards, keeping finished ones from an earlier run of the same plan.

    ``examples(records)`` yields the serialised example of each record, in order; ``previous``
    maps file names to the shard states of ``.plan.json``. Returns the manifest shard entries
    and the number of shards kept.
    """
    output_dir = out.output_dir
    entries, todo = [], []
    for shard in shards:
        path = os.path.join(output_dir, shard.file)
        old = previous.get(shard.file, {})
        entry = {"file": shard.file, "plan": shard.plan, "records": shard.stop - shard.start,
                 "bytes": None, "sha256": None}
        if (old.get("plan") == shard.plan and old.get("sha256") and os.path.isfile(path)
                and fileio.sha256_file(path) == old["sha256"]):
            entry["bytes"], entry["sha256"] = os.path.getsize(path), old["sha256"]
        else:
            todo.append(len(entries))
        entries.append(entry)
    # The plan goes down first: whatever happens next, the next run knows what was intended.
    _write_plan(out, entries)

    total = sum(entries[i]["records"] for i in todo)
    with progress_bar(total, "writing", out.progress) as bar:
        for i in todo:
            shard, entry = shards[i], entries[i]
            path = os.path.join(output_dir, shard.file)
            tmp = os.path.join(output_dir, f".{shard.file}.tmp-{os.getpid()}")
            try:
                with tf.io.TFRecordWriter(tmp) as writer:
                    for example in examples(records[shard.start:shard.stop]):
                        writer.write(example)
                        bar.update(1)
                _fsync_file(tmp)
                entry["bytes"] = os.path.getsize(tmp)
                entry["sha256"] = fileio.sha256_file(tmp)
                # Recorded before the rename, so that a shard under its final name always has
                # its sha256 in the plan; a kill in between leaves only the temp file.
                _write_plan(out, entries)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise

    # Shards of an earlier plan with another shard count would be picked up by a glob.
    planned = set(entry["file"] for entry in entries)
    stale = re.compile(rf"^{re.escape(out.name)}-\d{{5}}-of-\d{{5}}\.tfrecord$")
    for filename in os.listdir(output_dir):
        if stale.match(filename) and filename not in planned:
            os.remove(os.path.join(output_dir, filename))
    manifest_shards = [{k: entry[k] for k in ("file", "records", "bytes", "sha256")}
                       for entry in entries]
    return manifest_shards, len(shards) - len(todo)


def _write_failure(output_dir, error):
    """ConversionError for an output that cannot be written (disk full, quota, read-only)."""
    detail = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    return ConversionError(f"cannot write to {output_dir} ({type(error).__name__}: {detail}); "
                           "finished shards are kept and no "
                           "manifest.json was written: free space (or fix the directory) and "
                           "re-run the same command to resume")


def _finish(output_dir, manifest, labels=None):
    if labels is not None:
        fileio.atomic_write_text(os.path.join(output_dir, manifest_lib.LABELS_NAME),
                                       "".join(label + "\n" for label in labels))
    manifest_lib.write_manifest(output_dir, manifest)


def write_output(out, shards, records, examples, build_manifest, labels=None):
    """Write the planned shards under the output lock, then the manifest (and labels) last.

    Every source ends here: the lock, the resume check, the shard writing and the one-line
    full-disk error live once. ``shards`` comes from :func:`plan_shards`; ``examples(records)``
    yields the serialised example of each of a run of ``records``, in order;
    ``build_manifest(manifest_shards)`` returns the manifest dict. Returns
    ``(manifest, number of shards kept)``.
    """
    os.makedirs(out.output_dir, exist_ok=True)
    lock = _lock(out.output_dir)
    try:
        # Checked again under the lock: another run may have finished in the meantime.
        previous = previous_shards(out)
        _clean_output_dir(out.output_dir, out.overwrite)
        manifest_shards, kept = _write_shards(out, shards, records, examples, previous)
        manifest = build_manifest(manifest_shards)
        _finish(out.output_dir, manifest, labels=labels)
    except (OSError, tf.errors.OpError) as e:
        raise _write_failure(out.output_dir, e) from None
    finally:
        if lock is not None:
            os.close(lock)
    return manifest, kept
