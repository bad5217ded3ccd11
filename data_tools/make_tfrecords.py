r"""Convert face folders, an LFW pairs file, or insightface's .rec/.bin sets to sharded
TFRecords.

Training images (one sub-folder per identity, the layout of LFW, CASIA-WebFace and
MS-Celeb-1M_clean_align)::

    python data_tools/make_tfrecords.py --input_dir=faces/ --output_dir=records/train

writes ``train-00000-of-000NN.tfrecord`` shards (identities mixed across shards in a seeded order),
``labels.txt`` (line i names label i; identities sorted by name) and ``manifest.json``.

Verification pairs (LFW View 2 ``pairs.txt``), in pairs-file order so that folds stay contiguous::

    python data_tools/make_tfrecords.py --pairs=pairs.txt --input_dir=lfw/ --output_dir=records/lfw

Raw photos (``--align``): the faces are first detected and aligned onto the 5-point template
(``python -m data_tools.alignment.align``, or ``--landmarks`` for given points) into
``--aligned_dir``, then converted from there; both steps resume::

    python data_tools/make_tfrecords.py --align --input_dir=photos/ --output_dir=records/train

insightface training sets (``train.rec`` + ``train.idx`` + ``property``, no mxnet needed) and
verification sets (``lfw.bin``, ``cfp_fp.bin``, ...)::

    python data_tools/make_tfrecords.py --input_rec=faces_emore/ --output_dir=records/train
    python data_tools/make_tfrecords.py --from_bin=faces_emore/lfw.bin --output_dir=records/lfw

Distillation (``--teacher=dlib``, ``onnx:FILE`` or ``saved_model:DIR``, see
``data_tools.teachers``): each record also holds the teacher's embedding of its source image
(``teacher/embedding``), cached in the output directory as it is made, so a killed run resumes::

    python data_tools/make_tfrecords.py --input_dir=faces/ --teacher=dlib --output_dir=records/t

The conversion itself is ``data_tools.conversion`` (checking and encoding the images) feeding
``data_tools.shard_writer`` (plan, lock, resume, atomic shards, manifest): re-running the same
command keeps the finished shards and writes the rest, byte-identical to an uninterrupted run.
"""

import json
import os
import sys

if __package__ in (None, ""):
    # Run as a script, sys.path[0] is data_tools/ and the package itself is not importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # noqa: E402

cli.quiet_tensorflow()  # before data_tools.conversion imports TensorFlow

from absl import app, flags  # noqa: E402

from cli import alignment_flags, flag_groups  # noqa: E402
from data_tools import manifest as manifest_lib  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402
from data_tools import teachers  # noqa: E402
from data_tools.alignment import raw_faces  # noqa: E402
from data_tools.conversion import (  # noqa: E402
    TARGET_SHARD_BYTES,
    ConversionError,
    convert_folder,
    convert_pairs,
)
from data_tools.insightface import convert as insightface  # noqa: E402

_MAX_LISTED_SKIPS = 20


