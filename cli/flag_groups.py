"""The flags several programs share, each defined once: its name, type, default rule and bounds
live in one function here, and a program that wants the flag calls that function (tf/models'
``utils/flags/core.py`` is the model). Where programs use a flag for their own purpose
(``--image_size`` of the converter, of the network, of the aligned faces), the program passes
that purpose as text; the definition stays here.

A new shared flag takes one place, its group here, plus the call in each program that wants it;
``tests/test_flag_groups.py`` fails when two programs define the same flag name in their own
code. Light on purpose: absl only, no TensorFlow (programs import this before TensorFlow).
"""

from absl import flags

from data_tools.transform import DEFAULT_ALIGNED_SIZE

# What an unset transform flag means, by kind of program.
KEEP_IMAGES = "keep the images as they are"
MODEL_TRANSFORM = "the model's transform (assets.extra/transform.json)"


def define_model_path(flag_values, note=""):
    """``--model``: the SavedModel a program loads."""
    flags.DEFINE_string("model", None, "SavedModel directory, or an exporter's base directory "
                        "(the newest SavedModel in it is used)." + _sentence(note),
                        flag_values=flag_values)


def define_image_size(flag_values, what, default=None, lower_bound=1):
    """``--image_size``: the side of square faces, for ``what`` purpose of the program."""
    flags.DEFINE_integer("image_size", default, f"Side of the square faces in pixels: {what}",
                         lower_bound=lower_bound, flag_values=flag_values)


def define_image_transform(flag_values, unset, align=None):
    """The conversion transform (``data_tools.transform.Transform``): ``--crop_box``,
    ``--image_size`` and, unless ``align`` is None, ``--align`` (``align``: what an aligning
    run adds, e.g. where the faces go). ``unset``: what the program does without them
    (:data:`KEEP_IMAGES`, :data:`MODEL_TRANSFORM`)."""
    none = " 'none': send the photos as they are." if unset == MODEL_TRANSFORM else ""
    flags.DEFINE_string("crop_box", None, "'x0,y0,x1,y1': crop every image to this box before "
                        "--image_size (e.g. the face region of LFW-a's 250x250 frames)."
                        f"{none} Default: {unset}.", flag_values=flag_values)
    define_image_size(flag_values, "centre-crop every image to a square and resize it to this "
                      "side with the converter's Lanczos filter (records re-encode it as PNG). "
                      f"Default: {unset}.")
    if align is not None:
        define_align(flag_values, "off" if unset == KEEP_IMAGES else "the model's transform "
                     "(aligned when its records were)", align)


def define_align(flag_values, unset, note=""):
    """``--align``: the images are raw photos to detect and align (unset: None, the program's
    default, ``unset``)."""
    flags.DEFINE_bool("align", None, "The images are raw photos: detect the largest face of "
                      "each (or read its --landmarks where offered) and align it onto the "
                      "5-point template at --image_size (the detector needs pip install "
                      f"circle-face[align]).{_sentence(note)} Default: {unset}.",
                      flag_values=flag_values)


def define_alignment(flag_values):
    """How faces are found in raw photos: ``--landmarks``, ``--min_face_size``, and
    ``--image_size`` (the aligned side, insightface's 112) unless the program defines it."""
    fv = flag_values
    if "image_size" not in fv:
        define_image_size(fv, "the aligned face; insightface's 112x112 template, placed as its "
                          "estimate_norm places it (a multiple of 128 but not of 112: scaled by "
                          "size/128, x shifted by 8*size/128).", default=DEFAULT_ALIGNED_SIZE,
                          lower_bound=8)
    flags.DEFINE_string("landmarks", None, "Five points per image instead of the detector: "
                        "'relative/path x1 y1 ... x5 y5 [score]' per line (left eye, right eye, "
                        "nose tip, left and right mouth corners, as seen in the image).",
                        flag_values=fv)
    flags.DEFINE_integer("min_face_size", 20, "Smallest face the detector looks for, in pixels "
                         "of the photo (at most 1280 pixels on its longest side).",
                         lower_bound=12, flag_values=fv)


def define_flip(flag_values, default=True, note=""):
    """``--flip``: flip test-time augmentation of the embeddings."""
    flags.DEFINE_bool("flip", default, "Flip test-time augmentation: the embedding of the image "
                      "plus that of its mirror image, renormalised, as in evaluation."
                      + _sentence(note), flag_values=flag_values)


def define_batch_size(flag_values, what="Images per SavedModel call.", default=64):
    """``--batch_size``: how many images one step or call takes."""
    flags.DEFINE_integer("batch_size", default, what, lower_bound=1, flag_values=flag_values)


