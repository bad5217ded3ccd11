"""A face gallery: enrol identity folders into an npz index, search it with photos (1:N).

    python -m export.gallery enrol --model=runs/r50/export/best --folder=faces/ --index=gallery.npz
    python -m export.gallery search --index=gallery.npz photo.jpg --top_k=5
    python -m export.gallery search --index=gallery.npz --report=ident/report.json photo.jpg

``enrol`` embeds every image of ``<folder>/<identity>/<image>`` (flip test-time augmentation, as
the evaluation) and writes the index; enrolling into an existing index appends, and images
already in it (same identity and file path) are skipped, so re-running is harmless.

``search`` embeds each photo with the model the index was enrolled with (or ``--model``) and
lists its ``--top_k`` nearest gallery images by cosine similarity. The answer is the identity of
the best match when its score exceeds the open-set threshold, otherwise ``unknown``. The
threshold is ``--threshold`` (a cosine), or from ``--report``: an identification report's
``threshold@fpir=<--fpir>`` (``python -m export.identification``), or a verification report's
``threshold`` (squared L2 distance d, turned into the cosine 1 - d / 2). Without either every
photo gets its best match.

Photos and gallery images must be face crops made the way the model's training records were
(an LFW-a model needs the same crop box); raw photos need a detector and ``data_tools.align``.

The index is a plain ``.npz`` (``embeddings`` float32 [N, D], ``labels`` and ``paths`` unicode
arrays, ``model``, ``flip``, ``version``): it is read with ``allow_pickle=False``, never pickle.
"""

import os
import sys

from data_tools import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from data_tools import image_files  # noqa: E402
from data_tools.fileio import atomic_write  # noqa: E402
from export import report as report_lib  # noqa: E402
from export import retrieval  # noqa: E402

INDEX_VERSION = 1
COMMANDS = ("enrol", "search")


class GalleryError(ValueError):
    """Bad input for the gallery (one line for the CLI)."""


def load_index(path):
    """The index at ``path`` as a dict of arrays (``model`` and ``flip`` as Python values)."""
    if not os.path.isfile(path):
        raise GalleryError(f"no gallery index at {path} (run 'enrol' first)")
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


def enrol(embedder, folder, index_path, flip=True, batch_size=64, progress=True):
    """Embed the images of ``folder``'s identity folders not yet in the index, append them.

    Returns ``(added, total, skipped)``: images added, entries in the index, and the scanner's
    ``(relpath, reason)`` list of files that are not usable images.
    """
    if not os.path.isdir(folder):
        raise GalleryError(f"--folder {folder} is not a directory")
    scan = image_files.scan_identity_folders(folder)
    if not scan.entries:
        raise GalleryError(f"no images in identity folders under {folder}")
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
                                          progress=progress)
        save_index(index_path, np.concatenate([index["embeddings"], embeddings]),
                   index["labels"].tolist() + [label for label, _, _ in new],
                   index["paths"].tolist() + [path for _, path, _ in new], model, flip)
    return len(new), index["embeddings"].shape[0] + len(new), scan.skipped


def threshold_from_report(path, fpir=0.01):
    """``(cosine threshold, description)`` from an identification or verification report."""
    data = report_lib.read_report(path)
    key = f"threshold@fpir={fpir:g}"
    if key in data:
        value = data[key]
        if not isinstance(value, (int, float)):
            raise GalleryError(f"{path} has no finite {key}")
        return float(value), f"{key} of {path}"
    if isinstance(data.get("threshold"), (int, float)):
        return 1.0 - float(data["threshold"]) / 2.0, (
            f"verification threshold of {path} (squared L2 {data['threshold']:.4f})")
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


