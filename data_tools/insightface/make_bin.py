r"""Write an insightface verification ``.bin`` from an LFW-format pairs file and its images, to
share a set with insightface's tools (command line; the library is
``data_tools.insightface.bin_from_pairs``)::

    python -m data_tools.insightface.make_bin --pairs=pairs.txt --image_dir=lfw/ --output=lfw.bin \
        --crop_box=70,60,180,190 --image_size=112

Images go through the converter's transform (``--crop_box``, then ``--image_size``; without
either, JPEG/PNG files are stored byte for byte), so ``make_tfrecords.py --from_bin`` of the
result gives the same pair records' images as ``make_tfrecords.py --pairs`` with the same
options. Pair i's images are at positions 2i and 2i+1, in pairs-file order, so insightface's
``KFold(10, shuffle=False)`` sees the file's folds. A missing or unreadable image is an error.
"""

import sys

import cli

cli.quiet_tensorflow()  # before data_tools.shard_writer imports TensorFlow

from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402
from data_tools.insightface.bin_from_pairs import MakeBinError, make_bin  # noqa: E402


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "pairs" in flag_values:
        return
    flag_groups.define_pairs(flag_values, "an LFW View 2 pairs.txt (or any file in its format).",
                             image_dir="the image root the pairs file refers to "
                             "(<image_dir>/<name>/<name>_0001.jpg).")
    flag_groups.define_output(flag_values, "the .bin file to write.")
    flag_groups.define_image_transform(flag_values, flag_groups.KEEP_IMAGES)
    flag_groups.define_workers(flag_values)
    flags.DEFINE_integer("protocol", 4, "Pickle protocol (2 for Python 2 readers).",
                         lower_bound=2, upper_bound=5, flag_values=flag_values)
    flags.mark_flags_as_required(["pairs", "image_dir", "output"], flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """CLI body: returns 0 on success, 1 with a one-line message on bad input."""
    cli.check_usage(argv)
    f = flag_values
    try:
        result = make_bin(f.pairs, f.image_dir, f.output, image_size=f.image_size,
                          crop_box=f.crop_box, num_workers=f.num_workers, protocol=f.protocol)
    except (MakeBinError, pairs_lib.PairsFormatError) as e:
        print(f"make_bin: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the output cannot be written (directory, disk full, permissions)
        print(f"make_bin: error: cannot write {f.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    except pairs_lib.MissingPairImagesError as e:
        print(f"make_bin: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"{result['num_pairs']} pairs ({result['num_images']} images) -> {f.output} "
          f"({result['bytes']} bytes)")
    return 0


def run():
    """Entry point of ``python -m data_tools.insightface.make_bin``."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