def format_summary(summary):
    """One human-readable paragraph of a conversion summary."""
    if summary["kind"] == "images":
        what = (f"{cli.count(summary['num_images'], 'image')} of "
                f"{cli.count(summary['num_classes'], 'identity', 'identities')}")
        dropped = (f", {cli.count(summary['dropped_classes'], 'identity', 'identities')} "
                   f"dropped ({cli.count(summary['dropped_images'], 'image')}) by "
                   "--min_images_per_class")
    else:
        what = (f"{cli.count(summary['num_pairs'], 'pair')} in "
                f"{cli.count(summary['num_folds'], 'fold')} {summary['fold_sizes']}")
        dropped = f", {cli.count(summary['missing_pairs'], 'pair')} left out"
    return (f"{what} -> {summary['num_shards']} shard(s) in {summary['output_dir']} "
            f"({summary['shards_written']} written, {summary['shards_kept']} kept from an earlier "
            f"run); {summary['num_skipped']} file(s) skipped{dropped}; {summary['seconds']:.1f} s, "
            f"{summary['images_per_second']:.0f} images/s")


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "input_dir" in flag_values:
        return
    flag_groups.define_input_dir(flag_values, "face folder tree, one sub-folder per identity "
                                 "(with --pairs: the image root the pairs file refers to).")
    flag_groups.define_output_dir(flag_values, "the shards, labels.txt and manifest.json.")
    flags.DEFINE_string("name", None, "Shard file prefix (default: 'train', or 'pairs' with "
                        "--pairs).", flag_values=flag_values)
    flags.DEFINE_integer("num_shards", None, "Number of shards (default: about one per "
                                             f"{TARGET_SHARD_BYTES // 2 ** 20} MB of "
                         "input).", lower_bound=1,
                         flag_values=flag_values)
    flag_groups.define_seed(flag_values, "the order in which images are spread over the shards")
    flag_groups.define_image_transform(
        flag_values, flag_groups.KEEP_IMAGES, align="The faces go to --aligned_dir (at "
        f"--image_size, default {raw_faces.DEFAULT_IMAGE_SIZE}) and are converted from there.")
    flags.DEFINE_integer("min_images_per_class", 1, "Drop identities with fewer valid images.",
                         lower_bound=1, flag_values=flag_values)
    flag_groups.define_workers(flag_values)
    flags.DEFINE_boolean("strict", False, "Fail (exit 1, nothing written) when any file would "
                         "be skipped.", flag_values=flag_values)
    flag_groups.define_overwrite(flag_values, "a conversion with other options in --output_dir")
    flag_groups.define_pairs(flag_values, "an LFW View 2 pairs.txt: write pair records instead "
                             "of training shards.", allow_missing=True)
    flags.DEFINE_string("aligned_dir", None, "With --align: where the aligned faces and "
                        "their report go (default: <output_dir>_aligned).",
                        flag_values=flag_values)
    flag_groups.define_alignment(flag_values)
    flags.DEFINE_string("input_rec", None, "insightface training set: a directory holding "
                        "train.rec, train.idx (and optionally property), read without mxnet; "
                        "instead of --input_dir.", flag_values=flag_values)
    flags.DEFINE_string("from_bin", None, "insightface verification set (lfw.bin, cfp_fp.bin, "
                        "...): write pair records (10 contiguous folds); instead of --input_dir.",
                        flag_values=flag_values)
    define_teacher_flags(flag_values)
    flags.mark_flags_as_required(["output_dir"], flag_values=flag_values)