# ---------------------------------------------------------------------------------------------
# Command line.


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "index" in flag_values:
        return
    flags.DEFINE_string("index", None, "The gallery index (.npz).", flag_values=flag_values)
    flags.DEFINE_string("model", None, "SavedModel directory or an exporter's base directory "
                        "(enrol: required; search: default the index's model).",
                        flag_values=flag_values)
    flags.DEFINE_string("folder", None, "enrol: identity folders (<folder>/<identity>/<image>).",
                        flag_values=flag_values)
    flags.DEFINE_integer("top_k", 5, "search: gallery images listed per photo.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_float("threshold", None, "search: open-set threshold on the cosine similarity; "
                       "a best match at or below it is 'unknown'.", flag_values=flag_values)
    flags.DEFINE_string("report", None, "search: take the threshold from this report.json.",
                        flag_values=flag_values)
    flags.DEFINE_float("fpir", 0.01, "search: which identification threshold of --report.",
                       flag_values=flag_values)
    flags.DEFINE_bool("flip", True, "Flip test-time augmentation (enrol; search uses the "
                      "index's setting).", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 64, "Images per SavedModel call.", lower_bound=1,
                         flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """``gallery enrol`` / ``gallery search PHOTO...``; returns 0, or 1 with a one-line message."""
    fv = flag_values
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"the first argument is the command: {' or '.join(COMMANDS)}")
    command, photos = argv[1], argv[2:]
    if not fv.index:
        raise app.UsageError("--index is required")
    # TensorFlow is loaded only when a model is needed.
    from export import embedder as embed  # noqa: PLC0415

    try:
        if command == "enrol":
            if photos:
                raise app.UsageError(f"enrol takes --folder, not photos: {' '.join(photos)}")
            if not fv.model or not fv.folder:
                raise app.UsageError("enrol needs --model and --folder")
            with embed.load_saved_model(fv.model) as embedder:
                added, total, skipped = enrol(embedder, fv.folder, fv.index, flip=fv.flip,
                                              batch_size=fv.batch_size)
            for relpath, reason in skipped:
                print(f"skipped {relpath}: {reason}", file=sys.stderr)
            print(f"enrolled {added} new image(s); {fv.index} holds {total}")
            return 0
        if not photos:
            raise app.UsageError("search needs one or more photos")
        if fv.threshold is not None and fv.report:
            raise app.UsageError("give --threshold or --report, not both")
        index = load_index(fv.index)
        if not index["embeddings"].shape[0]:
            raise GalleryError(f"{fv.index} is empty")
        threshold, source = fv.threshold, "--threshold"
        if fv.report:
            threshold, source = threshold_from_report(fv.report, fv.fpir)
        with embed.load_saved_model(fv.model or index["model"]) as embedder:
            if embedder.embedding_size != index["embeddings"].shape[1]:
                raise GalleryError(f"the model gives {embedder.embedding_size}-d embeddings, "
                                   f"{fv.index} holds {index['embeddings'].shape[1]}-d")
            missing = [p for p in photos if not os.path.isfile(p)]
            if missing:
                raise GalleryError(f"photo not found: {missing[0]}")
            embeddings = embedder.embed_files(photos, batch_size=fv.batch_size,
                                              flip=index["flip"], progress=len(photos) > 50)
    except (GalleryError, embed.EmbedError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if threshold is not None:
        print(f"threshold: cosine {threshold:.4f} ({source})")
    for photo, result in zip(photos, search(index, embeddings, fv.top_k, threshold)):
        best_score, best_label, _ = result["matches"][0]
        if result["answer"] is None:
            verdict = f"{best_label} (cosine {best_score:.4f}; no threshold)"
        elif result["answer"] == "unknown":
            verdict = f"unknown (best: {best_label}, cosine {best_score:.4f} <= {threshold:.4f})"
        else:
            verdict = f"{best_label} (cosine {best_score:.4f} > {threshold:.4f})"
        print(f"{photo}: {verdict}")
        for rank, (score, label, path) in enumerate(result["matches"], 1):
            print(f"  {rank}. {score:.4f}  {label}  {path}")
    return 0


def run():
    """Console entry point (``python -m export.gallery``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
