"""Embed and verify faces with an exported SavedModel (command line; the library is
``export.embedder``).

    python -m export.embed --model DIR a.jpg                  # print the embedding
    python -m export.embed --model DIR a.jpg b.jpg            # same person or not?
    python -m export.embed --model DIR --folder faces/ --output faces_emb
    python -m export.embed --model DIR --pairs pairs.txt --image_dir lfw/ --report_dir out/
    python -m export.embed --model DIR --crop_box 70,60,180,190 --image_size 112 photo.jpg

``--model`` is a SavedModel directory or an exporter's base directory holding timestamped
SavedModels (``model_dir/export/best``: the newest is used). It is called through its
``serving_default`` signature: ``image_bytes`` (JPEG/PNG bytes, any size) in, L2-normalised
``embedding`` out.

The model expects faces cropped (or aligned) as its training records were. ``--crop_box`` and
``--image_size`` crop and resize every image first, with exactly the converter's meaning and
code (make_tfrecords.py: crop, centre square, Lanczos). ``--pairs`` applies by default the
transform the SavedModel was exported with (``assets.extra/transform.json``, the evaluation
records' conversion), so that raw frames give the accuracy of the model's report;
``--crop_box=none`` sends the images as they are.

``--flip`` (on by default, as in the evaluation) adds the embedding of each mirror image, then
renormalises. The decision threshold of the two-image mode comes from ``--threshold`` or from
the verification report the training run wrote (``report.json``): in
``<savedmodel>/assets.extra/``, then in ``eval/`` under each of the four parent directories of the
SavedModel.
"""

import os
import sys

import tensorflow.compat.v1 as tf
from absl import flags

from data_tools import image_files
from export import report
from export.embedder import (
    EmbedError,
    FoldsError,
    ImageDecodeError,
    Transform,
    compare,
    decision_threshold,
    embed_folder,
    evaluate_pairs,
    load_saved_model,
    save_embeddings,
)


