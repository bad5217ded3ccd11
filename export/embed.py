"""Embed and verify faces with an exported SavedModel (command line; the library is
``export.embedder``).

    python -m export.embed --model DIR a.jpg                  # print the embedding
    python -m export.embed --model DIR a.jpg b.jpg            # same person or not?
    python -m export.embed --model DIR --align raw1.jpg raw2.jpg   # raw photos: detect, align
    python -m export.embed --model DIR --folder faces/ --output faces_emb
    python -m export.embed --model DIR --pairs pairs.txt --image_dir lfw/ --report_dir out/
    python -m export.embed --model DIR --pairs lfw.bin --report_dir out/   # or pair records
    python -m export.embed --model DIR --crop_box 70,60,180,190 --image_size 112 photo.jpg

``--model`` is a SavedModel directory or an exporter's base directory holding timestamped
SavedModels (``model_dir/export/best``: the newest is used). It is called through its
``serving_default`` signature: ``image_bytes`` (JPEG/PNG bytes, any size) in, L2-normalised
``embedding`` out.

Every mode applies by default the transform the SavedModel was exported with
(``assets.extra/transform.json``: the crop box, size or 5-point alignment of its evaluation
records, ``data_tools.transform``) and prints which, so that raw frames give the accuracy of the
model's report. The shared flags of ``cli.transform_flags`` override it with exactly the
converter's meaning: ``--crop_box`` and ``--image_size`` (make_tfrecords.py: crop, centre square,
Lanczos), ``--align`` (detect the largest face and align it onto the 5-point template; the
detector is the optional ``[align]`` extra); ``--crop_box=none`` sends the images as they are.
With ``--align`` a photo without a detected face is embedded whole (centre square at the aligned
size), never dropped: a ``note:`` names it, and the count is printed (``--pairs``: also the
report's ``align_fallbacks``).
A .bin or pair records hold converted images: nothing is applied to them.

``--print_norm`` (IMAGE arguments) also prints each image's ``embedding_norm``, the embedding's
norm before normalisation (a face-quality signal: low for blurred or non-faces; with flip, the
norm of the mean of the image's and its mirror's, see ``export.embedder``): after the path of
each embedding, or one ``embedding norm:`` line in the two-image mode.

``--flip`` (on by default, as in the evaluation) adds the embedding of each mirror image, then
renormalises. The decision threshold of the two-image mode comes from ``--threshold`` or from
the verification report the training run wrote (``report.json``): in
``<savedmodel>/assets.extra/``, then in ``eval/`` under each of the four parent directories of the
SavedModel.
"""

import os
import sys

import cli

cli.quiet_tensorflow()  # before TensorFlow is imported

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import flags  # noqa: E402

