"""Verify a model on a pairs file: an LFW-format pairs.txt with its image folder
(:func:`evaluate_pairs`), an insightface ``.bin`` or a directory of pair records
(:func:`evaluate_pair_images`), by the LFW protocol of :mod:`evaluation.verification`. The
``--pairs`` side of ``export.embed``; the embeddings come from an :class:`export.embedder.Embedder`.

Folds: those the pairs file and the pair records store for each pair (as the training
evaluation uses them), unless ``n_folds`` asks for another number, which cuts the pairs into that
many contiguous folds; a ``.bin`` stores none and is cut into insightface's 10.
"""

import collections
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

from data_tools import manifest, schema
from data_tools import pairs as pairs_lib
from data_tools.insightface import bin_format as insightface_bin
from evaluation import verification
from export.embedder import EmbedError


class FoldsError(EmbedError):
    """The requested number of folds does not fit the pairs file."""


class PairsEvaluation(collections.namedtuple(
        "PairsEvaluation", ["metrics", "n_folds", "num_images"])):
    """:func:`evaluate_pairs`'s result: the :func:`evaluation.verification.evaluate` metrics, the
    folds used and the number of distinct images embedded."""


def evaluate_pairs(embedder, pairs_path, image_dir, n_folds=None, far_target=1e-3,
                   batch_size=64, flip=False, progress=False, transform=None,
                   allow_missing=False, fallbacks=None):
    """Verify the pairs of an LFW-format pairs file (images under ``image_dir``).

    Every distinct image is embedded once. ``n_folds`` defaults to the pairs file's folds (each
    pair evaluated in its own); another number cuts the pairs into contiguous folds. A
    missing image is an error, never a silently skipped pair (the message lists them), unless
    ``allow_missing``: then those pairs are left out and named on stderr.
    ``transform`` (an ``export.embedder.Transform``) crops and resizes every image as the
    converter does: with the SavedModel's own (``Embedder.transform``), raw frames give the
    pictures of the evaluation records, and the report's accuracy. ``fallbacks`` (a list)
    gets the names of the photos an aligning ``transform`` found no face in (embedded whole:
    ``export.embedder.align_photos``).
    """
    try:
        pairs_file = pairs_lib.read_pairs(pairs_path)
        relpaths, kept, missing = pairs_lib.resolve_pairs(
            pairs_file, image_dir, allow_missing=allow_missing,
            remedy="pass --allow_missing_pairs to leave those pairs out")
    except OSError as e:
        raise EmbedError(f"cannot read pairs file {pairs_path}: {e.strerror or e}") from e
    except ValueError as e:  # data_tools.pairs: malformed file, missing images, no image_dir
        raise EmbedError(str(e)) from e
    if missing:
        print(f"left out {len(pairs_file.pairs) - len(kept)} of {len(pairs_file.pairs)} pairs: "
              f"{len(missing)} image(s) missing under {image_dir} (--allow_missing_pairs), e.g. "
              f"{missing[0]}", file=sys.stderr)
        if not kept:
            raise EmbedError(f"no pair of {pairs_path} has both images under {image_dir}")
    n_folds = n_folds or pairs_file.num_folds
    if n_folds < 2:
        raise FoldsError(f"{pairs_path} has a single fold; the protocol needs at least 2 (pass "
                         "--n_folds to cut it into contiguous folds)")
    if n_folds > len(kept):
        raise FoldsError(f"--n_folds={n_folds} exceeds the {len(kept)} pairs of {pairs_path}")
    unique = sorted({path for pair in relpaths for path in pair})
    row = {path: i for i, path in enumerate(unique)}
    files = [os.path.join(image_dir, *path.split("/")) for path in unique]
    embeddings = embedder.embed_files(files, batch_size=batch_size, flip=flip, names=unique,
                                      progress=progress, transform=transform,
                                      fallbacks=fallbacks)
    index1 = np.array([row[p1] for p1, _ in relpaths])
    index2 = np.array([row[p2] for _, p2 in relpaths])
    issame = np.array([pair.issame for pair in kept], dtype=bool)
    folds = _stored_or_contiguous([pair.fold for pair in kept], pairs_file.num_folds, n_folds)
    metrics = verification.evaluate(embeddings[index1], embeddings[index2], issame,
                                    n_folds=n_folds, far_target=far_target, folds=folds)
    return PairsEvaluation(metrics, metrics["n_folds"], len(unique))


def _stored_or_contiguous(folds, stored_count, n_folds):
    """The stored ``folds`` when ``n_folds`` is their number; None (contiguous folds) when the
    caller asked for another number, or when there are none."""
    if folds is None or n_folds != stored_count:
        return None
    return np.asarray(folds, dtype=np.int64)


def read_pair_images(path):
    """``(images, issame, n_folds, what, folds)`` of a verification set given without an image
    folder: an insightface ``.bin`` (read without running anything from it) or a directory of
    pair records. ``images`` holds pair i's encoded images at 2i and 2i+1; ``folds`` each pair's
    stored fold (pair records), or None (a ``.bin`` stores none)."""
    if os.path.isdir(path):
        try:
            info = manifest.read_manifest(path)
            paths = manifest.verify_shards(path)
        except manifest.ManifestError as e:
            raise EmbedError(str(e)) from None
        if info["kind"] != "pairs":
            raise EmbedError(f"{path} holds {info['kind']} records, not verification pairs")
        records = []
        with tf.Graph().as_default():
            dataset = tf.data.TFRecordDataset(paths).map(schema.parse_pair_record).batch(256)
            batch = tf.data.make_one_shot_iterator(dataset).get_next()
            with tf.Session() as session:
                while True:
                    try:
                        value = session.run(batch)
                    except tf.errors.OutOfRangeError:
                        break
                    records.extend(zip(value["index"], value["issame"],
                                       value["image1"]["encoded"], value["image2"]["encoded"],
                                       value["fold"]))
        records.sort(key=lambda r: r[0])
        images = [blob for r in records for blob in (r[2], r[3])]
        return (images, [bool(r[1]) for r in records], int(info.get("num_folds", 10)),
                "pair records", [int(r[4]) for r in records])
    try:
        images, issame = insightface_bin.read_bin(path)
    except insightface_bin.BinFormatError as e:
        raise EmbedError(str(e)) from None
    return images, issame, insightface_bin.NUM_FOLDS, ".bin", None


def evaluate_pair_images(embedder, path, n_folds=None, far_target=1e-3, batch_size=64,
                         flip=False, progress=False):
    """:func:`evaluate_pairs` for a ``.bin`` file or a pair-records directory (see
    :func:`read_pair_images`): pair records on their stored folds (as the training evaluation),
    a ``.bin`` on contiguous folds (as insightface cuts them)."""
    images, issame, default_folds, _, stored = read_pair_images(path)
    n_folds = n_folds or default_folds
    if n_folds < 2 or n_folds > len(issame):
        raise FoldsError(f"--n_folds={n_folds} does not fit the {len(issame)} pairs of {path}")
    names = [f"{os.path.basename(path.rstrip(os.sep))}#{i}" for i in range(len(images))]
    embeddings = embedder.embed_bytes(images, batch_size=batch_size, flip=flip, names=names,
                                      progress=progress)
    metrics = verification.evaluate(embeddings[0::2], embeddings[1::2],
                                    np.array(issame, dtype=bool), n_folds=n_folds,
                                    far_target=far_target,
                                    folds=_stored_or_contiguous(stored, default_folds, n_folds))
    return PairsEvaluation(metrics, metrics["n_folds"], len(images))
