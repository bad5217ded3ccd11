"""A face gallery: identity folders enrolled into an npz index, searched with embeddings (1:N);
the library behind ``python -m export.gallery``.

:func:`enrol` embeds every image of ``<folder>/<identity>/<image>`` with an
``export.embedder.Embedder`` (flip test-time augmentation, as the evaluation) and writes the
index; enrolling into an existing index appends, and images already in it (same identity and file
path) are skipped, so re-running is harmless. :func:`search` lists the nearest gallery images of
each probe embedding by cosine similarity and answers the identity of the best match when its
score exceeds the open-set threshold, otherwise ``unknown``; :func:`threshold_from_report` reads
that threshold from an identification report (``threshold@fpir=...``) or a verification report
(squared L2 distance d, turned into the cosine 1 - d / 2).

The index is a plain ``.npz`` (``embeddings`` float32 [N, D], ``labels`` and ``paths`` unicode
arrays, ``model``, ``flip``, ``version``): it is read with ``allow_pickle=False``, never pickle.
An index path ending in ``.db`` (or ``.sqlite``) is the SQLite gallery of the face-recognition
service (:mod:`export.gallery_store`) instead: enrolment writes it one identity per transaction,
and :func:`import_npz` copies an npz index into one.
No TensorFlow here: the caller brings the embedder.
"""

import hashlib
import os
import sys

import numpy as np

from data_tools import image_files
from data_tools.fileio import atomic_write
from evaluation import reports as report_lib
from evaluation import retrieval
from export import gallery_store

INDEX_VERSION = 1


class GalleryError(ValueError):
    """Bad input for the gallery (one line for the CLI)."""


