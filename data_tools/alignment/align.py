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

import cli  # noqa: E402

cli.quiet_tensorflow()  # before the detector imports TensorFlow

from absl import flags  # noqa: E402

from cli import alignment_flags, flag_groups  # noqa: E402
from data_tools.alignment import raw_faces  # noqa: E402


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    fv = flag_values
    if "input_dir" in fv:
        return
    flag_groups.define_input_dir(fv, "raw photos (any depth; identity folders are kept).")
    flag_groups.define_output_dir(fv, "the aligned faces (the same tree).")
    flag_groups.define_alignment(fv)
    flags.DEFINE_string("report", None, "Alignment report (JSON). Default: "
                        f"<output_dir>/{raw_faces.REPORT_NAME}.", flag_values=fv)
    flag_groups.define_overwrite(fv, "the aligned faces when the report was written with other "
                                 "options (redo every image)")
    flags.mark_flags_as_required(["input_dir", "output_dir"], flag_values=fv)


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: 0 when the run finished (photos without a face are
    reported, not errors), 1 with one line for bad input."""
    cli.check_usage(argv)
    fv = flag_values
    try:
        summary = raw_faces.align_folder(fv.input_dir, fv.output_dir,
                                         image_size=fv.image_size, report_path=fv.report,
                                         overwrite=fv.overwrite, progress=True,
                                         **alignment_flags.align_options(fv))
    except alignment_flags.user_errors() as e:
        print(f"align: error: {alignment_flags.describe_error(e)}", file=sys.stderr)
        return 1
    alignment_flags.print_skips(summary)
    print(raw_faces.format_summary(summary))
    return 0


def run():
    """Console-script entry point (``circle-align``, ``python -m data_tools.alignment.align``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
