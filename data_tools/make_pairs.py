r"""Write an LFW View 2-style ``pairs.txt`` for a folder of identity sub-folders (command line;
the library is ``data_tools.pairs_generation``).

::

    python -m data_tools.make_pairs --input_dir=faces/ --output=pairs.txt

The file is what ``make_tfrecords.py --pairs`` and ``export.embed --pairs`` read (format in
:mod:`data_tools.pairs`). As in LFW View 2 the folds are identity-disjoint (a threshold chosen on
nine folds is tested on people it has never seen) and image numbers are LFW's
(``name/name_%04d.<ext>``): image files named otherwise, or identity folders whose names hold
whitespace, stop the run with their list; ``--rename`` first renames camera-named photos
(``IMG_1001.jpg``) to LFW's names in place (:mod:`data_tools.lfw_names`).

How identities are dealt to the folds and pairs are chosen (seeded by ``--seed``; the same
tree, options and seed give the same file on any platform), and how ``--pairs_per_fold``
defaults to the most every fold can hold (at most 300, LFW's): :mod:`data_tools.pairs_generation`.
Only file names are read; the file is written atomically and read back through
:mod:`data_tools.pairs` before it replaces ``--output``.
"""

import os
import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from data_tools import lfw_names  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402
from data_tools.pairs_generation import (  # noqa: E402
    DEFAULT_MAX_PAIRS_PER_FOLD,
    MakePairsError,
    write_pairs_file,
)


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "output" in flag_values:
        return
    flag_groups.define_input_dir(flag_values, "face folder tree, one sub-folder per identity, "
                                 "images named <name>/<name>_NNNN.<ext> (the LFW layout).")
    flag_groups.define_output(flag_values, "the pairs file to write (LFW View 2 format).")
    flag_groups.define_pair_folds(flag_values, unset="the most every fold can hold, at most "
                                  f"{DEFAULT_MAX_PAIRS_PER_FOLD}")
    flag_groups.define_seed(flag_values, "the fold assignment and of the pairs")
    flags.DEFINE_boolean("rename", False, "First rename the photos directly in each identity "
                         "folder to <name>/<name>_NNNN.<ext> (camera names such as IMG_1001.jpg "
                         "cannot be named by a pairs file), logging each rename in "
                         "<input_dir>/lfw_renames.tsv.", flag_values=flag_values)
    flag_groups.define_overwrite(flag_values, "an existing --output that holds other pairs")
    flags.mark_flags_as_required(["input_dir", "output"], flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: 0 on success, 1 with one message on bad input."""
    cli.check_usage(argv)
    FLAGS = flag_values  # noqa: N806 - absl idiom
    try:
        if FLAGS.rename and os.path.isdir(FLAGS.input_dir):
            renamed = lfw_names.rename_to_lfw(FLAGS.input_dir)
            print(f"renamed {renamed} photo(s) to <name>/<name>_NNNN.<ext> (log: "
                  f"{os.path.join(FLAGS.input_dir, lfw_names.LOG_NAME)})")
        summary = write_pairs_file(FLAGS.input_dir, FLAGS.output, FLAGS.num_folds,
                                   FLAGS.pairs_per_fold, FLAGS.seed, FLAGS.overwrite)
    except (MakePairsError, pairs_lib.PairsFormatError, pairs_lib.MissingPairImagesError,
            OSError) as e:
        print(f"make_pairs: error: {e}", file=sys.stderr)
        return 1
    print(f"{summary['num_folds']} folds x ({summary['pairs_per_fold']} matched + "
          f"{summary['pairs_per_fold']} mismatched) = {summary['num_pairs']} pairs from "
          f"{cli.count(summary['identities'], 'identity', 'identities')} "
          f"({summary['identities_with_2_images']} with 2 or "
          f"more images, {summary['images']} images; "
          f"{min(summary['fold_identities'])}-{max(summary['fold_identities'])} identities per "
          f"fold) -> {summary['output']}")
    return 0


def run():
    """Console-script entry point (``circle-make-pairs``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
