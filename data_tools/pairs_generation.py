r"""An LFW View 2-style ``pairs.txt`` for a folder of identity sub-folders: the library behind
``python -m data_tools.make_pairs`` (:func:`write_pairs_file`).

The file is what ``make_tfrecords.py --pairs`` and ``export.embed --pairs`` read (format in
:mod:`data_tools.pairs`): a header ``folds<TAB>n``, then per fold ``n`` matched lines
``name i j`` and ``n`` mismatched lines ``name1 i name2 j``. As in LFW View 2:

* the folds are **identity-disjoint**: every identity belongs to one fold, and both images of
  every pair of a fold (matched or mismatched) come from that fold's identities, so a threshold
  chosen on nine folds is tested on people it has never seen;
* image numbers are LFW's: ``i`` is the image ``name/name_%04d.<ext>`` (the converter's lookup,
  :func:`data_tools.pairs.pair_image_relpaths`). Folders must therefore be LFW-named; an image
  file that is not (``name/img1.jpg``, ``name/sub/x.jpg``, ``Name_0001.jpg`` in ``name/``)
  stops the run with the list of such files, since no pairs-file line could refer to it. An
  identity whose folder name holds whitespace stops it too (fields are whitespace-separated).

Choice of pairs (seeded, ``seed``; the same tree, options and seed give the same file, on
any platform, through NumPy's frozen legacy ``RandomState`` stream):

* identities are dealt to folds so that the folds can hold as many pairs as possible: the ones
  with two or more images first, largest first (ties in seeded order), each to a fold with
  fewer than two identities while there is one, else to the fold with the fewest possible
  matched pairs so far; then the single-image identities, each to the fold with the fewest
  identities;
* matched pairs go round the fold's identities (seeded order), one new random pair of images
  per identity per round, so that they spread over people instead of piling up on the largest
  identity; mismatched pairs take two distinct random identities of the fold and a random
  image of each. No pair appears twice; each block is written sorted, as LFW's are;
* ``pairs_per_fold`` (matched = mismatched = n per fold) defaults to the most every fold can
  hold, at most 300 (LFW's). A fold needs an identity with two images for matched pairs and two
  identities for mismatched ones: with fewer than ``num_folds`` identities of two or more
  images the run stops and says so.

Only file names are read (like :mod:`data_tools.lfw_holdout`): a corrupt image is reported by
the converter. The file is written atomically and read back through :mod:`data_tools.pairs`
(structure and image lookup) before it replaces the output.
"""

import collections
import os
import re

import numpy as np

from data_tools import image_files
from data_tools import pairs as pairs_lib

DEFAULT_MAX_PAIRS_PER_FOLD = 300  # LFW View 2: 10 folds of 300 matched + 300 mismatched
_LISTED = 10  # offending files named in an error message


class MakePairsError(ValueError):
    """Bad input or options (one message, for the command line)."""


Identity = collections.namedtuple("Identity", ["name", "indices"])
Identity.__doc__ = """An identity folder and the sorted LFW image numbers found in it."""


