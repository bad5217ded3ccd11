"""Long work shows progress and nothing reads like a failure (issue 32): the TFLite converter's
op summary and the interpreter's delegate line are explained or dropped, the tools' absl INFO
lines (tf2onnx, the TFLite converter) and TensorFlow's deprecation warnings are off unless
--verbosity asks, and export.gallery prints none of them."""

import logging
import os
import subprocess
import sys

import pytest
from absl import logging as absl_logging

import cli
from export import native_stderr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What TensorFlow 2.15's converter printed for the tiny model (between two lines of ours).
CONVERTER_OUTPUT = """before
Summary on the non-converted ops:
---------------------------------
 * Accepted dialects: tfl, builtin, func
 * Non-Converted Ops: 16, Total Ops 46, % non-converted = 34.78 %
 * 16 ARITH ops

- arith.constant:   16 occurrences  (f32: 14, i32: 2)



  (f32: 3)
  (f32: 7)

  (f32: 1)
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
error: something real
"""


def test_the_converter_summary_becomes_one_explained_line():
    kept, note = native_stderr.explain_converter_log(CONVERTER_OUTPUT)
    assert kept == "before\nerror: something real\n"
    assert note == ("the TFLite converter's \"16 of 46 ops non-converted\" are constants (the "
                    "weights, which TFLite stores as buffers, not as ops); it is not a failure")
    other = CONVERTER_OUTPUT.replace("arith.constant", "tf.Erf")
    assert "left to TFLite's own kernels: tf.Erf" in native_stderr.explain_converter_log(other)[1]
    assert native_stderr.explain_converter_log("plain\n") == ("plain\n", None)


def test_native_stderr_is_filtered_at_the_file_descriptor(capfd):
    notes = []
    with native_stderr.filtered(notes):
        os.write(2, CONVERTER_OUTPUT.encode())
    err = capfd.readouterr().err
    assert err == "before\nerror: something real\n"
    assert len(notes) == 1 and "16 of 46" in notes[0]


@pytest.fixture
def restore_logging():
    verbosity = absl_logging.get_verbosity()
    tf_logger = logging.getLogger("tensorflow")
    filters = list(tf_logger.filters)
    yield tf_logger
    absl_logging.set_verbosity(verbosity)
    tf_logger.filters[:] = filters


def test_tools_leave_info_and_deprecations_off_unless_asked(restore_logging):
    tf_logger = restore_logging
    absl_logging.set_verbosity(absl_logging.INFO)
    cli.quiet_python_logs(verbosity_given=True)
    assert absl_logging.get_verbosity() == absl_logging.INFO
    cli.quiet_python_logs(verbosity_given=False)
    assert absl_logging.get_verbosity() == absl_logging.WARNING
    deprecated = logging.LogRecord("tensorflow", logging.WARNING, "deprecation.py", 50,
                                   "From x.py:1: load (from tf) is deprecated and will be "
                                   "removed in a future version.", (), None)
    assert not tf_logger.filter(deprecated)
    other = logging.LogRecord("tensorflow", logging.WARNING, "x.py", 1, "real warning", (), None)
    assert tf_logger.filter(other)


def test_gallery_prints_no_tensorflow_warnings(tmp_path):
    from PIL import Image  # noqa: PLC0415

    from tests import tiny_model  # noqa: PLC0415

    model = tiny_model.build_saved_model(str(tmp_path / "model"), tiny_model.projection(5))
    for name in ("ann", "bob"):
        os.makedirs(str(tmp_path / "faces" / name))
        Image.new("RGB", (8, 8), (40, 90, 200)).save(str(tmp_path / "faces" / name / "a.png"))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "export.gallery", "enrol", f"--model={model}",
                           f"--folder={tmp_path / 'faces'}", f"--index={tmp_path / 'g.npz'}"],
                          cwd=ROOT, env=env, capture_output=True, encoding="utf-8",
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["transform: none (the model records no transform.json)"]
    assert proc.stdout.startswith("enrolled 2 new image(s)")
