"""A face gallery: enrol identity folders into an npz index, search it with photos (1:N)
(command line; the library is ``export.gallery_index``).

    python -m export.gallery enrol --model=runs/r50/export/best --folder=faces/ --index=gallery.npz
    python -m export.gallery search --index=gallery.npz photo.jpg --top_k=5
    python -m export.gallery search --index=gallery.npz --report=ident/report.json photo.jpg
    python -m export.gallery enrol --model=... --folder=faces/ --index=gallery.db   # SQLite
    python -m export.gallery import --npz=gallery.npz --index=gallery.db

An ``--index`` ending in ``.db`` is the SQLite gallery the face-recognition service uses
(``python -m export.serve --gallery``, :mod:`export.gallery_store`): it remembers the model it
was enrolled with and refuses another one. ``import`` copies an npz index into it (``--model``
defaults to the npz's model).

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

Photos and gallery images go through the model's transform (``assets.extra/transform.json``: the
crop box, size or alignment of its records, printed as ``transform: ...``), so raw frames like
those the records were made from can be enrolled and searched as they are; ``--crop_box``,
``--image_size`` and ``--align`` override it as in ``export.embed``, ``--crop_box=none`` sends
the photos unchanged.

The index is a plain ``.npz`` (``embeddings`` float32 [N, D], ``labels`` and ``paths`` unicode
arrays, ``model``, ``flip``, ``version``): it is read with ``allow_pickle=False``, never pickle.
"""

import os
import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402

from cli import flag_groups, transform_flags  # noqa: E402
from export import gallery_store  # noqa: E402
from export.gallery_index import (  # noqa: E402
    GalleryError,
    enrol,
    import_npz,
    load_index,
    open_store,
    search,
    threshold_from_report,
)

COMMANDS = ("enrol", "search", "import")


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "index" in flag_values:
        return
    flags.DEFINE_string("index", None, "The gallery index (.npz, or .db: the service's SQLite "
                        "gallery).", flag_values=flag_values)
    flags.DEFINE_string("npz", None, "import: the npz index to copy into the .db --index.",
                        flag_values=flag_values)
    flag_groups.define_model_path(flag_values, "enrol: required; search: default the index's "
                                  "model.")
    flag_groups.define_folder(flag_values, "enrol: the identities to enrol.")
    flags.DEFINE_integer("top_k", 5, "search: gallery images listed per photo.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_float("threshold", None, "search: open-set threshold on the cosine similarity; "
                       "a best match at or below it is 'unknown'.", flag_values=flag_values)
    flags.DEFINE_string("report", None, "search: take the threshold from this report.json.",
                        flag_values=flag_values)
    flag_groups.define_fpir(flag_values, "the threshold that search takes from --report")
    flag_groups.define_flip(flag_values, note="Enrol; search uses the index's setting.")
    flag_groups.define_batch_size(flag_values)
    flag_groups.define_image_transform(flag_values, flag_groups.MODEL_TRANSFORM, align="")


def main(argv, flag_values=flags.FLAGS):
    """``gallery enrol`` / ``gallery search PHOTO...``; returns 0, or 1 with a one-line message."""
    fv = flag_values
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"the first argument is the command: {' or '.join(COMMANDS)}")
    command, photos = argv[1], argv[2:]
    if not fv.index:
        raise app.UsageError("--index is required")
    try:
        transform_flags.check_transform_flags(fv)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    # TensorFlow is loaded only when a model is needed.
    from export import embedder as embed  # noqa: PLC0415

    try:
        if command == "import":
            if photos or not fv.npz:
                raise app.UsageError("import takes --npz (and --index, a .db), no photos")
            model = fv.model or load_index(fv.npz)["model"]
            with embed.load_saved_model(model) as embedder:
                added, total = import_npz(fv.npz, embedder, fv.index)
            print(f"imported {added} new image(s); {fv.index} holds {total}")
            return 0
        if command == "enrol":
            if photos:
                raise app.UsageError(f"enrol takes --folder, not photos: {' '.join(photos)}")
            if not fv.model or not fv.folder:
                raise app.UsageError("enrol needs --model and --folder")
            fallbacks = []
            with embed.load_saved_model(fv.model) as embedder:
                transform = transform_flags.resolve_transform(
                    fv, embedder.transform(), recorded=embedder.records_transform())
                added, total, skipped = enrol(embedder, fv.folder, fv.index, flip=fv.flip,
                                              batch_size=fv.batch_size, transform=transform,
                                              fallbacks=fallbacks)
            for relpath, reason in skipped:
                print(f"skipped {relpath}: {reason}", file=sys.stderr)
            _print_fallbacks(transform, fallbacks, added, "new image")
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
            threshold, source = threshold_from_report(fv.report, fv.fpir, flip=index["flip"])
        with embed.load_saved_model(fv.model or index["model"]) as embedder:
            if gallery_store.is_gallery_db(fv.index):
                open_store(embedder, fv.index, index["flip"]).close()  # the model check
            if embedder.embedding_size != index["embeddings"].shape[1]:
                raise GalleryError(f"the model gives {embedder.embedding_size}-d embeddings, "
                                   f"{fv.index} holds {index['embeddings'].shape[1]}-d")
            missing = [p for p in photos if not os.path.isfile(p)]
            if missing:
                raise GalleryError(f"photo not found: {missing[0]}")
            transform = transform_flags.resolve_transform(
                fv, embedder.transform(), recorded=embedder.records_transform())
            fallbacks = []
            embeddings = embedder.embed_files(photos, batch_size=fv.batch_size,
                                              flip=index["flip"], progress=len(photos) > 50,
                                              transform=transform, fallbacks=fallbacks)
    except (GalleryError, embed.EmbedError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _print_fallbacks(transform, fallbacks, len(photos), "photo")
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
        if photo in fallbacks:
            verdict += " [no face detected: the whole frame was searched]"
        print(f"{photo}: {verdict}")
        for rank, (score, label, path) in enumerate(result["matches"], 1):
            print(f"  {rank}. {score:.4f}  {label}  {path}")
    return 0


def _print_fallbacks(transform, fallbacks, total, what):
    """The count of --align's whole-frame fallbacks on stderr (``export.embed``'s line), and
    each one's name: a photo without a detected face is never dropped in silence."""
    line = transform_flags.fallback_line(transform, fallbacks, total, what)
    if line:
        print(line, file=sys.stderr)
        for name in fallbacks:
            print(f"  no face detected: {name}", file=sys.stderr)


def run():
    """Console entry point (``python -m export.gallery``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
