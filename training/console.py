"""What a run prints: the estimator's INFO log off unless ``--verbosity`` asks for it, and the
lines of it no user can act on dropped even then. Each evaluation's one line, the final report
and the exported paths are printed by the run itself (``training/evaluation.py``,
``export.exporters.RoundSummaryExporter``)."""

import logging as std_logging
import re

import tensorflow.compat.v1 as tf
from absl import logging


class EstimatorNoise(std_logging.Filter):
    """The estimator's lines a user of the CLI cannot act on, even with --verbosity=0: the
    ROC curves (``fpr``/``tpr``, hundreds of numbers) and per-fold vectors in its "Saving dict"
    line, and "Summary for np.ndarray is not visible" once per vector metric. The numbers are in
    eval/report.json and the one-line summary of each round."""

    _VECTOR = re.compile(r", [\w/.@-]+ = \[[^\]]*\]")

    def filter(self, record):
        message = record.getMessage()
        if message.startswith("Summary for np.ndarray is not visible"):
            return False
        if message.startswith("Saving dict for global step"):
            record.msg, record.args = self._VECTOR.sub("", message), ()
        return True


def quiet_logs(verbosity_given):
    """TensorFlow's and absl's INFO chatter (the RunConfig dict, "Calling model_fn", ~80 lines
    per run) is off unless --verbosity was given (``verbosity_given``, on the command line or in
    a flagfile), whatever the flagfile: warnings, the progress bar and each evaluation's
    one-line summary stay."""
    if not verbosity_given:
        logging.set_verbosity(logging.WARNING)
    # TensorFlow's logger has its own handler; without this every line prints twice under absl.
    tf.get_logger().propagate = False
    # --verbosity (absl) governs TensorFlow's logger too: -1 leaves warnings and the progress bar.
    tf.get_logger().setLevel(logging.get_absl_logger().getEffectiveLevel())
    if not any(isinstance(f, EstimatorNoise) for f in tf.get_logger().filters):
        tf.get_logger().addFilter(EstimatorNoise())


def silence_deprecation_warnings():
    """The compat.v1 estimator stack warns about its own deprecation on every call; users of the
    command line cannot act on those lines, and they bury the ones they can."""
    try:
        from tensorflow.python.util import deprecation  # noqa: PLC0415
    except ImportError:
        return
    deprecation._PRINT_DEPRECATION_WARNINGS = False
