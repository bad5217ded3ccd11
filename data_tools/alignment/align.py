r"""Align raw photos onto the 5-point 112x112 template (command line; the library is
``data_tools.alignment.raw_faces``, the transform ``data_tools.alignment.face_alignment``).

    python -m data_tools.alignment.align --input_dir=raw/ --output_dir=aligned/
    python -m data_tools.alignment.align --input_dir=raw/ --output_dir=aligned/ --landmarks=5pts.txt

The output tree mirrors the input (same folders and file names). Without ``--landmarks`` the
faces are found by the detector of ``data_tools.alignment.face_detector`` (``pip install
circle-face[align]``): of several faces the largest is kept, and a photo without a face gets no
output. ``<output_dir>/align_report.json`` lists every image with its status, face count, score
and landmarks; re-running the same command resumes where the last run stopped.
"""

import os
import sys

if __package__ in (None, ""):
    # Run as a script, sys.path[0] is data_tools/alignment/ and the package is not importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))

from data_tools import cli  # noqa: E402

cli.quiet_tensorflow()  # before the detector imports TensorFlow

from absl import flags  # noqa: E402

from data_tools.alignment import face_alignment, raw_faces  # noqa: E402

_MAX_LISTED = 20


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    fv = flag_values
    if "input_dir" in fv:
        return
    flags.DEFINE_string("input_dir", None, "Folder of raw photos (any depth; identity folders "
                        "are kept).", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Folder for the aligned faces (the same tree).",
                        flag_values=fv)
    define_align_flags(fv)
    flags.DEFINE_string("report", None, "Alignment report (JSON). Default: "
                        f"<output_dir>/{raw_faces.REPORT_NAME}.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Redo every image when the report was written "
                         "with other options.", flag_values=fv)
    flags.mark_flags_as_required(["input_dir", "output_dir"], flag_values=fv)


def define_align_flags(flag_values):
    """The flags every command with alignment shares (``--landmarks``, ``--min_face_size``;
    ``--image_size`` belongs to each command)."""
    fv = flag_values
    if "image_size" not in fv:
        flags.DEFINE_integer("image_size", raw_faces.DEFAULT_IMAGE_SIZE, "Side of the aligned "
                             "face; insightface's 112x112 template, placed as its estimate_norm "
                             "places it (a multiple of 128 but not of 112: scaled by size/128, "
                             "x shifted by 8*size/128).",
                             lower_bound=8, flag_values=fv)
    flags.DEFINE_string("landmarks", None, "Five points per image instead of the detector: "
                        "'relative/path x1 y1 ... x5 y5 [score]' per line (left eye, right eye, "
                        "nose tip, left and right mouth corners, as seen in the image).",
                        flag_values=fv)
    flags.DEFINE_integer("min_face_size", 20, "Smallest face the detector looks for, in pixels "
                         "of the photo (at most 1280 pixels on its longest side).",
                         lower_bound=12, flag_values=fv)


def align_options(fv):
    """``align_folder`` keyword arguments of the shared flags."""
    kwargs = {"landmarks_path": fv.landmarks}
    if not fv.landmarks:
        kwargs["make_detector"] = lambda: _load_detector(fv.min_face_size)
        kwargs["detector_options"] = {"min_face_size": fv.min_face_size}
    return kwargs


def _load_detector(min_face_size):
    from data_tools.alignment import face_detector  # noqa: PLC0415 - optional package, loads TensorFlow

    return face_detector.load_detector(min_face_size=min_face_size)


def describe_error(error):
    """A user error's line; without the detector, this program's alternative too (the
    library's message names no flag: export.embed, which also detects, has no --landmarks)."""
    from data_tools.alignment import face_detector  # noqa: PLC0415

    if isinstance(error, face_detector.DetectorUnavailableError):
        return f"{error}; or give the five points of each face with --landmarks"
    return str(error)


def user_errors():
    """The exceptions that mean bad input (one line, exit 1), the detector's included."""
    from data_tools.alignment import face_detector  # noqa: PLC0415 - the module itself is light

    return (raw_faces.AlignError, face_alignment.LandmarkFileError,
            face_detector.DetectorUnavailableError)


def print_skips(summary, stream=None):
    """One line per image that gave no face (the first few; the report lists all)."""
    stream = stream or sys.stderr
    missing = [e for e in summary["entries"] if e["status"] != raw_faces.ALIGNED]
    for entry in missing[:_MAX_LISTED]:
        print(f"{entry['status']} {entry['path']}: {entry.get('reason', '')}", file=stream)
    if len(missing) > _MAX_LISTED:
        print(f"... and {len(missing) - _MAX_LISTED} more, all listed in "
              f"{summary['report']}", file=stream)
    if summary["listed_missing"]:
        print(f"{len(summary['listed_missing'])} image(s) of the landmark file not found under the "
              f"input, e.g. {summary['listed_missing'][0]}", file=stream)


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: 0 when the run finished (photos without a face are
    reported, not errors), 1 with one line for bad input."""
    cli.check_usage(argv)
    fv = flag_values
    try:
        summary = raw_faces.align_folder(fv.input_dir, fv.output_dir,
                                         image_size=fv.image_size, report_path=fv.report,
                                         overwrite=fv.overwrite, progress=True,
                                         **align_options(fv))
    except user_errors() as e:
        print(f"align: error: {describe_error(e)}", file=sys.stderr)
        return 1
    print_skips(summary)
    print(raw_faces.format_summary(summary))
    return 0


def run():
    """Console-script entry point (``circle-align``, ``python -m data_tools.alignment.align``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
