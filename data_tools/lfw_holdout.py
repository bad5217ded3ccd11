"""Split real LFW for the fold-holdout protocol (command line; the library is
``data_tools.holdout_split``)::

    python -m data_tools.lfw_holdout --lfw_dir=/data/lfw_gray250 --pairs=/data/pairs.txt \\
        --holdout_folds=10 --output_dir=/data/lfw_fold10

writes ``train/`` (one symbolic link per kept identity folder), ``pairs.txt`` (the held-out folds'
pairs, in ``--subfolds`` contiguous evaluation folds) and ``split.json``. ``scripts/lfw_recipe.sh``
runs the whole recipe.
"""

import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402
from data_tools.holdout_split import HoldoutError, make_split  # noqa: E402


def define_flags(flag_values=flags.FLAGS):
    flag_groups.define_lfw_split(flag_values, "never reach training; their pairs become the "
                                 "test set.")
    flag_groups.define_output_dir(flag_values, "where train/, pairs.txt and split.json go.")
    flags.DEFINE_integer("min_images", 2, "Keep training identities with at least this many "
                         "images.", flag_values=flag_values)
    flags.DEFINE_integer("subfolds", 10, "Evaluation folds the test pairs are dealt into.",
                         flag_values=flag_values)
    for name in ("lfw_dir", "pairs", "output_dir"):
        flags.mark_flag_as_required(name, flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: returns 0, or 1 with a message on bad input."""
    del argv
    try:
        folds = [int(fold) for fold in flag_values.holdout_folds]
    except ValueError:
        print("error: --holdout_folds takes fold numbers, got "
              f"{','.join(flag_values.holdout_folds)}", file=sys.stderr)
        return 1
    try:
        summary = make_split(flag_values.lfw_dir, flag_values.pairs, folds,
                             flag_values.output_dir, flag_values.min_images,
                             flag_values.subfolds)
    except (HoldoutError, pairs_lib.PairsFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"holdout folds {','.join(map(str, summary['holdout_folds']))}: "
          f"{summary['train_identities']} training identities, {summary['train_images']} images; "
          f"{summary['test_pairs']} test pairs -> {flag_values.output_dir}")
    return 0


def run():
    """Entry point of ``python -m data_tools.lfw_holdout``."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
