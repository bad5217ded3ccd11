"""The fold-holdout protocol on real LFW: train on the identities outside one View 2 fold
(the library behind ``python -m data_tools.lfw_holdout``), and test 1:N identification on the
held-out fold's identities (:func:`link_identities`, behind ``python -m
data_tools.lfw_identification``).

LFW's View 2 folds are identity-disjoint, so one fold's 600 pairs can be a test set for a model
trained on every other LFW image, provided no identity of that fold reaches training::

    python -m data_tools.lfw_holdout --lfw_dir=/data/lfw_gray250 --pairs=/data/pairs.txt \\
        --holdout_folds=10 --output_dir=/data/lfw_fold10

writes ``train/`` (one symbolic link per kept identity folder: identities with at least
``--min_images`` images that appear in none of the held-out folds) and ``pairs.txt`` (the
held-out folds' pairs in the LFW format), ready for ``make_tfrecords.py``.

The test pairs are laid out as LFW's own protocol expects them: ``--subfolds`` (10) contiguous
folds, each holding the same number of matched then mismatched pairs (30 + 30 for one held-out
fold, in pairs.txt order). ``evaluate()`` picks each sub-fold's threshold on the other nine, as it
does over View 2's folds; copying the held-out fold as one block instead would make every
sub-fold all-matched or all-mismatched. Tuning holds out another fold (e.g.
``--holdout_folds=9``) so that fold 10 stays a test. ``scripts/lfw_recipe.sh``
runs the whole recipe.

Only the file layout is touched here (no image is read or copied), so nothing derived from the
LFW images is written by this module.
"""

import collections
import json
import os

from data_tools import image_files
from data_tools import pairs as pairs_lib

SPLIT_NAME = "split.json"


class HoldoutError(ValueError):
    """Bad arguments or input for the holdout split (one line, for the command line)."""


def fold_identities(pairs_file, folds):
    """Names of every identity in the given 1-based ``folds`` of a parsed pairs file."""
    wanted = {fold - 1 for fold in folds}
    names = set()
    for pair in pairs_file.pairs:
        if pair.fold in wanted:
            names.update((pair.name1, pair.name2))
    return names


def count_images(identity_dir):
    """Image files directly inside one identity folder."""
    return sum(1 for name in os.listdir(identity_dir) if image_files.is_image_filename(name))


def _check_folds(pairs_file, folds):
    if not folds:
        raise HoldoutError("hold out at least one fold")
    bad = [fold for fold in folds if not 1 <= fold <= pairs_file.num_folds]
    if bad:
        raise HoldoutError(f"holdout fold(s) {', '.join(map(str, bad))} out of range: the pairs "
                           f"file has folds 1-{pairs_file.num_folds}")


def subfold_pairs(pairs, num_subfolds):
    """Re-deal ``pairs`` (matched and mismatched, any order) into ``num_subfolds`` LFW folds.

    Sub-fold k takes the k-th block of the matched pairs, then the k-th block of the mismatched
    ones, both in input order. Returns ``(pairs_per_fold, pairs_in_file_order)``.
    """
    matched = [pair for pair in pairs if pair.issame]
    mismatched = [pair for pair in pairs if not pair.issame]
    per_fold, left = divmod(len(matched), num_subfolds)
    if left or len(mismatched) != len(matched) or per_fold == 0:
        raise HoldoutError(f"{len(matched)} matched and {len(mismatched)} mismatched pairs cannot "
                           f"make {num_subfolds} sub-folds of equal halves")
    ordered = []
    for k in range(num_subfolds):
        block = slice(k * per_fold, (k + 1) * per_fold)
        ordered.extend(matched[block])
        ordered.extend(mismatched[block])
    return per_fold, ordered


def _link(target, link_path):
    """A symbolic link ``link_path`` → ``target``, replacing a stale link of a previous run."""
    if os.path.islink(link_path):
        if os.readlink(link_path) == target:
            return
        os.remove(link_path)
    os.symlink(target, link_path)


def _check_links_only(directory):
    """Refuse a ``directory`` that holds anything but the identity links of a previous run."""
    foreign = [name for name in os.listdir(directory)
               if not os.path.islink(os.path.join(directory, name))]
    if foreign:
        raise HoldoutError(f"{directory} holds {len(foreign)} entries that are not identity "
                           f"links (e.g. {foreign[0]}); choose an empty --output_dir")


