"""The embedded synthetic face dataset on disk (the command line is ``data_tools.synthetic``).

It is the README's demo data and the test suite's data, so it needs no download and no licence.
The faces come from :mod:`data_tools.synthetic.faces` (drawing the seeded parameters of
:mod:`data_tools.synthetic.parameters`); :func:`generate` renders them in worker
processes, writes the pairs file with :mod:`data_tools.pairs` and manages the output directory.

Layout written by :func:`generate` (identities are disjoint between ``train`` and ``lfw``, and the
folds of ``pairs.txt`` are identity-disjoint, like LFW View 2)::

    output_dir/train/synth_0001/synth_0001_0001.jpg ...
    output_dir/lfw/synth_v0001/synth_v0001_0001.jpg ...
    output_dir/pairs.txt
    output_dir/synthetic.json      (options and counts; written last, marks a complete dataset)

The files are byte-identical for a given seed whatever the number of worker processes.
"""

import json
import multiprocessing
import os
import shutil
import sys
import time

from tqdm import tqdm

from data_tools import pairs as pairs_lib
from data_tools.synthetic.faces import render_image
from data_tools.synthetic.parameters import (
    GENERATOR_VERSION,
    TRAIN,
    VERIFICATION,
    identity_name,
    rng,
)

SPLIT_DIRS = {TRAIN: "train", VERIFICATION: "lfw"}
PAIRS_FILENAME = "pairs.txt"
MARKER_FILENAME = "synthetic.json"


def make_pairs(num_folds, identities_per_fold, images_per_identity, pairs_per_fold, seed=0):
    """The pairs of the dataset's ``pairs.txt``: :func:`pairs.make_fold_pairs` drawn with the
    generator's seeded RNG (identities 0-based, image numbers 1-based)."""
    return pairs_lib.make_fold_pairs(num_folds, identities_per_fold, images_per_identity,
                                     pairs_per_fold, rng(seed, "pairs"))


def _render_task(task):
    seed, split, identity_index, image_index, image_size, grayscale_fraction, path = task
    image, quality = render_image(seed, split, identity_index, image_index, image_size,
                                  grayscale_fraction)
    image.save(path, format="JPEG", quality=quality)
    return path



def _write_fold_pairs(path, folds, names):
    """Write folds from :func:`pairs.make_fold_pairs` as an LFW View 2 pairs.txt, identities by
    ``names``."""
    half = len(folds[0]) // 2
    if any(len(fold) != 2 * half for fold in folds):
        raise ValueError("all folds must have the same number of pairs")
    pairs_lib.write_pairs(path, len(folds), half, [
        (names[p1], i, names[p2], j) for fold in folds for p1, i, p2, j in fold])


def _prepare_output_dir(output_dir, options):
    """Make ``output_dir`` ready; True when it already holds this exact dataset.

    Only a directory marked as ours is cleared: a mistaken ``--output_dir`` pointing at real
    data must never lose a file.
    """
    marker = os.path.join(output_dir, MARKER_FILENAME)
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.isfile(marker):
            raise ValueError(f"output_dir {output_dir} is not empty and holds no synthetic dataset "
                             f"(no {MARKER_FILENAME}); choose an empty or new directory")
        try:
            with open(marker) as f:
                previous = json.load(f)
        except ValueError:
            previous = {}
        if previous.get("complete") and previous.get("options") == options:
            return True
        for name in list(SPLIT_DIRS.values()) + [PAIRS_FILENAME]:
            path = os.path.join(output_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    elif os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir} exists and is not a directory")
    os.makedirs(output_dir, exist_ok=True)
    # Written first (incomplete) so that a killed run is recognised and cleared next time.
    _write_marker(marker, options, complete=False, counts=None)
    return False


