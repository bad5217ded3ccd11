r"""Convert face folders, or an LFW pairs file, to sharded TFRecords.

Training images (one sub-folder per identity, the layout of LFW, CASIA-WebFace and
MS-Celeb-1M_clean_align)::

    python data_tools/make_tfrecords.py --input_dir=faces/ --output_dir=records/train

writes ``train-00000-of-000NN.tfrecord`` shards (identities mixed across shards in a seeded order),
``labels.txt`` (line i names label i; identities sorted by name) and ``manifest.json``.

Verification pairs (LFW View 2 ``pairs.txt``), in pairs-file order so that folds stay contiguous::

    python data_tools/make_tfrecords.py --pairs=pairs.txt --input_dir=lfw/ --output_dir=records/lfw

The conversion itself is ``data_tools.conversion`` (checking and encoding the images) feeding
``data_tools.shard_writer`` (plan, lock, resume, atomic shards, manifest): re-running the same
command keeps the finished shards and writes the rest, byte-identical to an uninterrupted run.
"""

import os
import sys

if __package__ in (None, ""):
    # Run as a script, sys.path[0] is data_tools/ and the package itself is not importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data_tools import manifest as manifest_lib  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402
from data_tools.conversion import (  # noqa: E402
    TARGET_SHARD_BYTES,
    ConversionError,
    convert_folder,
    convert_pairs,
)

_MAX_LISTED_SKIPS = 20


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