from cli import flag_groups, transform_flags  # noqa: E402
from evaluation import reports as report  # noqa: E402
from export.embedder import (  # noqa: E402
    EmbedError,
    ImageDecodeError,
    compare,
    decision_threshold,
    embed_folder,
    load_saved_model,
    save_embeddings,
)
from export.pair_verification import (  # noqa: E402
    FoldsError,
    evaluate_pair_images,
    evaluate_pairs,
)


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags in ``flag_values``."""
    fv = flag_values
    flag_groups.define_model_path(fv)
    flag_groups.define_flip(fv, note="--noflip returns the SavedModel's own output.")
    flags.DEFINE_bool("print_norm", False, "IMAGE arguments: also print each embedding's norm "
                      "before normalisation (the SavedModel's embedding_norm; a face-quality "
                      "signal): the column after the path.", flag_values=fv)
    flag_groups.define_batch_size(fv)
    flags.DEFINE_float("threshold", None, "Decision threshold on the squared L2 distance of two "
                       "images (same person when below). Default: the 'threshold' of the model's "
                       "report.json.", flag_values=fv)
    flag_groups.define_output(fv, "save embeddings to OUTPUT.npy and the image names to "
                              "OUTPUT.names.txt (required with --folder).")
    flag_groups.define_folder(fv, "embed every image of this tree.")
    flag_groups.define_pairs(fv, "evaluate the model on an LFW-format pairs file (with "
                             "--image_dir), an insightface .bin, or a directory of pair records "
                             "(make_tfrecords --pairs/--from_bin).",
                             image_dir="the identity folders of the --pairs images.",
                             allow_missing=True)
    flags.DEFINE_integer("n_folds", None, "Folds of the --pairs evaluation; default: the pairs "
                         "file's.", lower_bound=2, flag_values=fv)
    flag_groups.define_far_target(fv)
    flag_groups.define_report(fv, "report.json and roc.png of the --pairs evaluation",
                              flip=False, batch=False)
    flag_groups.define_image_transform(fv, flag_groups.MODEL_TRANSFORM, align="")
    return fv


def main(argv, flag_values=flags.FLAGS):
    """The command line on parsed flags; ``argv[1:]`` are the IMAGE arguments. Returns the exit
    status: 0, 1 for unusable input, 2 for flags that do not make sense together."""
    fv, images = flag_values, list(argv[1:])
    transform = None
    try:
        _check_usage(fv, images)
        with load_saved_model(fv.model) as embedder:
            print(f"model: {embedder.saved_model_dir}", file=sys.stderr)
            transform = _transform(fv, embedder)
            if fv.pairs:
                _evaluate_pairs(fv, embedder, transform)
            elif fv.folder:
                _embed_folder(fv, embedder, transform)
            elif len(images) == 2:
                _verify_two(fv, embedder, images, transform)
            else:
                _embed_images(fv, embedder, images, transform)
    except UsageError as e:
        print(f"error: {e}\n(--help lists the flags)", file=sys.stderr)
        return 2
    except ImageDecodeError as e:
        hint = ""
        if transform is not None and not transform_flags.transform_flags_given(fv):
            hint = (f"\n(the model's transform {transform.describe()} is meant for raw frames "
                    "like those its records were made from; --crop_box=none sends the images "
                    "as they are)")
        print(f"error: {e}{hint}", file=sys.stderr)
        return 1
    except EmbedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


class UsageError(Exception):
    """Flags that do not make sense together."""


def _check_usage(fv, images):
    if not fv.model:
        raise UsageError("--model is required")
    modes = [name for name, on in (("--pairs", fv.pairs), ("--folder", fv.folder),
                                   ("IMAGE arguments", images)) if on]
    if len(modes) != 1:
        raise UsageError("give exactly one of IMAGE arguments, --folder or --pairs (got %s)"
                         % (" and ".join(modes) if modes else "none"))
    if fv.pairs and not fv.image_dir and not _self_contained(fv.pairs):
        raise UsageError("--pairs needs --image_dir, the folder of the identity folders (unless "
                         "it is an insightface .bin or a directory of pair records)")
    if fv.pairs and fv.image_dir and _self_contained(fv.pairs):
        raise UsageError("--image_dir does not apply to a .bin or pair records: they hold the "
                         "images")
    if fv.folder and not fv.output:
        raise UsageError("--folder needs --output (embeddings go to OUTPUT.npy, names to "
                         "OUTPUT.names.txt)")
    if not fv.pairs and (fv.report_dir or fv.n_folds or fv.image_dir):
        raise UsageError("--report_dir, --n_folds and --image_dir apply to --pairs only")
    if fv.allow_missing_pairs and not fv.image_dir:
        raise UsageError("--allow_missing_pairs applies to --pairs with --image_dir (a .bin or "
                         "pair records hold their images)")
    if fv.pairs and fv.output:
        raise UsageError("--output applies to IMAGE arguments and --folder; --pairs writes its "
                         "report to --report_dir")
    if not 0.0 < fv.far_target <= 1.0:
        raise UsageError(f"--far_target must be in (0, 1], got {fv.far_target:g}")
    if fv.print_norm and not images:
        raise UsageError("--print_norm applies to IMAGE arguments")
    if fv.threshold is not None and len(images) != 2:
        raise UsageError("--threshold applies to the comparison of exactly two images")
    if fv.pairs and _self_contained(fv.pairs) and transform_flags.transform_flags_given(fv):
        raise UsageError("--crop_box, --image_size and --align do not apply to a .bin or pair "
                         "records: their images are converted already")
    try:
        transform_flags.check_transform_flags(fv)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _self_contained(pairs):
    """True for the --pairs values that hold their images: a .bin file, a records directory."""
    return os.path.isdir(pairs) or pairs.lower().endswith(".bin")


def _transform(fv, embedder):
    """The model's transform, or the flags' (``cli.transform_flags``); none for a .bin or
    pair records, whose images are converted already."""
    if fv.pairs and _self_contained(fv.pairs):
        return None
    return transform_flags.resolve_transform(fv, embedder.transform(),
                                             recorded=embedder.records_transform())


def _embed_files(fv, embedder, images, transform):
    """``(embeddings, norms or None)`` of the IMAGE arguments, through ``transform`` (with
    --align, their aligned largest faces); norms with --print_norm."""
    fallbacks = []
    result = embedder.embed_files(images, batch_size=fv.batch_size, flip=fv.flip,
                                  transform=transform, with_norm=fv.print_norm,
                                  fallbacks=fallbacks)
    line = transform_flags.fallback_line(transform, fallbacks, len(images), "photo")
    if line:
        print(line, file=sys.stderr)  # stdout holds the embeddings
    return (result.embeddings, result.norms) if fv.print_norm else (result, None)


def _embed_images(fv, embedder, images, transform):
    embeddings, norms = _embed_files(fv, embedder, images, transform)
    if fv.output:
        paths = save_embeddings(embeddings, images, fv.output)
        print(f"{len(images)} embeddings of size {embeddings.shape[1]} -> {paths[0]}, {paths[1]}")
        if norms is not None:
            for path, norm in zip(images, norms):
                print(f"{path} embedding_norm={norm:.6g}")
        return
    for index, (path, embedding) in enumerate(zip(images, embeddings)):
        values = " ".join(f"{v:.8g}" for v in embedding)
        norm = "" if norms is None else f"{norms[index]:.8g} "
        print(f"{path} {norm}{values}")


def _verify_two(fv, embedder, images, transform):
    embeddings, norms = _embed_files(fv, embedder, images, transform)
    if fv.output:
        save_embeddings(embeddings, images, fv.output)
    similarity, distance = compare(embeddings[0], embeddings[1])
    print(f"image 1: {images[0]}")
    print(f"image 2: {images[1]}")
    if norms is not None:
        print(f"embedding norm: {norms[0]:.6g}, {norms[1]:.6g}")
    print(f"cosine similarity: {similarity:.6f}")
    print(f"squared L2 distance: {distance:.6f}")

    threshold, source, notes = decision_threshold(embedder.saved_model_dir, fv.threshold, fv.flip)
    for note in notes:
        print(f"note: {note}")
    if threshold is None:
        print(f"decision: none ({source})")
        return
    same = distance < threshold
    print(f"threshold: {threshold:.6f} ({source})")
    print(f"decision: {'same person' if same else 'different people'} (squared L2 distance "
          f"{distance:.6f} {'<' if same else '>='} threshold {threshold:.6f})")


def _embed_folder(fv, embedder, transform):
    fallbacks = []
    result = embed_folder(
        embedder, fv.folder, batch_size=fv.batch_size, flip=fv.flip, progress=True,
        on_skipped=lambda relpath, reason: print(f"skipped {relpath}: {reason}",
                                                 file=sys.stderr), transform=transform,
        fallbacks=fallbacks)
    npy_path, names_path = save_embeddings(result.embeddings, result.names, fv.output)
    print(f"{cli.count(len(result.names), 'image')} of "
          f"{cli.count(result.num_identities, 'identity', 'identities')}, embeddings of size "
          f"{result.embeddings.shape[1]} -> {npy_path}, {names_path}")
    line = transform_flags.fallback_line(transform, fallbacks, len(result.names), "image")
    if line:
        print(line)


def _evaluate_pairs(fv, embedder, transform):
    fallbacks = []
    try:
        if _self_contained(fv.pairs):
            result = evaluate_pair_images(embedder, fv.pairs, n_folds=fv.n_folds,
                                          far_target=fv.far_target, batch_size=fv.batch_size,
                                          flip=fv.flip, progress=True)
        else:
            result = evaluate_pairs(embedder, fv.pairs, fv.image_dir, n_folds=fv.n_folds,
                                    far_target=fv.far_target, batch_size=fv.batch_size,
                                    flip=fv.flip, progress=True, transform=transform,
                                    allow_missing=fv.allow_missing_pairs, fallbacks=fallbacks)
    except FoldsError as e:
        raise UsageError(str(e)) from None
    metrics = result.metrics
    print(f"pairs: {metrics['num_pairs']} ({metrics['num_same']} same, {metrics['num_diff']} "
          f"different) in {result.n_folds} folds, {result.num_images} images, flip TTA "
          f"{'on' if fv.flip else 'off'}")
    print(f"accuracy: {metrics['accuracy']:.4f} +- {metrics['accuracy_std']:.4f}")
    print(f"threshold: {metrics['threshold']:.4f} (squared L2, mean over folds)")
    print(f"VAL@FAR={fv.far_target:g}: {metrics['val']:.4f} +- {metrics['val_std']:.4f} (FAR "
          f"{metrics['far']:.5f})")
    print(f"AUC: {metrics['auc']:.4f}")
    print(f"EER: {metrics['eer']:.4f}")
    line = transform_flags.fallback_line(transform, fallbacks, result.num_images, "image")
    if line:
        print(line)
    if fv.report_dir:
        extra = {"model": os.path.abspath(embedder.saved_model_dir),
                 "pairs": os.path.abspath(fv.pairs),
                 "image_dir": os.path.abspath(fv.image_dir) if fv.image_dir else None,
                 "flip": bool(fv.flip), "num_images": result.num_images,
                 "crop_box": None if transform is None or transform.crop_box is None
                 else list(transform.crop_box),
                 "image_size": None if transform is None else transform.image_size,
                 # --align: the images embedded whole, no face detected (None: no --align)
                 "align_fallbacks": len(fallbacks) if line else None,
                 "align_fallback_images": sorted(fallbacks) if line else None}
        json_path, png_path = report.write_report(metrics, fv.report_dir, extra=extra)
        print(f"report: {json_path}, {png_path}")


def run():
    """Console entry point (``circle-embed``, ``python -m export.embed``)."""
    tf.get_logger().setLevel("ERROR")  # the TF1 loader's deprecation notices are not for users
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