def _define_flags():
    # A FlagValues of our own, made per call: importing this module registers nothing in the
    # global absl FLAGS (estimator_main's flags live there), and a second run in the same process
    # (tests) starts from the defaults.
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "SavedModel directory, or an exporter's base directory "
                        "holding timestamped SavedModels (the newest is used).", flag_values=fv)
    flags.DEFINE_bool("flip", True, "Flip test-time augmentation: embedding of the image plus that "
                      "of its mirror image, renormalised, as in evaluation. --noflip returns the "
                      "SavedModel's own output.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 64, "Images per SavedModel call.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_float("threshold", None, "Decision threshold on the squared L2 distance of two "
                       "images (same person when below). Default: the 'threshold' of the model's "
                       "report.json.", flag_values=fv)
    flags.DEFINE_string("output", None, "Save embeddings to OUTPUT.npy and the image names to "
                        "OUTPUT.names.txt (required with --folder).", flag_values=fv)
    flags.DEFINE_string("folder", None, "Embed every image of this identity-folder tree "
                        "(<folder>/<identity>/<image>).", flag_values=fv)
    flags.DEFINE_string("pairs", None, "Evaluate the model on this LFW-format pairs file.",
                        flag_values=fv)
    flags.DEFINE_string("image_dir", None, "Identity folders of the --pairs images.",
                        flag_values=fv)
    flags.DEFINE_integer("n_folds", None, "Folds of the --pairs evaluation; default: the pairs "
                         "file's.", lower_bound=2, flag_values=fv)
    flags.DEFINE_float("far_target", 1e-3, "FAR of the reported VAL@FAR.", flag_values=fv)
    flags.DEFINE_string("report_dir", None, "Write report.json and roc.png of the --pairs "
                        "evaluation here.", flag_values=fv)
    flags.DEFINE_string("crop_box", None, "'x0,y0,x1,y1': crop every image to this box (before "
                        "--image_size), as make_tfrecords.py --crop_box does. 'none': no crop, "
                        "and no default from the SavedModel. Default: none, except with --pairs "
                        "(the SavedModel's transform, assets.extra/transform.json).",
                        flag_values=fv)
    flags.DEFINE_integer("image_size", None, "Centre-crop every image to a square and resize it "
                         "to this size with the converter's Lanczos filter, as make_tfrecords.py "
                         "--image_size does.", lower_bound=1, flag_values=fv)
    return fv


def _usage(fv):
    title_and_examples = "\n\n".join(__doc__.split("\n\n")[:2]).strip()
    return title_and_examples + "\n\nFlags:\n" + fv.get_help()


def main(argv):
    """Run the CLI on ``argv`` (``argv[0]`` is the program name); returns the exit status."""
    fv = _define_flags()
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print(_usage(fv))
        return 0
    try:
        images = fv(list(argv))[1:]
    except flags.Error as e:
        print("error: %s\n\n%s" % (e, _usage(fv)), file=sys.stderr)
        return 2
    try:
        _check_usage(fv, images)
        with load_saved_model(fv.model) as embedder:
            print("model: %s" % embedder.saved_model_dir, file=sys.stderr)
            transform = _transform(fv, embedder)
            if fv.pairs:
                try:
                    _evaluate_pairs(fv, embedder, transform)
                except ImageDecodeError as e:
                    if transform is None or fv.crop_box is not None or fv.image_size is not None:
                        raise
                    raise EmbedError("%s\n(the SavedModel's transform %s is meant for raw "
                                     "frames like those its records were made from; "
                                     "--crop_box=none sends the images as they are)"
                                     % (e, transform.describe())) from None
            elif fv.folder:
                _embed_folder(fv, embedder, transform)
            elif len(images) == 2:
                _verify_two(fv, embedder, images, transform)
            else:
                _embed_images(fv, embedder, images, transform)
    except UsageError as e:
        print("error: %s\n(--help lists the flags)" % e, file=sys.stderr)
        return 2
    except EmbedError as e:
        print("error: %s" % e, file=sys.stderr)
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
    if fv.pairs and not fv.image_dir:
        raise UsageError("--pairs needs --image_dir, the folder of the identity folders")
    if fv.folder and not fv.output:
        raise UsageError("--folder needs --output (embeddings go to OUTPUT.npy, names to "
                         "OUTPUT.names.txt)")
    if not fv.pairs and (fv.report_dir or fv.n_folds or fv.image_dir):
        raise UsageError("--report_dir, --n_folds and --image_dir apply to --pairs only")
    if fv.pairs and fv.output:
        raise UsageError("--output applies to IMAGE arguments and --folder; --pairs writes its "
                         "report to --report_dir")
    if not 0.0 < fv.far_target <= 1.0:
        raise UsageError("--far_target must be in (0, 1], got %g" % fv.far_target)
    if fv.threshold is not None and len(images) != 2:
        raise UsageError("--threshold applies to the comparison of exactly two images")
    if not _no_crop(fv.crop_box):
        try:
            image_files.parse_crop_box(fv.crop_box)
        except ValueError as e:
            raise UsageError("--crop_box: %s" % e) from None


def _no_crop(crop_box):
    return crop_box is not None and crop_box.strip().lower() == "none"


def _transform(fv, embedder):
    """The Transform of the flags; for --pairs without them, the SavedModel's (or None)."""
    if fv.crop_box is not None or fv.image_size is not None:
        crop_box = None if _no_crop(fv.crop_box) else fv.crop_box
        return Transform.make(crop_box, fv.image_size)
    if not fv.pairs:
        return None
    transform = embedder.transform()
    if transform is not None:
        print("transform: %s (the SavedModel's evaluation records' conversion, from "
              "assets.extra/transform.json; --crop_box=none sends the images as they are)"
              % transform.describe(), file=sys.stderr)
    return transform


def _embed_images(fv, embedder, images, transform):
    embeddings = embedder.embed_files(images, batch_size=fv.batch_size, flip=fv.flip,
                                      transform=transform)
    if fv.output:
        paths = save_embeddings(embeddings, images, fv.output)
        print("%d embeddings of size %d -> %s, %s" % (len(images), embeddings.shape[1],
                                                      paths[0], paths[1]))
        return
    for path, embedding in zip(images, embeddings):
        print("%s %s" % (path, " ".join("%.8g" % v for v in embedding)))


def _verify_two(fv, embedder, images, transform):
    embeddings = embedder.embed_files(images, batch_size=fv.batch_size, flip=fv.flip,
                                      transform=transform)
    if fv.output:
        save_embeddings(embeddings, images, fv.output)
    similarity, distance = compare(embeddings[0], embeddings[1])
    print("image 1: %s" % images[0])
    print("image 2: %s" % images[1])
    print("cosine similarity: %.6f" % similarity)
    print("squared L2 distance: %.6f" % distance)

    threshold, source, notes = decision_threshold(embedder.saved_model_dir, fv.threshold, fv.flip)
    for note in notes:
        print("note: %s" % note)
    if threshold is None:
        print("decision: none (%s)" % source)
        return
    same = distance < threshold
    print("threshold: %.6f (%s)" % (threshold, source))
    print("decision: %s (squared L2 distance %.6f %s threshold %.6f)" % (
        "same person" if same else "different people", distance, "<" if same else ">=",
        threshold))


def _embed_folder(fv, embedder, transform):
    result = embed_folder(
        embedder, fv.folder, batch_size=fv.batch_size, flip=fv.flip, progress=True,
        on_skipped=lambda relpath, reason: print("skipped %s: %s" % (relpath, reason),
                                                 file=sys.stderr), transform=transform)
    npy_path, names_path = save_embeddings(result.embeddings, result.names, fv.output)
    print("%d images of %d identities, embeddings of size %d -> %s, %s"
          % (len(result.names), result.num_identities, result.embeddings.shape[1], npy_path,
             names_path))


def _evaluate_pairs(fv, embedder, transform):
    try:
        result = evaluate_pairs(embedder, fv.pairs, fv.image_dir, n_folds=fv.n_folds,
                                far_target=fv.far_target, batch_size=fv.batch_size,
                                flip=fv.flip, progress=True, transform=transform)
    except FoldsError as e:
        raise UsageError(str(e)) from None
    metrics = result.metrics
    print("pairs: %d (%d same, %d different) in %d folds, %d images, flip TTA %s"
          % (metrics["num_pairs"], metrics["num_same"], metrics["num_diff"], result.n_folds,
             result.num_images, "on" if fv.flip else "off"))
    print("accuracy: %.4f +- %.4f" % (metrics["accuracy"], metrics["accuracy_std"]))
    print("threshold: %.4f (squared L2, mean over folds)" % metrics["threshold"])
    print("VAL@FAR=%g: %.4f +- %.4f (FAR %.5f)" % (fv.far_target, metrics["val"],
                                                   metrics["val_std"], metrics["far"]))
    print("AUC: %.4f" % metrics["auc"])
    print("EER: %.4f" % metrics["eer"])
    if fv.report_dir:
        extra = {"model": os.path.abspath(embedder.saved_model_dir),
                 "pairs": os.path.abspath(fv.pairs),
                 "image_dir": os.path.abspath(fv.image_dir),
                 "flip": bool(fv.flip), "num_images": result.num_images,
                 "crop_box": None if transform is None or transform.crop_box is None
                 else list(transform.crop_box),
                 "image_size": None if transform is None else transform.image_size}
        json_path, png_path = report.write_report(metrics, fv.report_dir, extra=extra)
        print("report: %s, %s" % (json_path, png_path))


def run():
    """Console entry point (``circle-embed``, ``python -m export.embed``)."""
    tf.get_logger().setLevel("ERROR")  # the TF1 loader's deprecation notices are not for users
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
