"""Convert face folders, or an LFW pairs file, to sharded TFRecords: the library behind
``data_tools/make_tfrecords.py``.

:func:`convert_folder` writes training image records (one sub-folder per identity; identities
mixed across shards in a seeded order, ``labels.txt`` naming label i on line i);
:func:`convert_pairs` writes verification pair records in pairs-file order, so that folds stay
contiguous. Both run one skeleton (:func:`_convert`): check the arguments, refuse an output
directory that holds something else, let the source list its images, check every image fully
in worker processes (PIL only, each file read and decoded once), let the source build its
records, then hand them to :mod:`data_tools.shard_writer`, which plans, writes and resumes the
shards. While shards are written, the parent reads again the files stored as they are (no
decoder: the check pass recorded their record fields, and their sha256 must still match) and the
workers re-encode the others.

A source is an object with the methods of :class:`_FolderSource` (``kind``, ``what``,
``check_arguments``, ``input_dir``, ``options``, ``relpaths``, ``collect``, ``descriptor``,
``sources``, ``serialize``, ``manifest``, ``summary``, ``labels``).
"""

import collections
import os
import random
import re
import time

import data_tools
from data_tools import image_files, schema, teachers
from data_tools import pairs as pairs_lib
from data_tools import transform as transform_lib
from data_tools.shard_writer import (
    LOCK_NAME,
    PLAN_NAME,
    TARGET_SHARD_BYTES,
    ConversionError,
    ShardOutput,
    Workers,
    locked_output,
    plan_shards,
    previous_shards,
    progress_bar,
    resolve_num_shards,
    shard_filename,
    write_output,
)

__all__ = ["LOCK_NAME", "PLAN_NAME", "TARGET_SHARD_BYTES", "ConversionError", "ImageRecord",
           "PairImage", "PairRecord", "check_options", "check_positive", "convert_folder",
           "convert_pairs", "format_skips", "shard_filename"]

ImageRecord = collections.namedtuple("ImageRecord", ["relpath", "identity", "label", "sha256"])
PairImage = collections.namedtuple("PairImage", ["relpath", "identity", "sha256"])
PairRecord = collections.namedtuple("PairRecord", ["index", "fold", "issame", "image1", "image2"])


# ------------------------------------------------------------------ argument checks
# Shared by every source that feeds the shard writer (image folders and pairs files here,
# insightface's .rec and .bin in data_tools/insightface/convert.py).


