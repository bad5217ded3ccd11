"""The photo-transform flags shared by every program that embeds photos (``export.embed``,
``export.gallery``): defined once (``cli.flag_groups.define_image_transform``), resolved once
here.

By default a program applies the model's own transform (``assets.extra/transform.json``, the
conversion of the records it was evaluated on: ``data_tools.transform.Transform``) and prints
which one, so that a raw frame reaches the model as the pixels its records hold. The flags
override it with the converter's own meaning (``make_tfrecords.py --crop_box/--image_size``);
``--crop_box=none`` sends the photos as they are; ``--align`` detects and aligns the faces.
"""

import sys

import cli
from data_tools import image_files
from data_tools.transform import DEFAULT_ALIGNED_SIZE, Transform

NO_CROP = "none"


def check_transform_flags(fv):
    """One line (``ValueError``) for transform flags that do not make sense together."""
    if fv.align and fv.crop_box is not None and not no_crop(fv.crop_box):
        raise ValueError("--align makes faces from the 5 landmarks: --crop_box applies to "
                         "photos that are cut out by a fixed box")
    if fv.crop_box is not None and not no_crop(fv.crop_box):
        try:
            image_files.parse_crop_box(fv.crop_box)
        except ValueError as e:
            raise ValueError(f"--crop_box: {e}") from None


def transform_flags_given(fv):
    """Whether the command line sets the transform itself."""
    return fv.crop_box is not None or fv.image_size is not None or bool(fv.align)


def no_crop(crop_box):
    return crop_box is not None and crop_box.strip().lower() == NO_CROP


def resolve_transform(fv, model_transform, out=None, recorded=True):
    """The Transform to apply (None: the photos as they are), and one ``transform: ...`` line on
    ``out`` saying which and where it comes from; a ``note:`` line when the flags ask for
    something the model never saw. ``recorded``: whether the model carries a transform.json
    (an old export may not)."""
    out = sys.stderr if out is None else out
    if fv.align:
        size = fv.image_size or (model_transform.image_size if model_transform is not None
                                 and model_transform.align else DEFAULT_ALIGNED_SIZE)
        transform, source = Transform(None, size, align=True), "--align"
        if model_transform is not None and not model_transform.align:
            print(f"note: the model was trained on records cut out with "
                  f"{model_transform.describe()}: it never saw aligned faces (without --align "
                  "its own transform is applied)", file=out)
    elif fv.crop_box is not None or fv.image_size is not None:
        crop_box = None if no_crop(fv.crop_box) else fv.crop_box
        transform, source = Transform.make(crop_box, fv.image_size), "the flags"
        if model_transform is not None and model_transform.align:
            print(f"note: the model was trained on aligned faces ({model_transform.describe()}); "
                  "--align aligns raw photos the same way", file=out)
    elif model_transform is not None:
        transform = model_transform
        source = ("the model's, from assets.extra/transform.json; --crop_box=none sends the "
                  "photos as they are")
    elif recorded:
        transform, source = None, "the model's: its records were stored as they were"
    else:
        transform, source = None, "the model records no transform.json"
    print(f"transform: {transform.describe() if transform else 'none'} ({source})", file=out)
    return transform


def fallback_line(transform, fallbacks, total, what):
    """The count of --align's whole-frame fallbacks (``export.embedder.align_photos``), or
    None without --align."""
    if transform is None or not transform.align:
        return None
    return (f"align fallbacks: {len(fallbacks)} of {cli.count(total, what)} without a detected "
            "face, embedded as the whole frame")
