"""Evaluate a checkpoint and write its reports, by the run's evaluation protocol
(``evaluation/``: in the graph, or on Ascend with embeddings on the device and metrics on the
host): eval/report.json and roc.png, one per named set, and the line printed for it."""

import time

from training.builders import eval_protocol


def round_summary(p, eval_result):
    """The one line of an evaluation round: the step and the headline metrics."""
    return eval_protocol(p).round_summary(eval_result)


def write_eval_report(p, eval_result, started=None):
    """report.json + roc.png of one evaluation; ``started`` (time.time() at the start of this
    invocation) records its wall time, training and evaluations included, as extra.wall_seconds."""
    extra = {"mode": p["mode"]}
    if started is not None:
        extra["wall_seconds"] = round(time.time() - started, 1)
    return eval_protocol(p).write_report(eval_result, p["model_dir"], extra)


def evaluate_checkpoint(estimator, p, checkpoint_path=None):
    """One evaluation of a checkpoint (default: the latest), as ``estimator.evaluate``'s dict.

    On Ascend the graph handed to the device holds no ``py_func`` (CANN's default mode cannot
    run one): the device computes the pair embeddings (PREDICT) and the metrics are computed on
    the host, in numpy, by the same protocol (``evaluation.protocol.EvalProtocol.evaluate``).
    """
    return eval_protocol(p).evaluate(estimator, checkpoint_path)