def make_split(lfw_dir, pairs_path, holdout_folds, output_dir, min_images=2, num_subfolds=10):
    """Write the training identity links and the held-out pairs file; returns a summary dict.

    Raises :class:`HoldoutError` for a missing ``lfw_dir``, folds outside the pairs file, a
    ``min_images`` below 1, held-out pairs that do not split into ``num_subfolds``, or an
    ``output_dir/train`` holding anything but links of this split; ``pairs_lib.PairsFormatError``
    for a malformed pairs file.
    """
    if not os.path.isdir(lfw_dir):
        raise HoldoutError(f"--lfw_dir {lfw_dir} is not a directory (extract the LFW archive "
                           "first)")
    if min_images < 1:
        raise HoldoutError(f"--min_images must be at least 1, got {min_images}")
    folds = sorted(set(holdout_folds))
    pairs_file = pairs_lib.read_pairs(pairs_path)
    _check_folds(pairs_file, folds)
    held_out = fold_identities(pairs_file, folds)

    lfw_dir = os.path.abspath(lfw_dir)
    train_dir = os.path.join(output_dir, "train")
    os.makedirs(train_dir, exist_ok=True)
    _check_links_only(train_dir)

    kept = collections.OrderedDict()
    counts = collections.Counter()
    for name in sorted(os.listdir(lfw_dir)):
        identity_dir = os.path.join(lfw_dir, name)
        if not os.path.isdir(identity_dir):
            continue
        if name in held_out:
            counts["held_out_identities"] += 1
            continue
        num_images = count_images(identity_dir)
        if num_images < min_images:
            counts["too_few_images_identities"] += 1
            continue
        kept[name] = num_images
    missing = held_out.difference(os.listdir(lfw_dir))
    if missing:
        raise HoldoutError(f"{len(missing)} identities of the held-out folds are not in {lfw_dir} "
                           f"(e.g. {sorted(missing)[0]}): wrong --lfw_dir?")
    for name in os.listdir(train_dir):
        if name not in kept:
            os.remove(os.path.join(train_dir, name))
    for name in kept:
        _link(os.path.join(lfw_dir, name), os.path.join(train_dir, name))

    wanted = {fold - 1 for fold in folds}
    per_subfold, test_pairs = subfold_pairs(
        [pair for pair in pairs_file.pairs if pair.fold in wanted], num_subfolds)
    pairs_out = os.path.join(output_dir, "pairs.txt")
    pairs_lib.write_pairs(pairs_out, num_subfolds, per_subfold, test_pairs)

    summary = {
        "lfw_dir": lfw_dir,
        "pairs": os.path.abspath(pairs_path),
        "holdout_folds": folds,
        "min_images": min_images,
        "train_identities": len(kept),
        "train_images": sum(kept.values()),
        "held_out_identities": counts["held_out_identities"],
        "too_few_images_identities": counts["too_few_images_identities"],
        "test_pairs": len(test_pairs),
        "test_subfolds": num_subfolds,
    }
    with open(os.path.join(output_dir, SPLIT_NAME), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    return summary


def link_identities(lfw_dir, pairs_path, holdout_folds, output_dir):
    """Link the held-out folds' identity folders into ``output_dir`` (the tree of ``python -m
    data_tools.lfw_identification``, for 1:N identification); returns a summary dict.

    Raises :class:`HoldoutError` for a missing ``lfw_dir``, folds outside the pairs file,
    identities missing from ``lfw_dir`` or an ``output_dir`` holding anything but links.
    """
    if not os.path.isdir(lfw_dir):
        raise HoldoutError(f"--lfw_dir {lfw_dir} is not a directory")
    pairs_file = pairs_lib.read_pairs(pairs_path)
    folds = sorted(set(holdout_folds))
    _check_folds(pairs_file, folds)
    names = sorted(fold_identities(pairs_file, folds))
    lfw_dir = os.path.abspath(lfw_dir)
    missing = [n for n in names if not os.path.isdir(os.path.join(lfw_dir, n))]
    if missing:
        raise HoldoutError(f"{len(missing)} identities of the held-out folds are not in "
                           f"{lfw_dir} (e.g. {missing[0]})")
    os.makedirs(output_dir, exist_ok=True)
    _check_links_only(output_dir)
    for name in os.listdir(output_dir):
        if name not in names:
            os.remove(os.path.join(output_dir, name))
    counts = {}
    for name in names:
        target = os.path.join(lfw_dir, name)
        _link(target, os.path.join(output_dir, name))
        counts[name] = count_images(target)
    return {"identities": len(names), "images": sum(counts.values()),
            "identities_with_2_or_more": sum(1 for c in counts.values() if c >= 2),
            "single_image_identities": sum(1 for c in counts.values() if c == 1)}