def _write_marker(path, options, complete, counts):
    record = {"generator": "data_tools.synthetic", "generator_version": GENERATOR_VERSION,
              "complete": complete, "options": options, "counts": counts}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _check_positive(name, value, minimum=1):
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def generate(output_dir, num_train_identities=100, train_images_per_identity=24, num_folds=10,
             pair_identities_per_fold=8, pair_images_per_identity=4, pairs_per_fold=30,
             image_size=112, seed=0, num_workers=None, progress=True, grayscale_fraction=0.02):
    """Write the synthetic dataset to ``output_dir`` and return a summary dict.

    Training identities go to ``output_dir/train``, ``num_folds * pair_identities_per_fold``
    other identities to ``output_dir/lfw`` with ``pairs.txt`` (``pairs_per_fold`` matched and as
    many mismatched pairs per fold: the header's n, what make_pairs, the converters' manifests
    and pairs.txt mean by it). Re-running with the same options on a complete dataset reuses it;
    an output dir written by other options is regenerated; a non-empty dir that is not a
    synthetic dataset is refused. ``num_workers`` defaults to the CPU count; results do not
    depend on it.

    Summary keys: ``output_dir, train_dir, lfw_dir, pairs_path, num_train_identities,
    num_train_images, num_verification_identities, num_verification_images, num_folds,
    num_pairs, seconds, images_per_second, reused, num_workers`` (processes used).
    """
    for name, value, minimum in (("num_train_identities", num_train_identities, 1),
                                 ("train_images_per_identity", train_images_per_identity, 1),
                                 ("image_size", image_size, 32),
                                 ("seed", seed, 0)):
        _check_positive(name, value, minimum)
    pairs_lib.check_pairs_feasible(num_folds, pair_identities_per_fold, pair_images_per_identity,
                                   pairs_per_fold)
    if not 0.0 <= grayscale_fraction <= 1.0:
        raise ValueError(f"grayscale_fraction must be in [0, 1], got {grayscale_fraction!r}")
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    _check_positive("num_workers", num_workers)
    options = {
        "num_train_identities": int(num_train_identities),
        "train_images_per_identity": int(train_images_per_identity),
        "num_folds": int(num_folds),
        "pair_identities_per_fold": int(pair_identities_per_fold),
        "pair_images_per_identity": int(pair_images_per_identity),
        # Not "pairs_per_fold": until issue 26 that key held matched + mismatched, and a
        # dataset written then must not be reused for the same number now.
        "matched_pairs_per_fold": int(pairs_per_fold),
        "image_size": int(image_size),
        "seed": int(seed),
        "grayscale_fraction": float(grayscale_fraction),
    }
    num_verification = num_folds * pair_identities_per_fold
    train_names = [identity_name(TRAIN, i, max(4, len(str(num_train_identities))))
                   for i in range(num_train_identities)]
    verification_names = [identity_name(VERIFICATION, i, max(4, len(str(num_verification))))
                          for i in range(num_verification)]
    counts = {
        "num_train_identities": num_train_identities,
        "num_train_images": num_train_identities * train_images_per_identity,
        "num_verification_identities": num_verification,
        "num_verification_images": num_verification * pair_images_per_identity,
        "num_folds": num_folds,
        "num_pairs": num_folds * 2 * pairs_per_fold,
    }
    summary = dict(counts)
    summary.update({
        "output_dir": output_dir,
        "train_dir": os.path.join(output_dir, SPLIT_DIRS[TRAIN]),
        "lfw_dir": os.path.join(output_dir, SPLIT_DIRS[VERIFICATION]),
        "pairs_path": os.path.join(output_dir, PAIRS_FILENAME),
    })
    start = time.time()
    if _prepare_output_dir(output_dir, options):
        summary.update({"seconds": time.time() - start, "images_per_second": 0.0,
                        "reused": True, "num_workers": 0})
        return summary

    tasks = []
    for split, names, per_identity in ((TRAIN, train_names, train_images_per_identity),
                                       (VERIFICATION, verification_names,
                                        pair_images_per_identity)):
        split_dir = os.path.join(output_dir, SPLIT_DIRS[split])
        for index, name in enumerate(names):
            folder = os.path.join(split_dir, name)
            os.makedirs(folder, exist_ok=True)
            for image_index in range(per_identity):
                path = os.path.join(folder, f"{name}_{image_index + 1:04d}.jpg")
                tasks.append((seed, split, index, image_index, image_size, grayscale_fraction,
                              path))

    folds = make_pairs(num_folds, pair_identities_per_fold, pair_images_per_identity,
                       pairs_per_fold, seed)
    _write_fold_pairs(summary["pairs_path"], folds, verification_names)

    bar = _progress_bar(len(tasks), progress)
    try:
        workers = min(num_workers, len(tasks))
        if workers == 1:
            for task in tasks:
                _render_task(task)
                bar.update(1)
        else:
            # spawn, not fork: the caller may have TensorFlow's threads running.
            context = multiprocessing.get_context("spawn")
            chunk = max(1, min(32, len(tasks) // (8 * workers)))
            with context.Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_task, tasks, chunksize=chunk):
                    bar.update(1)
    finally:
        bar.close()
    _write_marker(os.path.join(output_dir, MARKER_FILENAME), options, complete=True,
                  counts=counts)
    seconds = time.time() - start
    summary.update({"seconds": seconds, "images_per_second": len(tasks) / max(seconds, 1e-9),
                    "reused": False, "num_workers": workers})
    return summary


def _progress_bar(total, enabled):
    return tqdm(total=total, disable=not enabled, unit="img", desc="synthetic faces",
                file=sys.stderr)
