"""The held-out fold's identities as an identity-folder tree, for 1:N identification (command
line; the library is ``data_tools.holdout_split``).

    python -m data_tools.lfw_identification --lfw_dir=/data/lfw_gray250 --pairs=/data/pairs.txt \\
        --holdout_folds=10 --output_dir=/data/lfw_fold10/identities

links every identity that appears in the held-out folds of ``pairs.txt`` (all its LFW images,
one image or many) into ``output_dir`` (symbolic links, no copies), ready for
``make_tfrecords.py``; the records then feed ``python -m export.identification`` (gallery: one
image of each identity with two or more, probes: the others; identities with one image give
the non-mated probes) and ``estimator_main.py --eval_protocol=retrieval``. The identities are
disjoint from the training split of :mod:`data_tools.lfw_holdout` for the same folds.
"""

import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from data_tools.holdout_split import link_identities  # noqa: E402


def define_flags(flag_values=flags.FLAGS):
    if "lfw_dir" in flag_values:
        return
    flag_groups.define_lfw_split(flag_values, "are linked.")
    flag_groups.define_output_dir(flag_values, "where the identity links go.")


def main(argv, flag_values=flags.FLAGS):
    fv = flag_values
    cli.check_usage(argv, fv, required=("lfw_dir", "pairs", "output_dir"))
    try:
        folds = [int(f) for f in fv.holdout_folds]
        summary = link_identities(fv.lfw_dir, fv.pairs, folds, fv.output_dir)
    except (ValueError, OSError) as e:  # HoldoutError, PairsFormatError, a non-numeric fold
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{summary['identities']} identities ({summary['identities_with_2_or_more']} with 2+ "
          f"images, {summary['single_image_identities']} with one), {summary['images']} images -> "
          f"{fv.output_dir}")
    return 0


def run():
    """Entry point of ``python -m data_tools.lfw_identification``."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