def _matched_capacity(identities):
    return sum(len(ident.indices) * (len(ident.indices) - 1) // 2 for ident in identities)


def _mismatched_capacity(identities):
    sizes = [len(ident.indices) for ident in identities]
    total = sum(sizes)
    return (total * total - sum(s * s for s in sizes)) // 2


def scan_lfw_folders(input_dir):
    """The identities of ``input_dir`` with their LFW image numbers, sorted by name.

    Raises :class:`MakePairsError` for a missing directory, identity names with whitespace, and
    image files a pairs file cannot name (not ``<name>/<name>_NNNN.<ext>`` directly in the
    identity folder, or an image number 0). Hidden files and folders and files without an image
    extension are ignored; identity folders without images are left out.
    """
    if not os.path.isdir(input_dir):
        raise MakePairsError(f"--input_dir {input_dir} is not a directory")
    identities, bad_names, unusable = [], [], []
    for name in sorted(os.listdir(input_dir)):
        folder = os.path.join(input_dir, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        pattern = re.compile(re.escape(name) + r"_(\d{4,})$")
        indices = set()
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith(".") or not image_files.is_image_filename(filename):
                    continue
                relpath = os.path.relpath(os.path.join(dirpath, filename), input_dir)
                relpath = relpath.replace(os.sep, "/")
                match = pattern.match(os.path.splitext(filename)[0])
                index = int(match.group(1)) if match else 0
                # The converter looks up name/name_%04d.<ext> in the identity folder itself.
                if (dirpath != folder or not match or index < 1
                        or f"{index:04d}" != match.group(1)
                        or not os.path.isfile(os.path.join(dirpath, filename))):
                    unusable.append(relpath)
                    continue
                indices.add(index)
        if indices and len(name.split()) != 1:
            bad_names.append(name)
        if indices:
            identities.append(Identity(name, tuple(sorted(indices))))
    if bad_names:
        raise MakePairsError(
            f"{len(bad_names)} identity folder name(s) contain whitespace, which a pairs file "
            "cannot hold (its fields are whitespace-separated): "
            f"{', '.join(repr(n) for n in bad_names[:_LISTED])}; rename them (e.g. spaces to '_')")
    if unusable:
        raise MakePairsError(
            f"{len(unusable)} image file(s) under {input_dir} are not named the LFW way, "
            "<name>/<name>_NNNN.<ext> directly in the identity folder <name> (NNNN = 0001, 0002, "
            "...), so no pairs-file line can refer to them: "
            f"{', '.join(unusable[:_LISTED])}{', ...' if len(unusable) > _LISTED else ''}. Rename "
            "them (pairs.txt names images by number; --rename does it in place, logged in "
            "lfw_renames.tsv) or move them out of the tree")
    return identities


def assign_folds(identities, num_folds, rng):
    """Deal identities to ``num_folds`` identity-disjoint folds; returns a list of lists."""
    order = rng.permutation(len(identities))
    shuffled = [identities[i] for i in order]
    multi = sorted((ident for ident in shuffled if len(ident.indices) >= 2),
                   key=lambda ident: -len(ident.indices))  # stable: ties keep seeded order
    singles = [ident for ident in shuffled if len(ident.indices) < 2]
    folds = [[] for _ in range(num_folds)]
    capacity = [0] * num_folds
    for ident in multi:
        # Every fold first gets two identities (mismatched pairs need them), then capacity rules.
        k = min(range(num_folds), key=lambda f: (min(len(folds[f]), 2), capacity[f],
                                                  len(folds[f]), f))
        folds[k].append(ident)
        capacity[k] += len(ident.indices) * (len(ident.indices) - 1) // 2
    for ident in singles:
        k = min(range(num_folds), key=lambda f: (len(folds[f]), f))
        folds[k].append(ident)
    return folds


def _distinct_pairs(indices, rng, limit):
    """Yield distinct ``(i, j)``, i < j, of ``indices`` in random order (at most ``limit``)."""
    n = len(indices)
    total = n * (n - 1) // 2
    if total <= 2 * limit + 64:
        everything = [(indices[a], indices[b]) for a in range(n) for b in range(a + 1, n)]
        for k in rng.permutation(total):
            yield everything[k]
        return
    seen = set()
    while True:  # the caller takes at most ``limit`` < total / 2 of them
        a, b = sorted(rng.choice(n, 2, replace=False))
        if (a, b) not in seen:
            seen.add((a, b))
            yield indices[a], indices[b]


def matched_pairs(fold, n, rng):
    """``n`` distinct matched pairs ``(name, i, name, j)`` spread round-robin over ``fold``."""
    multi = [fold[k] for k in rng.permutation(len(fold)) if len(fold[k].indices) >= 2]
    sources = [(ident.name, _distinct_pairs(ident.indices, rng, n)) for ident in multi]
    chosen = []
    while len(chosen) < n and sources:
        remaining = []
        for name, source in sources:
            if len(chosen) == n:
                break
            pair = next(source, None)
            if pair is None:
                continue
            chosen.append((name, pair[0], name, pair[1]))
            remaining.append((name, source))
        sources = remaining
    return sorted(chosen)


def mismatched_pairs(fold, n, rng):
    """``n`` distinct mismatched pairs ``(name1, i, name2, j)``, name1 < name2, within ``fold``."""
    people = sorted(fold)
    capacity = _mismatched_capacity(people)
    if 2 * n >= capacity:  # few possible pairs: enumerate them rather than reject duplicates
        everything = [(a.name, i, b.name, j) for x, a in enumerate(people)
                      for b in people[x + 1:] for i in a.indices for j in b.indices]
        return sorted(everything[k] for k in rng.permutation(len(everything))[:n])
    chosen = set()
    while len(chosen) < n:
        x, y = sorted(rng.choice(len(people), 2, replace=False))
        a, b = people[x], people[y]
        chosen.add((a.name, a.indices[rng.randint(len(a.indices))],
                    b.name, b.indices[rng.randint(len(b.indices))]))
    return sorted(chosen)


def make_pairs(identities, num_folds=10, pairs_per_fold=None, seed=0):
    """Folds of pairs for ``identities`` (from :func:`scan_lfw_folders`).

    Returns ``(pairs_per_fold, folds, fold_identities)``: ``folds`` holds one list per fold of
    ``pairs_per_fold`` matched then as many mismatched ``(name1, i, name2, j)`` tuples,
    ``fold_identities`` the sorted names of each fold. Raises :class:`MakePairsError` when the
    identities cannot fill ``num_folds`` folds with ``pairs_per_fold`` pairs (or with one pair,
    when ``pairs_per_fold`` is None, which asks for the most possible up to 300).
    """
    if num_folds < 1:
        raise MakePairsError(f"--num_folds must be at least 1, got {num_folds}")
    if pairs_per_fold is not None and pairs_per_fold < 1:
        raise MakePairsError(f"--pairs_per_fold must be at least 1, got {pairs_per_fold}")
    multi = sum(1 for ident in identities if len(ident.indices) >= 2)
    if multi < num_folds or len(identities) < 2 * num_folds:
        raise MakePairsError(
            f"too few identities: {num_folds} folds need at least {num_folds} identities with 2 or "
            f"more LFW-named images (one per fold, for matched pairs) and {2 * num_folds} "
            f"identities in all (two per fold, for mismatched pairs); found {multi} with 2 or more "
            f"images of {len(identities)} in all. Lower --num_folds or add identities")
    rng = np.random.RandomState(seed)
    fold_members = assign_folds(identities, num_folds, rng)
    limits = [min(_matched_capacity(f), _mismatched_capacity(f)) for f in fold_members]
    most = min(limits)
    if most < 1:  # not reached with the counts checked above; a guard, not a silent 0
        raise MakePairsError(f"a fold of {len(fold_members[limits.index(most)])} identities can "
                             "hold no matched or no mismatched pair; lower --num_folds")
    if pairs_per_fold is None:
        pairs_per_fold = min(most, DEFAULT_MAX_PAIRS_PER_FOLD)
    elif pairs_per_fold > most:
        worst = limits.index(most)
        raise MakePairsError(
            f"--pairs_per_fold={pairs_per_fold} is more than the data allows: dealt into "
            f"{num_folds} identity-disjoint folds, fold {worst + 1} can hold only "
            f"{_matched_capacity(fold_members[worst])} distinct matched and "
            f"{_mismatched_capacity(fold_members[worst])} mismatched pairs "
            f"({len(fold_members[worst])} identities). Use --pairs_per_fold={most} or less, or "
            "fewer --num_folds")
    folds = []
    for members in fold_members:
        folds.append(matched_pairs(members, pairs_per_fold, rng)
                     + mismatched_pairs(members, pairs_per_fold, rng))
    names = [sorted(ident.name for ident in members) for members in fold_members]
    return pairs_per_fold, folds, names


def write_pairs_file(input_dir, output, num_folds=10, pairs_per_fold=None, seed=0,
                     overwrite=False):
    """Scan ``input_dir``, make the pairs and write ``output``; returns a summary dict.

    The file is written under a temporary name, parsed back with
    :func:`data_tools.pairs.read_pairs`, every image resolved under ``input_dir`` with
    :func:`data_tools.pairs.resolve_pairs`, and only then renamed to ``output``. An existing
    ``output`` with other content is kept unless ``overwrite``.
    """
    identities = scan_lfw_folders(input_dir)
    per_fold, folds, names = make_pairs(identities, num_folds, pairs_per_fold, seed)
    output_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(output_dir, exist_ok=True)
    temporary = os.path.join(output_dir, f".{os.path.basename(output)}.tmp-{os.getpid()}")
    try:
        pairs_lib.write_pairs(temporary, num_folds, per_fold, [p for fold in folds for p in fold])
        parsed = pairs_lib.read_pairs(temporary)
        pairs_lib.resolve_pairs(parsed, input_dir)
        if os.path.exists(output) and not overwrite:
            with open(output, "rb") as old, open(temporary, "rb") as new:
                same = old.read() == new.read()
            if not same:
                raise MakePairsError(f"{output} exists with other pairs; pass --overwrite to "
                                     "replace it")
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return {
        "output": output,
        "num_folds": num_folds,
        "pairs_per_fold": per_fold,
        "num_pairs": 2 * per_fold * num_folds,
        "identities": len(identities),
        "identities_with_2_images": sum(1 for i in identities if len(i.indices) >= 2),
        "images": sum(len(i.indices) for i in identities),
        "fold_identities": [len(n) for n in names],
    }
