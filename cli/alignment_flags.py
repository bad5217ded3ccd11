"""The alignment flags' meaning, shared by the programs that align raw photos
(``python -m data_tools.alignment.align``, ``make_tfrecords.py --align``): the flags are defined
once (``cli.flag_groups.define_alignment``), read here into the library's options, and their
failures told here in one line. Light: the detector (TensorFlow) loads only when used.
"""

import sys

from data_tools.alignment import face_alignment, raw_faces

_MAX_LISTED = 20


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
