"""The held-out fold's identities as an identity-folder tree, for 1:N identification.

    python -m data_tools.lfw_identification --lfw_dir=/data/lfw_gray250 --pairs=/data/pairs.txt \\
        --holdout_folds=10 --output_dir=/data/lfw_fold10/identities

links every identity that appears in the held-out folds of ``pairs.txt`` (all its LFW images,
one image or many) into ``output_dir`` (symbolic links, no copies), ready for
``make_tfrecords.py``; the records then feed ``python -m export.identification`` (gallery: one
image of each identity with two or more, probes: the others; identities with one image give
the non-mated probes) and ``estimator_main.py --eval_protocol=retrieval``. The identities are
disjoint from the training split of :mod:`data_tools.lfw_holdout` for the same folds.
"""

import os
import sys

from data_tools import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import flags  # noqa: E402

from data_tools import holdout_split  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402


def link_identities(lfw_dir, pairs_path, holdout_folds, output_dir):
    """Link the held-out folds' identity folders into ``output_dir``; returns a summary dict.

    Raises :class:`holdout_split.HoldoutError` for a missing ``lfw_dir``, folds outside the pairs
    file, identities missing from ``lfw_dir`` or an ``output_dir`` holding anything but links.
    """
    if not os.path.isdir(lfw_dir):
        raise holdout_split.HoldoutError(f"--lfw_dir {lfw_dir} is not a directory")
    pairs_file = pairs_lib.read_pairs(pairs_path)
    folds = sorted(set(holdout_folds))
    if not folds or not all(1 <= f <= pairs_file.num_folds for f in folds):
        raise holdout_split.HoldoutError(f"holdout folds {folds} out of range "
                                       f"1-{pairs_file.num_folds}")
    names = sorted(holdout_split.fold_identities(pairs_file, folds))
    lfw_dir = os.path.abspath(lfw_dir)
    missing = [n for n in names if not os.path.isdir(os.path.join(lfw_dir, n))]
    if missing:
        raise holdout_split.HoldoutError(f"{len(missing)} identities of the held-out folds are not "
                                       f"in {lfw_dir} (e.g. {missing[0]})")
    os.makedirs(output_dir, exist_ok=True)
    foreign = [n for n in os.listdir(output_dir)
               if not os.path.islink(os.path.join(output_dir, n))]
    if foreign:
        raise holdout_split.HoldoutError(f"{output_dir} holds entries that are not identity links "
                                       f"(e.g. {foreign[0]})")
    for name in os.listdir(output_dir):
        if name not in names:
            os.remove(os.path.join(output_dir, name))
    counts = {}
    for name in names:
        target = os.path.join(lfw_dir, name)
        link = os.path.join(output_dir, name)
        if os.path.islink(link) and os.readlink(link) != target:
            os.remove(link)
        if not os.path.islink(link):
            os.symlink(target, link)
        counts[name] = holdout_split.count_images(target)
    return {"identities": len(names), "images": sum(counts.values()),
            "identities_with_2_or_more": sum(1 for c in counts.values() if c >= 2),
            "single_image_identities": sum(1 for c in counts.values() if c == 1)}


def define_flags(flag_values=flags.FLAGS):
    if "lfw_dir" in flag_values:
        return
    flags.DEFINE_string("lfw_dir", None, "Extracted LFW folder (one sub-folder per identity).",
                        flag_values=flag_values)
    flags.DEFINE_string("pairs", None, "The official View 2 pairs.txt.", flag_values=flag_values)
    flags.DEFINE_list("holdout_folds", ["10"], "1-based folds whose identities are linked.",
                      flag_values=flag_values)
    flags.DEFINE_string("output_dir", None, "Where the identity links go.",
                        flag_values=flag_values)


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