def check_positive(value, flag, allow_none=True):
    """``value`` when it is a positive integer (or None, if ``allow_none``), else a
    ConversionError naming ``--flag``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConversionError(f"--{flag} must be a positive integer, got {value!r}")
    return value


def _check_name(name):
    if (not name or name.startswith(".") or "/" in name or os.sep in name
            or not re.match(r"^[\w.-]+$", name)):
        raise ConversionError("--name must be a plain file name prefix (letters, digits, "
                              f"'_', '-', '.'), got {name!r}")
    return name


def _check_crop_box(crop_box):
    try:
        box = image_files.parse_crop_box(crop_box)
    except ValueError as e:
        raise ConversionError(f"--crop_box: {e}") from None
    return list(box) if box is not None else None


def _check_input_dir(input_dir):
    if not os.path.exists(input_dir):
        raise ConversionError(f"--input_dir {input_dir} does not exist")
    if not os.path.isdir(input_dir):
        raise ConversionError(f"--input_dir {input_dir} is not a directory")
    if not os.listdir(input_dir):
        raise ConversionError(f"--input_dir {input_dir} is empty")


def _resolve_workers(num_workers):
    check_positive(num_workers, "num_workers")
    return num_workers or os.cpu_count() or 1


def check_options(name, num_shards, image_size, crop_box, num_workers):
    """The options every conversion takes, checked (ConversionError naming the flag); returns
    ``(crop_box, num_workers)``: the box as a list (or None) and the worker count to use."""
    _check_name(name)
    check_positive(num_shards, "num_shards")
    check_positive(image_size, "image_size")
    return _check_crop_box(crop_box), _resolve_workers(num_workers)


def format_skips(skipped):
    """``path: reason; ...`` of skipped-image dicts, for an error message."""
    return "; ".join(f"{item['path']}: {item['reason']}" for item in skipped)


# ------------------------------------------------------------------ image files


def _check_images(workers, input_dir, relpaths, image_size, crop_box, progress):
    """Full validation of every image; returns ``(infos, reasons)`` aligned with ``relpaths``."""
    tasks = [(i, os.path.join(input_dir, relpath), image_size, crop_box)
             for i, relpath in enumerate(relpaths)]
    infos = [None] * len(tasks)
    reasons = [None] * len(tasks)
    with progress_bar(len(tasks), "checking", progress) as bar:
        for index, info, reason in workers.imap(image_files.check_task, tasks):
            infos[index] = info
            reasons[index] = reason
            bar.update(1)
    return infos, reasons


class _ImageFiles(collections.namedtuple(
        "_ImageFiles", ["workers", "input_dir", "info_of", "image_size", "crop_box",
                        "teacher_of", "flipped_of"])):
    """The checked image files of a conversion and how they become record images.

    ``info_of`` maps a relpath to its :class:`image_files.ImageInfo` from the check pass;
    ``teacher_of`` (or None) a relpath to its teacher embedding, ``flipped_of`` (or None) to
    the teacher's embedding of the mirrored image (``--teacher_flip``).
    """

    def encoded(self, sources):
        """Yield the EncodedImage of each ``(relpath, sha256)``, in order, checking it is
        unchanged.

        Files stored as they are cost one read and one hash, here: sending their bytes back from
        a worker would cost more. The workers re-encode the others, ahead of the writer.
        """
        paths = [os.path.join(self.input_dir, relpath) for relpath, _ in sources]
        infos = [self.info_of[relpath] for relpath, _ in sources]
        tasks = [(i, paths[i], info, self.image_size, self.crop_box)
                 for i, info in enumerate(infos) if info.stored_format is None]
        reencoded = iter(self.workers.imap(image_files.encode_task, tasks)) if tasks else iter(())
        for i, (relpath, _) in enumerate(sources):
            if infos[i].stored_format is None:
                _, encoded, error = next(reencoded)
            else:
                _, encoded, error = image_files.encode_task(
                    (i, paths[i], infos[i], self.image_size, self.crop_box))
            if isinstance(error, image_files.ImageChanged):
                raise ConversionError(f"{relpath} changed during the conversion; re-run to resume")
            if error is not None:
                raise ConversionError(f"{relpath} became unreadable during the conversion "
                                      f"({error}); re-run to resume")
            yield encoded

    def examples(self, source, records):
        """Serialised examples of ``records`` (a shard's run), in order."""
        per_record = [source.sources(record) for record in records]
        flat = [item for items in per_record for item in items]
        encoded = self.encoded(flat)
        for record, items in zip(records, per_record):
            images = [next(encoded) for _ in items]
            if self.teacher_of is None:
                yield source.serialize(record, images)
            elif self.flipped_of is None:
                yield source.serialize(record, images,
                                       [self.teacher_of[relpath] for relpath, _ in items])
            else:
                yield source.serialize(record, images,
                                       [self.teacher_of[relpath] for relpath, _ in items],
                                       [self.flipped_of[relpath] for relpath, _ in items])


def _teacher_pass(teacher, out, teacher_dir, relpaths, infos, reasons, progress, workers,
                  mirrored=False):
    """The teacher's vector of every image that passed the check, from the file under
    ``teacher_dir`` (the source photo; ``mirrored``: that file mirrored left to right); an image
    the teacher fails on gets its reason and no info, like a corrupt one. Returns
    ``({relpath: vector}, fallback relpaths)``.

    Runs under the output lock, caching each vector in the output directory as it is made
    (:class:`teachers.TeacherCache`): a killed run resumes where the teacher stopped.
    """
    todo = [(i, relpath) for i, relpath in enumerate(relpaths) if reasons[i] is None]

    def reader(relpath):
        def read():
            with open(os.path.join(teacher_dir, relpath), "rb") as f:
                data = f.read()
            return teachers.mirrored_png(data) if mirrored else data
        return read

    with locked_output(out.output_dir):
        cache = teachers.TeacherCache(out.output_dir, teacher)
        what = f"teacher {teacher.name}" + (" (mirrored)" if mirrored else "")
        with progress_bar(len(todo), what, progress) as bar:
            # A fork-safe teacher (dlib) runs in the worker pool, forked after it was shared.
            parallel = teacher.fork_safe and workers.num_workers > 1
            vectors, failed, fallbacks = teachers.embed_all(
                teacher, cache, [(relpath, reader(relpath)) for _, relpath in todo], bar,
                imap=workers.imap if parallel else None)
    for i, relpath in todo:
        if relpath in failed:
            infos[i], reasons[i] = None, failed[relpath]
    return vectors, fallbacks


def teacher_manifest(teacher, used, fallbacks, teacher_of, flipped_fallbacks=None):
    """The manifest's ``teacher`` entry: name, dimension, the stored images the teacher saw
    as a whole frame (no face detected), and the mean of the stored vectors (what training's
    ``--distill_center`` subtracts; ``teacher_of`` maps each relpath to its vector). With
    ``flipped_fallbacks`` (``--teacher_flip``): ``flipped`` and the mirrored images' fallbacks."""
    entry = teachers.describe(teacher)
    fell_back = sorted(set(used) & set(fallbacks))
    entry.update(fallbacks=len(fell_back), fallback_files=fell_back,
                 mean=teachers.mean_vector([teacher_of[relpath] for relpath in sorted(used)]))
    if flipped_fallbacks is not None:
        entry.update(flipped=True, flipped_fallbacks=len(set(used) & set(flipped_fallbacks)))
    return entry


# ------------------------------------------------------------------ the skeleton


def _conversion_transform(image_size, crop_box, align, sizes):
    """The Transform this conversion applies: aligned faces (``align``, the record of
    ``data_tools.alignment.raw_faces``) are stored as they are, at the size they were aligned to.
    ``sizes``: the source images' ``(width, height)``, the records' shape when kept as they are."""
    if align is not None:
        return transform_lib.Transform(None, align.get("image_size"), align=True)
    return transform_lib.Transform.of_conversion(crop_box, image_size, sizes=sizes)


def _convert(source, output_dir, name, num_shards, image_size, crop_box, num_workers, strict,
             overwrite, progress, align=None, teacher=None, teacher_dir=None, teacher_flip=False):
    """Check, plan and write one conversion of ``source``; returns its summary dict.

    ``teacher`` (a :class:`teachers.Teacher`) adds its embedding of each image, computed on the
    file of the same relpath under ``teacher_dir`` (default: the source's input directory);
    ``teacher_flip`` also its embedding of that file mirrored (image records only).
    """
    if teacher_flip and (teacher is None or source.kind != "images"):
        raise ConversionError("--teacher_flip needs --teacher and image records (not pairs)")
    start_time = time.time()
    crop_box, num_workers = check_options(name, num_shards, image_size, crop_box, num_workers)
    source.check_arguments()
    output_dir = os.path.abspath(output_dir)
    source.check_inputs()
    options = source.options(name, num_shards, image_size, crop_box)
    if align is not None:
        # How the faces were aligned before (data_tools.alignment.raw_faces).
        options["align"] = align
    if teacher is not None:
        options["teacher"] = teachers.describe(teacher)
        if teacher_dir is not None:
            options["teacher_dir"] = os.path.abspath(teacher_dir)
        if teacher_flip:
            options["teacher_flip"] = True
    out = ShardOutput(output_dir, name, options, overwrite, progress)
    previous_shards(out)  # refuse early, before the long part

    relpaths = source.relpaths()
    teachers.share_with_workers(teacher if teacher is not None and teacher.fork_safe else None)
    with Workers(num_workers) as workers:
        infos, reasons = _check_images(workers, source.input_dir, relpaths, image_size,
                                       crop_box, progress)
        teacher_of, fallbacks, flipped_of, flipped_fallbacks = None, (), None, None
        if teacher is not None:
            teacher_of, fallbacks = _teacher_pass(teacher, out, teacher_dir or source.input_dir,
                                                  relpaths, infos, reasons, progress, workers)
        if teacher_flip:
            flipped_of, flipped_fallbacks = _teacher_pass(
                teacher, out, teacher_dir or source.input_dir, relpaths, infos, reasons,
                progress, workers, mirrored=True)
        records, sizes = source.collect(relpaths, infos, reasons, strict)
        count = resolve_num_shards(num_shards, sizes, len(records), source.what)
        descriptors = [source.descriptor(record) for record in records]
        if teacher_of is not None:
            # The plan holds each stored vector's digest: a shard is kept only with the same ones.
            descriptors = [descriptor + [[teachers.vector_digest(teacher_of[relpath])
                                          for relpath, _ in source.sources(record)]]
                           for descriptor, record in zip(descriptors, records)]
        if flipped_of is not None:
            descriptors = [descriptor + [[teachers.vector_digest(flipped_of[relpath])
                                          for relpath, _ in source.sources(record)]]
                           for descriptor, record in zip(descriptors, records)]
        shards = plan_shards(out, count, descriptors)
        files = _ImageFiles(workers, source.input_dir, dict(zip(relpaths, infos)), image_size,
                            crop_box, teacher_of, flipped_of)

        def build_manifest(manifest_shards):
            manifest = {"kind": source.kind, "shards": manifest_shards,
                        "skipped": source.skipped, "options": out.options,
                        "tool_version": data_tools.__version__,
                        "schema_version": schema.SCHEMA_VERSION,
                        "transform": _conversion_transform(
                            image_size, crop_box, align,
                            sizes=[(info.width, info.height) for info in infos if info]).to_dict()}
            manifest.update(source.manifest(records))
            if teacher is not None:
                used = set(relpath for record in records
                           for relpath, _ in source.sources(record))
                manifest["teacher"] = teacher_manifest(teacher, used, fallbacks, teacher_of,
                                                       flipped_fallbacks)
            return manifest

        manifest, kept = write_output(out, shards, records,
                                      lambda run: files.examples(source, run), build_manifest,
                                      labels=source.labels)
    seconds = time.time() - start_time
    summary = {"kind": source.kind, "output_dir": output_dir}
    summary.update(source.summary(records, manifest))
    summary.update({
        "num_shards": count, "shards_written": count - kept, "shards_kept": kept,
        "num_skipped": len(source.skipped), "skipped": source.skipped, "seconds": seconds,
        "images_per_second": summary["num_images"] / max(seconds, 1e-9),
    })
    if "teacher" in manifest:
        summary["teacher"] = manifest["teacher"]
    return summary


# ------------------------------------------------------------------ images mode


class _FolderSource:
    """Training images: ``<input_dir>/<identity>/<image>``, labels by sorted identity name."""

    kind, what = "images", "images"

    def __init__(self, input_dir, seed, min_images_per_class):
        self.input_dir = os.path.abspath(input_dir)
        self.seed = seed
        self.min_images_per_class = min_images_per_class
        self.skipped, self.labels = [], None
        self._scan = None

    def check_arguments(self):
        check_positive(self.min_images_per_class, "min_images_per_class", allow_none=False)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConversionError(f"--seed must be an integer, got {self.seed!r}")

    def check_inputs(self):
        _check_input_dir(self.input_dir)

    def options(self, name, num_shards, image_size, crop_box):
        return {"kind": "images", "input_dir": self.input_dir, "name": name,
                "num_shards": num_shards, "seed": self.seed, "image_size": image_size,
                "crop_box": crop_box, "min_images_per_class": self.min_images_per_class}

    def relpaths(self):
        self._scan = image_files.scan_identity_folders(self.input_dir)
        if not self._scan.entries and not self._scan.skipped:
            raise ConversionError(f"--input_dir {self.input_dir} holds no images in identity "
                                  "folders (expected "
                                  "<input_dir>/<identity>/<image>.jpg, .png, ...)")
        return [entry.relpath for entry in self._scan.entries]

    def collect(self, relpaths, infos, reasons, strict):
        """The records in their final (seeded) order and their total input bytes."""
        scan, min_images = self._scan, self.min_images_per_class
        skipped = [{"path": path, "reason": reason} for path, reason in scan.skipped]
        skipped += [{"path": relpath, "reason": reason}
                    for relpath, reason in zip(relpaths, reasons) if reason is not None]
        skipped.sort(key=lambda item: item["path"])
        self.skipped = skipped
        if strict and skipped:
            raise ConversionError(f"--strict: {len(skipped)} file(s) skipped: "
                                  f"{format_skips(skipped)}")

        valid = collections.OrderedDict()
        for entry, info in zip(scan.entries, infos):
            valid.setdefault(entry.identity, [])
            if info is not None:
                valid[entry.identity].append((entry, info))
        if not any(valid.values()):
            raise ConversionError(f"no valid image under {self.input_dir}: {len(skipped)} file(s) "
                                  f"skipped, e.g. {format_skips(skipped[:3])}")
        identities = sorted(k for k, v in valid.items() if len(v) >= min_images)
        dropped = [k for k, v in valid.items() if len(v) < min_images]
        if not identities:
            raise ConversionError(f"no identity has --min_images_per_class={min_images} valid "
                                  f"images (the largest has {max(len(v) for v in valid.values())})")
        records, sizes, reencoded = [], 0, 0
        for label, identity in enumerate(identities):
            for entry, info in valid[identity]:
                records.append(ImageRecord(entry.relpath, identity, label, info.sha256))
                sizes += entry.size
                reencoded += int(info.reencode)
        # Sorted list + seeded shuffle: the order depends on the input, options and seed only.
        random.Random(self.seed).shuffle(records)
        self.labels = identities
        self._dropped = (len(dropped), sum(len(valid[k]) for k in dropped))
        self._reencoded = reencoded
        return records, sizes

    @staticmethod
    def descriptor(record):
        return list(record)

    @staticmethod
    def sources(record):
        return [(record.relpath, record.sha256)]

    @staticmethod
    def serialize(record, encoded, teacher=None, flipped=None):
        image = encoded[0]
        return schema.image_example(image.encoded, image.format, image.height, image.width,
                                    image.channels, record.label, record.identity,
                                    record.relpath,
                                    teacher_embedding=teacher[0] if teacher else None,
                                    teacher_embedding_flipped=flipped[0] if flipped else None)

    def manifest(self, records):
        return {"num_images": len(records), "num_classes": len(self.labels),
                "dropped_classes": self._dropped[0], "dropped_images": self._dropped[1],
                "formats": {"reencoded": self._reencoded,
                            "as_is": len(records) - self._reencoded}}

    def summary(self, records, manifest):
        return {"num_images": len(records), "num_classes": len(self.labels),
                "dropped_classes": self._dropped[0],
                "dropped_images": manifest["dropped_images"]}


def convert_folder(input_dir, output_dir, name="train", num_shards=None, seed=0, image_size=None,
                   crop_box=None, min_images_per_class=1, num_workers=None, strict=False,
                   overwrite=False, progress=True, align=None, teacher=None, teacher_dir=None,
                   teacher_flip=False):
    """Convert a folder tree with one sub-folder per identity to sharded image records.

    ``crop_box`` is ``'x0,y0,x1,y1'`` or a 4-tuple; ``image_size`` centre-crops to a square and
    resizes (after ``crop_box``). Returns a summary dict (``kind, output_dir, num_images,
    num_classes, dropped_classes, dropped_images, num_shards, shards_written, shards_kept,
    num_skipped, skipped, seconds, images_per_second``). Raises :class:`ConversionError` for bad
    arguments, a missing or empty input, no valid image, a skip under ``strict``, or an output
    directory that holds another conversion (unless ``overwrite``); nothing is written then.
    ``align`` (a dict) records in the manifest's options how ``input_dir`` was aligned.
    ``teacher`` (a ``data_tools.teachers.Teacher``) stores its embedding of each image, made
    from the file of the same relpath under ``teacher_dir`` (default ``input_dir``; with
    ``--align``, the raw photos); an image it fails on is skipped with the reason.
    ``teacher_flip``: also its embedding of the mirrored file (``teacher/embedding_flipped``,
    the target of an image the training input flips).
    """
    return _convert(_FolderSource(input_dir, seed, min_images_per_class), output_dir, name,
                    num_shards, image_size, crop_box, num_workers, strict, overwrite, progress,
                    align, teacher, teacher_dir, teacher_flip)


# ------------------------------------------------------------------ pairs mode


class _PairsSource:
    """Verification pairs of an LFW-format pairs file, in the file's order."""

    kind, what = "pairs", "pairs"
    labels = None

    def __init__(self, pairs_path, input_dir, allow_missing_pairs):
        self.pairs_path = os.path.abspath(pairs_path)
        self.input_dir = os.path.abspath(input_dir)
        self.allow_missing_pairs = allow_missing_pairs
        self.skipped = []

    def check_arguments(self):
        pass

    def check_inputs(self):
        if not os.path.isfile(self.pairs_path):
            raise ConversionError(f"--pairs {self.pairs_path} does not exist")
        _check_input_dir(self.input_dir)

    def options(self, name, num_shards, image_size, crop_box):
        return {"kind": "pairs", "pairs": self.pairs_path, "input_dir": self.input_dir,
                "name": name, "num_shards": num_shards, "image_size": image_size,
                "crop_box": crop_box, "allow_missing_pairs": bool(self.allow_missing_pairs)}

    def relpaths(self):
        self._file = pairs_lib.read_pairs(self.pairs_path)
        self._relpath_pairs, self._kept_pairs, self._missing = pairs_lib.resolve_pairs(
            self._file, self.input_dir, allow_missing=self.allow_missing_pairs,
            remedy="pass --allow_missing_pairs to skip those pairs")
        return sorted(set(path for two in self._relpath_pairs for path in two))

    def collect(self, relpaths, infos, reasons, strict):
        """The records in pairs-file order and their total input bytes."""
        info_of = dict(zip(relpaths, infos))
        unreadable = [{"path": path, "reason": reason}
                      for path, reason in zip(relpaths, reasons) if reason is not None]
        if unreadable and not self.allow_missing_pairs:
            raise ConversionError(f"{len(unreadable)} image(s) named by the pairs file cannot be "
                                  "used (pass --allow_missing_pairs to skip their pairs): "
                                  f"{format_skips(unreadable)}")
        skipped = sorted([{"path": path, "reason": "missing (named by the pairs file)"}
                          for path in self._missing] + unreadable, key=lambda item: item["path"])
        self.skipped = skipped
        if strict and skipped:
            raise ConversionError(f"--strict: {len(skipped)} pair image(s) skipped: "
                                  f"{format_skips(skipped)}")

        records, sizes = [], 0
        for pair, (path1, path2) in zip(self._kept_pairs, self._relpath_pairs):
            if info_of[path1] is None or info_of[path2] is None:
                continue
            # The index is the pair's place among the kept pairs (the evaluation's store has
            # num_pairs rows); the file names in the record say which pairs.txt line it was.
            records.append(PairRecord(
                len(records), pair.fold, pair.issame,
                PairImage(path1, pair.name1, info_of[path1].sha256),
                PairImage(path2, pair.name2, info_of[path2].sha256)))
            sizes += (os.path.getsize(os.path.join(self.input_dir, path1))
                      + os.path.getsize(os.path.join(self.input_dir, path2)))
        if not records:
            raise ConversionError(f"no pair of {self.pairs_path} has two usable images under "
                                  f"{self.input_dir}")
        self._fold_sizes = [0] * self._file.num_folds
        for record in records:
            self._fold_sizes[record.fold] += 1
        self._info_of = info_of
        return records, sizes

    @staticmethod
    def descriptor(record):
        return [record.index, record.fold, record.issame, list(record.image1),
                list(record.image2)]

    @staticmethod
    def sources(record):
        return [(record.image1.relpath, record.image1.sha256),
                (record.image2.relpath, record.image2.sha256)]

    @staticmethod
    def serialize(record, encoded, teacher=None):
        images = []
        for k, (source, image) in enumerate(zip((record.image1, record.image2), encoded)):
            images.append({"encoded": image.encoded, "format": image.format,
                           "height": image.height, "width": image.width,
                           "channels": image.channels, "identity": source.identity,
                           "filename": source.relpath,
                           "teacher_embedding": teacher[k] if teacher else None})
        return schema.pair_example(record.index, record.fold, record.issame, images[0],
                                   images[1])

    def manifest(self, records):
        used = set(p for r in records for p in (r.image1.relpath, r.image2.relpath))
        info_of = self._info_of
        return {"num_pairs": len(records), "num_folds": self._file.num_folds,
                "pairs_per_fold": self._file.pairs_per_fold, "fold_sizes": self._fold_sizes,
                "missing_pairs": len(self._file.pairs) - len(records), "num_images": len(used),
                "formats": {"reencoded": sum(int(info_of[p].reencode) for p in used),
                            "as_is": sum(int(not info_of[p].reencode) for p in used)}}

    def summary(self, records, manifest):
        return {"num_pairs": len(records), "num_images": 2 * len(records),
                "num_folds": self._file.num_folds, "fold_sizes": self._fold_sizes,
                "missing_pairs": manifest["missing_pairs"]}


def convert_pairs(pairs_path, input_dir, output_dir, name="pairs", num_shards=None,
                  image_size=None, crop_box=None, allow_missing_pairs=False, num_workers=None,
                  strict=False, overwrite=False, progress=True, align=None, teacher=None,
                  teacher_dir=None):
    """Convert an LFW-format pairs file and its images to pair records, in pairs-file order.

    Each record holds both images, ``issame``, the fold and the pair's position in the file.
    A missing image raises ``pairs.MissingPairImagesError`` listing every missing path, an
    unreadable one a :class:`ConversionError` listing every such file, unless
    ``allow_missing_pairs``, which leaves those pairs out and records them (``missing_pairs``,
    ``skipped``). Returns a summary dict like :func:`convert_folder` (``num_pairs, num_folds,
    fold_sizes, missing_pairs`` instead of the class counts). ``teacher``, ``teacher_dir``: as
    :func:`convert_folder` (an image the teacher fails on counts as unreadable).
    """
    return _convert(_PairsSource(pairs_path, input_dir, allow_missing_pairs), output_dir, name,
                    num_shards, image_size, crop_box, num_workers, strict, overwrite, progress,
                    align, teacher, teacher_dir)