def define_teacher_flags(flag_values):
    """--teacher and the ONNX teacher's preprocessing (insightface's defaults)."""
    flags.DEFINE_string("teacher", None, "Store a teacher's embedding of each source image for "
                        "distillation: saved_model:DIR (this project's export), onnx:FILE (an "
                        "embedding model, e.g. insightface's w600k_r50.onnx) or dlib (the "
                        "[teacher] extra).", flag_values=flag_values)
    flags.DEFINE_enum("teacher_layout", "auto", list(teachers.LAYOUTS), "ONNX teacher input "
                      "layout (auto: NCHW when the second dimension is 3).",
                      flag_values=flag_values)
    flags.DEFINE_enum("teacher_channels", "rgb", list(teachers.CHANNEL_ORDERS), "ONNX teacher "
                      "channel order (insightface's models take RGB).", flag_values=flag_values)
    flags.DEFINE_float("teacher_mean", None, "ONNX teacher: subtracted from 0..255 pixels "
                       "(default as insightface: 127.5, or 0 when the graph normalises itself).",
                       flag_values=flag_values)
    flags.DEFINE_float("teacher_std", None, "ONNX teacher: divides the pixels after the mean "
                       "(default 127.5, or 1 as --teacher_mean).", flag_values=flag_values)
    flags.DEFINE_integer("teacher_image_size", None, "ONNX teacher input side (default: from "
                         "the model's input shape, else 112).", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_bool("teacher_flip", False, "Also store the teacher's embedding of each source "
                      "image mirrored left to right (teacher/embedding_flipped): the training "
                      "input then targets it for the images it flips, so the student learns a "
                      "mirror-consistent embedding (image records of --input_dir only).",
                      flag_values=flag_values)


def _load_teacher(FLAGS):  # noqa: N803 - absl idiom
    if not FLAGS.teacher:
        for flag in ("teacher_layout", "teacher_channels", "teacher_mean", "teacher_std",
                     "teacher_image_size", "teacher_flip"):
            if FLAGS[flag].present:
                raise app.UsageError(f"--{flag} needs --teacher")
        return None
    return teachers.load_teacher(FLAGS.teacher, layout=FLAGS.teacher_layout,
                                 channels=FLAGS.teacher_channels, mean=FLAGS.teacher_mean,
                                 std=FLAGS.teacher_std, image_size=FLAGS.teacher_image_size)


_USER_ERRORS = (ConversionError, pairs_lib.PairsFormatError, pairs_lib.MissingPairImagesError,
                teachers.TeacherError)


def _check_align_usage(FLAGS):  # noqa: N803 - absl idiom
    if FLAGS.align:
        if FLAGS.crop_box:
            raise app.UsageError("--crop_box does not apply to --align (the five landmarks "
                                 "place the face)")
        return
    for flag in ("aligned_dir", "landmarks", "min_face_size"):
        if FLAGS[flag].present:
            raise app.UsageError(f"--{flag} needs --align")


def _align_first(FLAGS):  # noqa: N803 - absl idiom
    """Align the raw photos of --input_dir; returns ``(aligned_dir, manifest record)``."""
    aligned_dir = FLAGS.aligned_dir or FLAGS.output_dir.rstrip("/\\") + "_aligned"
    only = None
    if FLAGS.pairs:
        pairs_file = pairs_lib.read_pairs(FLAGS.pairs)
        relpath_pairs, _, _ = pairs_lib.resolve_pairs(pairs_file, FLAGS.input_dir,
                                                      allow_missing=True)
        only = sorted(set(path for two in relpath_pairs for path in two))
    image_size = FLAGS.image_size or raw_faces.DEFAULT_IMAGE_SIZE
    summary = raw_faces.align_folder(FLAGS.input_dir, aligned_dir, image_size=image_size,
                                     overwrite=FLAGS.overwrite, progress=True, only=only,
                                     **alignment_flags.align_options(FLAGS))
    alignment_flags.print_skips(summary)
    print(raw_faces.format_summary(summary))
    with open(summary["report"], encoding="utf-8") as f:
        options = json.load(f)["options"]
    record = {"aligned_dir": summary["output_dir"], "report": summary["report"],
              "image_size": image_size, "template": "insightface arcface_dst (5 points)"}
    record.update({k: v for k, v in options.items() if k not in ("input_dir", "image_size")})
    return aligned_dir, record


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: returns 0 on success, 1 with a message on bad input.

    ``flag_values`` must hold the flags of :func:`define_flags`, already parsed.
    """
    cli.check_usage(argv)
    FLAGS = flag_values  # noqa: N806 - absl idiom
    sources = [f"--{flag}" for flag in ("input_dir", "input_rec", "from_bin") if FLAGS[flag].value]
    if len(sources) != 1:
        raise app.UsageError("give exactly one of --input_dir, --input_rec and --from_bin"
                             + (f" (got {' and '.join(sources)})" if sources else ""))
    if FLAGS.pairs and not FLAGS.input_dir:
        raise app.UsageError("--pairs needs --input_dir (the image root of the pairs file)")
    if FLAGS.from_bin:
        for flag in ("seed", "min_images_per_class"):
            if FLAGS[flag].present:
                raise app.UsageError(f"--{flag} does not apply to --from_bin (pairs keep the "
                                     f"file's order)")
    if FLAGS.pairs:
        for flag in ("seed", "min_images_per_class"):
            if FLAGS[flag].present:
                raise app.UsageError(f"--{flag} does not apply to --pairs (pairs keep the file's "
                                     "order and all identities)")
    elif FLAGS.allow_missing_pairs and not FLAGS.from_bin:
        raise app.UsageError("--allow_missing_pairs needs --pairs or --from_bin")
    if FLAGS.teacher_flip and (FLAGS.pairs or not FLAGS.input_dir):
        raise app.UsageError("--teacher_flip applies to image records of --input_dir (not "
                             "--pairs, --input_rec or --from_bin)")
    if FLAGS.align and not FLAGS.input_dir:
        raise app.UsageError("--align needs --input_dir (the raw photos)")
    _check_align_usage(FLAGS)
    common = dict(output_dir=FLAGS.output_dir,
                  num_shards=FLAGS.num_shards, image_size=FLAGS.image_size,
                  crop_box=FLAGS.crop_box, num_workers=FLAGS.num_workers, strict=FLAGS.strict,
                  overwrite=FLAGS.overwrite, progress=True)
    teacher = None
    try:
        teacher = _load_teacher(FLAGS)
        input_dir = FLAGS.input_dir
        if FLAGS.align:
            # The aligned faces already have their size: stored as they are, not re-encoded.
            input_dir, common["align"] = _align_first(FLAGS)
            common["image_size"] = None
        if teacher is not None:
            common["teacher"] = teacher
        if FLAGS.from_bin:
            summary = insightface.convert_bin(FLAGS.from_bin, name=FLAGS.name or "pairs",
                                              allow_missing_pairs=FLAGS.allow_missing_pairs,
                                              **common)
        elif FLAGS.input_rec:
            summary = insightface.convert_rec(
                FLAGS.input_rec, name=FLAGS.name or "train", seed=FLAGS.seed,
                min_images_per_class=FLAGS.min_images_per_class, **common)
        else:
            if teacher is not None and FLAGS.align:
                # The teacher sees the raw photo (its own detector), not our aligned face.
                common["teacher_dir"] = FLAGS.input_dir
            if FLAGS.pairs:
                summary = convert_pairs(FLAGS.pairs, input_dir=input_dir,
                                        name=FLAGS.name or "pairs",
                                        allow_missing_pairs=FLAGS.allow_missing_pairs, **common)
            else:
                summary = convert_folder(input_dir=input_dir, name=FLAGS.name or "train",
                                         seed=FLAGS.seed,
                                         min_images_per_class=FLAGS.min_images_per_class,
                                         teacher_flip=FLAGS.teacher_flip, **common)
    except _USER_ERRORS + alignment_flags.user_errors() as e:
        print(f"make_tfrecords: error: {alignment_flags.describe_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Finished shards and the aligned faces are on disk, written atomically: nothing is lost.
        print(f"\nmake_tfrecords: interrupted; the finished shards in {FLAGS.output_dir} are kept: "
              "re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if teacher is not None:
            teacher.close()
    for item in summary["skipped"][:_MAX_LISTED_SKIPS]:
        print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    if len(summary["skipped"]) > _MAX_LISTED_SKIPS:
        print(f"... and {len(summary['skipped']) - _MAX_LISTED_SKIPS} more skipped files, all "
              "listed in "
              f"{os.path.join(summary['output_dir'], manifest_lib.MANIFEST_NAME)}", file=sys.stderr)
    print(format_summary(summary))
    if "teacher" in summary:
        print(f"teacher {summary['teacher']['name']} ({summary['teacher']['dim']}-d): "
              f"{summary['teacher']['fallbacks']} image(s) without a detected face embedded as "
              "the whole frame")
    return 0


def run():
    """Console-script entry point (``circle-make-tfrecords``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