def load_index(path):
    """The index at ``path`` as a dict of arrays (``model`` and ``flip`` as Python values);
    a ``.db`` path is read from the SQLite gallery (``paths`` are the images' sources)."""
    if not os.path.isfile(path):
        raise GalleryError(f"no gallery index at {path} (run 'enrol' first)")
    if gallery_store.is_gallery_db(path):
        return _load_store(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            index = {key: data[key] for key in data.files}
    except (OSError, ValueError) as e:
        raise GalleryError(f"{path} is not a gallery index ({e})") from None
    missing = [key for key in ("embeddings", "labels", "paths", "model", "flip", "version")
               if key not in index]
    if missing:
        raise GalleryError(f"{path} is not a gallery index (no {', '.join(missing)})")
    if int(index["version"]) != INDEX_VERSION:
        raise GalleryError(f"{path} has index version {int(index['version'])}; this tool reads "
                           f"version {INDEX_VERSION}")
    embeddings = index["embeddings"]
    if embeddings.ndim != 2 or not (len(index["labels"]) == len(index["paths"])
                                    == embeddings.shape[0]):
        raise GalleryError(f"{path} is damaged: embeddings, labels and paths disagree in length")
    index["model"] = str(index["model"])
    index["flip"] = bool(index["flip"])
    return index


def save_index(path, embeddings, labels, paths, model, flip):
    """Write the index atomically (a reader sees the old file or the new one)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    arrays = {"embeddings": np.asarray(embeddings, np.float32),
              "labels": np.array(list(labels), dtype=np.str_).reshape(-1),
              "paths": np.array(list(paths), dtype=np.str_).reshape(-1),
              "model": np.array(model, dtype=np.str_), "flip": np.array(bool(flip)),
              "version": np.array(INDEX_VERSION)}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_store(path):
    try:
        with gallery_store.GalleryStore.open_existing(path) as store:
            labels, sources, embeddings = store.faces()
            model, flip = store.model_path or "", store.flip
    except gallery_store.GalleryStoreError as e:
        raise GalleryError(str(e)) from None
    return {"embeddings": embeddings, "labels": np.array(labels, dtype=np.str_).reshape(-1),
            "paths": np.array([s or "" for s in sources], dtype=np.str_).reshape(-1),
            "model": model, "flip": flip, "version": INDEX_VERSION}


def open_store(embedder, path, flip=True):
    """The SQLite gallery at ``path`` for ``embedder``'s model (created when absent); a
    gallery of another model, embedding size or flip setting is refused (GalleryError)."""
    model = os.path.abspath(embedder.saved_model_dir)
    try:
        return gallery_store.GalleryStore(
            path, gallery_store.model_fingerprint(model), embedder.embedding_size,
            model_path=model, flip=flip)
    except gallery_store.GalleryStoreError as e:
        raise GalleryError(str(e)) from None


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _enrol_store(embedder, scan, folder, index_path, flip, batch_size, progress, transform,
                 fallbacks):
    """Folder enrolment into the SQLite gallery: one transaction per identity."""
    folder_abs = os.path.abspath(folder)
    by_identity = {}
    for entry in scan.entries:
        by_identity.setdefault(entry.identity, []).append(entry.relpath)
    added = 0
    with open_store(embedder, index_path, flip) as store:
        for identity in sorted(by_identity):
            relpaths = by_identity[identity]
            paths = [os.path.join(folder_abs, *r.split("/")) for r in relpaths]
            embeddings = embedder.embed_files(paths, batch_size=batch_size, flip=flip,
                                              names=relpaths, progress=progress,
                                              transform=transform, fallbacks=fallbacks)
            faces = [(_file_sha256(p), p, e) for p, e in zip(paths, embeddings)]
            try:
                added += len(store.enrol(identity, faces)[0])
            except gallery_store.GalleryStoreError as e:
                raise GalleryError(f"{identity}: {e}") from None
        total = len(store)
    return added, total, scan.skipped


def import_npz(npz_path, embedder, db_path):
    """Copy an npz index into the SQLite gallery ``db_path`` of ``embedder``'s model (one
    transaction per identity; images already there are skipped). An image's hash is the
    sha256 of its file when the file still exists, else of ``'missing:' + its path``.
    Returns ``(added, total)``."""
    index = load_index(npz_path)
    if index["embeddings"].shape[1] != embedder.embedding_size:
        raise GalleryError(f"{npz_path} holds {index['embeddings'].shape[1]}-d embeddings, the "
                           f"model gives {embedder.embedding_size}-d")
    if index["model"] != os.path.abspath(embedder.saved_model_dir):
        print(f"warning: {npz_path} was enrolled with {index['model']}; importing it as "
              f"embeddings of {os.path.abspath(embedder.saved_model_dir)}", file=sys.stderr)
    rows = {}
    for label, path, embedding in zip(index["labels"].tolist(), index["paths"].tolist(),
                                      index["embeddings"]):
        digest = (_file_sha256(path) if os.path.isfile(path) else
                  hashlib.sha256(("missing:" + path).encode("utf-8")).hexdigest())
        rows.setdefault(label, []).append((digest, path, embedding))
    added = 0
    with open_store(embedder, db_path, index["flip"]) as store:
        for label in sorted(rows):
            try:
                added += len(store.enrol(label, rows[label])[0])
            except gallery_store.GalleryStoreError as e:
                raise GalleryError(f"{label}: {e}") from None
        total = len(store)
    return added, total


def enrol(embedder, folder, index_path, flip=True, batch_size=64, progress=True, transform=None,
          fallbacks=None):
    """Embed the images of ``folder``'s identity folders not yet in the index, append them.

    Returns ``(added, total, skipped)``: images added, entries in the index, and the scanner's
    ``(relpath, reason)`` list of files that are not usable images. A ``.db`` index is the
    SQLite gallery: each identity goes in with one transaction, images already enrolled (same
    sha256) are skipped. ``transform``: a ``data_tools.transform.Transform`` applied to every
    image (see ``Embedder.embed_files``); ``fallbacks``, a list, receives the relpaths that
    ``--align`` found no face in and enrolled as the whole frame.
    """
    if not os.path.isdir(folder):
        raise GalleryError(f"--folder {folder} is not a directory")
    scan = image_files.scan_identity_folders(folder)
    if not scan.entries:
        raise GalleryError(f"no images in identity folders under {folder}")
    if gallery_store.is_gallery_db(index_path):
        return _enrol_store(embedder, scan, folder, index_path, flip, batch_size, progress,
                            transform, fallbacks)
    model = os.path.abspath(embedder.saved_model_dir)
    if os.path.exists(index_path):
        index = load_index(index_path)
        if index["embeddings"].shape[1] != embedder.embedding_size:
            raise GalleryError(f"{index_path} holds {index['embeddings'].shape[1]}-d embeddings, "
                               f"the model gives {embedder.embedding_size}-d: enrol into a new "
                               "index")
        if index["flip"] != bool(flip):
            raise GalleryError(f"{index_path} was enrolled "
                               f"{'with' if index['flip'] else 'without'} flip test-time "
                               "augmentation; enrol the same way")
        if index["model"] != model:
            print(f"warning: {index_path} was enrolled with {index['model']}; adding embeddings of "
                  f"{model}", file=sys.stderr)
    else:
        index = {"embeddings": np.zeros((0, embedder.embedding_size), np.float32),
                 "labels": np.zeros(0, np.str_), "paths": np.zeros(0, np.str_)}
    folder_abs = os.path.abspath(folder)
    known = set(zip(index["labels"].tolist(), index["paths"].tolist()))
    new = []
    for entry in scan.entries:
        path = os.path.join(folder_abs, *entry.relpath.split("/"))
        if (entry.identity, path) not in known:
            new.append((entry.identity, path, entry.relpath))
    if new:
        embeddings = embedder.embed_files([p for _, p, _ in new], batch_size=batch_size,
                                          flip=flip, names=[r for _, _, r in new],
                                          progress=progress, transform=transform,
                                          fallbacks=fallbacks)
        save_index(index_path, np.concatenate([index["embeddings"], embeddings]),
                   index["labels"].tolist() + [label for label, _, _ in new],
                   index["paths"].tolist() + [path for _, path, _ in new], model, flip)
    return len(new), index["embeddings"].shape[0] + len(new), scan.skipped


def threshold_from_report(path, fpir=0.01, flip=None):
    """``(cosine threshold, description)`` from an identification or verification report.

    ``flip``: the flip TTA setting of the embeddings the threshold will judge (the index's);
    a report measured with the other setting is refused (a :class:`GalleryError` saying which
    enrolment matches), as ``export.embedder.decision_threshold`` refuses it, and for the same
    reason. A verification report measured with flip gives single embeddings its
    ``threshold_single``.
    """
    data = report_lib.read_report(path)
    report_flip = report_lib.report_flip(data)
    key = f"threshold@fpir={fpir:g}"
    threshold_key = "threshold"
    if key not in data and flip is False and report_flip and isinstance(
            data.get("threshold_single"), (int, float)):
        threshold_key, report_flip = "threshold_single", False
    if flip is not None and report_flip is not None and report_flip != flip:
        words = report_lib.flip_words
        raise GalleryError(f"the threshold of {path} was measured {words(report_flip)} flip "
                           f"test-time augmentation and the index holds embeddings made "
                           f"{words(flip)} it: enrol with {'--flip' if report_flip else '--noflip'}"
                           ", or give --threshold")
    if key in data:
        value = data[key]
        if not isinstance(value, (int, float)):
            raise GalleryError(f"{path} has no finite {key}")
        return float(value), f"{key} of {path}"
    if isinstance(data.get(threshold_key), (int, float)):
        return 1.0 - float(data[threshold_key]) / 2.0, (
            f"verification {threshold_key} of {path} (squared L2 {data[threshold_key]:.4f})")
    raise GalleryError(f"{path} holds neither {key} nor a verification threshold")


def search(index, embeddings, top_k=5, threshold=None):
    """For each probe embedding: ``{'answer': label or 'unknown' or None, 'matches': [(score,
    label, path), ...]}`` (best first); ``answer`` is None when there is no threshold."""
    scores, rows = retrieval.search(index["embeddings"], embeddings, top_k=top_k)
    results = []
    for score_row, index_row in zip(scores, rows):
        matches = [(float(s), str(index["labels"][i]), str(index["paths"][i]))
                   for s, i in zip(score_row, index_row)]
        answer = None
        if threshold is not None:
            answer = matches[0][1] if matches[0][0] > threshold else "unknown"
        results.append({"answer": answer, "matches": matches})
    return results