def define_report(flag_values, files="report.json", flip=True, batch=True):
    """What an evaluating program shares: ``--report_dir`` (where ``files`` go) and, as asked,
    ``--flip`` and ``--batch_size``."""
    flags.DEFINE_string("report_dir", None, f"Directory {files} are written to.",
                        flag_values=flag_values)
    if flip:
        define_flip(flag_values)
    if batch:
        define_batch_size(flag_values)


def define_far_target(flag_values):
    """``--far_target``: the false accept rate of the reported VAL@FAR."""
    flags.DEFINE_float("far_target", 1e-3, "FAR of the VAL@FAR metric.", flag_values=flag_values)


def define_fpir(flag_values, what):
    """``--fpir``: the open-set identification operating point."""
    flags.DEFINE_float("fpir", 0.01, f"False positive identification rate (FPIR) of {what}.",
                       flag_values=flag_values)


def define_allow_transform_mismatch(flag_values, what):
    """``--allow_transform_mismatch``: evaluate on records converted otherwise than the model's."""
    flags.DEFINE_bool("allow_transform_mismatch", False, f"{what} although they were converted "
                      "otherwise than the model's training records (another --crop_box, "
                      "--image_size or --align): refused by default, as the faces differ from "
                      "those the model learnt.", flag_values=flag_values)


def define_seed(flag_values, what):
    """``--seed``: the seed of ``what``; the same seed gives the same result."""
    flags.DEFINE_integer("seed", 0, f"Seed of {what}; the same seed gives the same result.",
                         flag_values=flag_values)


def define_workers(flag_values, progress=False):
    """``--num_workers`` (processes) and, with ``progress``, ``--progress``."""
    flags.DEFINE_integer("num_workers", None, "Worker processes (default: the CPU count).",
                         lower_bound=1, flag_values=flag_values)
    if progress:
        define_progress(flag_values)


def define_progress(flag_values):
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=flag_values)


def define_overwrite(flag_values, what):
    """``--overwrite``: replace output written with other options."""
    flags.DEFINE_bool("overwrite", False, f"Replace {what}.", flag_values=flag_values)


def define_input_dir(flag_values, what):
    flags.DEFINE_string("input_dir", None, f"Input folder: {what}", flag_values=flag_values)


def define_output_dir(flag_values, what):
    flags.DEFINE_string("output_dir", None, f"Output folder: {what}", flag_values=flag_values)


def define_output(flag_values, what):
    flags.DEFINE_string("output", None, f"Output file: {what}", flag_values=flag_values)


def define_pairs(flag_values, what, image_dir=None, allow_missing=False):
    """``--pairs`` (``what`` they are), ``--image_dir`` when ``image_dir`` says what it holds,
    ``--allow_missing_pairs`` with ``allow_missing``."""
    flags.DEFINE_string("pairs", None, f"Verification pairs: {what}", flag_values=flag_values)
    if image_dir is not None:
        define_image_dir(flag_values, image_dir)
    if allow_missing:
        flags.DEFINE_bool("allow_missing_pairs", False, "Leave out the pairs whose images are "
                          "missing or unreadable (named on stderr) instead of failing.",
                          flag_values=flag_values)


def define_image_dir(flag_values, what):
    flags.DEFINE_string("image_dir", None, f"Image folder: {what}", flag_values=flag_values)


def define_folder(flag_values, what):
    flags.DEFINE_string("folder", None, "Identity folders (<folder>/<identity>/<image>): "
                        f"{what}", flag_values=flag_values)


def define_lfw_split(flag_values, holdout_folds):
    """The official LFW and its View 2 folds: ``--lfw_dir``, ``--pairs``, ``--holdout_folds``
    (``holdout_folds``: what becomes of the held-out folds)."""
    flags.DEFINE_string("lfw_dir", None, "Extracted LFW folder (one sub-folder per identity).",
                        flag_values=flag_values)
    define_pairs(flag_values, "the official View 2 pairs.txt.")
    flags.DEFINE_list("holdout_folds", ["10"], f"1-based folds whose identities {holdout_folds}",
                      flag_values=flag_values)


def define_pair_folds(flag_values, pairs_per_fold=None, unset="the most every fold can hold",
                      lower_bound=1):
    """``--num_folds`` and ``--pairs_per_fold`` of a generated pairs.txt (LFW View 2: 10 and
    300); ``lower_bound=None`` leaves the check to the program (its own message)."""
    flags.DEFINE_integer("num_folds", 10, "Identity-disjoint folds of pairs.txt (LFW View 2 has "
                         "10).", lower_bound=lower_bound, flag_values=flag_values)
    flags.DEFINE_integer("pairs_per_fold", pairs_per_fold, "Matched pairs per fold, and as many "
                         "mismatched: the pairs.txt header's n (LFW: 300)."
                         + ("" if pairs_per_fold is not None else f" Default: {unset}."),
                         lower_bound=lower_bound, flag_values=flag_values)


def _sentence(note):
    return f" {note}" if note else ""
