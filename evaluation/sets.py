"""Several named verification sets evaluated at every checkpoint (``--eval_records``).

``--eval_records=lfw=records/lfw,cfp_fp=records/cfp_fp`` names each set; a plain
``--eval_records=DIR`` is one set named ``lfw``, as before. Every set has its metrics under its
name (``lfw/accuracy``, ``cfp_fp/accuracy``, ...; ``evaluation.verification_metric``), its own
``report.json`` and ``roc.png`` (in ``<name>/`` of the eval directory and of each export's
``assets.extra``), and one row of the table printed after each evaluation round. With several
sets ``mean/accuracy`` (and ``mean/val_far1e-3``, ``mean/auc``, ``mean/eer``) averages them.

The first set is the primary one: its report is also written at the top level
(``eval/report.json``, ``assets.extra/report.json``), where ``export.embed`` reads its decision
threshold and ``evaluation.compare_reports`` its numbers.
"""

import os
import re

import tensorflow.compat.v1 as tf
from absl import logging

from evaluation import reports, verification_metric

DEFAULT_NAME = "lfw"
# Metrics a best exporter may rank by: higher is better.
RANKABLE_METRICS = ("accuracy", "val_far1e-3", "auc")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def parse_eval_records(text):
    """``(sets, named)``: ``sets`` is ``[(name, records)]`` in the given order, ``named`` says
    whether the value used ``name=records`` entries (a plain directory is one set named
    ``lfw``). Raises ``ValueError`` with a one-line message for a malformed value."""
    text = (text or "").strip()
    if not text:
        raise ValueError("--eval_records is empty")
    if "=" not in text:
        return [(DEFAULT_NAME, text)], False
    sets = []
    for raw in text.split(","):
        entry = raw.strip()
        name, sep, records = entry.partition("=")
        name, records = name.strip(), records.strip()
        if not sep or not records:
            raise ValueError(f"--eval_records: {entry!r} is not NAME=DIR (several sets: "
                             "lfw=records/lfw,cfp_fp=records/cfp_fp)")
        if not _NAME.match(name) or name.endswith("_single"):
            raise ValueError(f"--eval_records: set name {name!r} must start with a letter, hold "
                             "only letters, digits, '_', '.', '-' and not end in '_single'")
        if name == verification_metric.MEAN_PREFIX:
            raise ValueError(f"--eval_records: {verification_metric.MEAN_PREFIX!r} is reserved "
                             "for the mean over the sets")
        if name in [n for n, _ in sets]:
            raise ValueError(f"--eval_records names the set {name!r} twice")
        sets.append((name, records))
    return sets, True


def best_metric_choices(names):
    """The values ``--best_metric`` accepts for these set names."""
    choices = [f"{name}/{metric}" for name in names for metric in RANKABLE_METRICS]
    if len(names) > 1:
        choices += [f"{verification_metric.MEAN_PREFIX}/{metric}" for metric in RANKABLE_METRICS]
    return choices


def resolve_best_metric(value, names):
    """``value`` checked against :func:`best_metric_choices` (default: the first set's
    accuracy); ``ValueError`` naming the valid choices."""
    if not value:
        return f"{names[0]}/accuracy"
    choices = best_metric_choices(names)
    if value not in choices:
        raise ValueError(f"--best_metric={value} is not one of {', '.join(choices)}")
    return value


def sets_table(eval_result, sets, far_target=1e-3):
    """One compact text table of an evaluation round: set × pairs, accuracy ± std, VAL@FAR,
    AUC, EER (and the mean over the sets when there are several). ``sets``: ``[(name,
    num_pairs)]``."""
    rows = [("set", "pairs", "accuracy ± std", f"VAL@FAR={far_target:g}", "AUC", "EER")]
    for name, num_pairs in sets:
        rows.append((name, str(num_pairs),
                     f"{_get(eval_result, name, 'accuracy'):.4f} ± "
                     f"{_get(eval_result, name, 'accuracy_std'):.4f}",
                     f"{_get(eval_result, name, 'val_far1e-3'):.4f}",
                     f"{_get(eval_result, name, 'auc'):.4f}",
                     f"{_get(eval_result, name, 'eer'):.4f}"))
    mean = verification_metric.MEAN_PREFIX
    if len(sets) > 1 and f"{mean}/accuracy" in eval_result:
        rows.append((mean, str(sum(n for _, n in sets)),
                     f"{_get(eval_result, mean, 'accuracy'):.4f}",
                     f"{_get(eval_result, mean, 'val_far1e-3'):.4f}",
                     f"{_get(eval_result, mean, 'auc'):.4f}",
                     f"{_get(eval_result, mean, 'eer'):.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    step = eval_result.get("global_step")
    title = "verification" + ("" if step is None else f" at step {int(step)}")
    return "\n".join([title] + lines)


def _get(eval_result, prefix, metric):
    return float(eval_result[f"{prefix}/{metric}"])


def write_sets_reports(eval_result, names, directory, extra=None):
    """``report.json`` and ``roc.png`` of each set in ``directory/<name>/``, and the first
    (primary) set's also in ``directory``. Returns ``{relative path: path}`` of every file
    written (the ``assets_extra`` layout of an export)."""
    written = {}
    for index, name in enumerate(names):
        if f"{name}/accuracy" not in eval_result:
            continue
        metrics = verification_metric.metrics_from_eval_result(eval_result, name)
        set_extra = dict(extra or {}, eval_set=name)
        targets = [name] + ([""] if index == 0 else [])
        for target in targets:
            json_path, png_path = reports.write_report(
                metrics, os.path.join(directory, target) if target else directory,
                extra=set_extra)
            for path in (json_path, png_path):
                written[os.path.join(target, os.path.basename(path)) if target
                        else os.path.basename(path)] = path
    return written


def sets_report_fn(names):
    """``report_fn`` of the best exporter with several sets (:func:`write_sets_reports`)."""

    def write(eval_result, directory):
        return write_sets_reports(eval_result, names, directory)

    return write


class SetsTableLogger(tf.estimator.Exporter):
    """Logs the table of each evaluation round over named verification sets; exports nothing.

    An exporter because the EvalSpec's exporters are the one thing ``train_and_evaluate`` calls
    with every evaluation's result. ``sets``: ``[(name, num_pairs)]``.
    """

    def __init__(self, sets, far_target=1e-3, name="sets_table"):
        self._sets = [(set_name, int(n)) for set_name, n in sets]
        self._far_target = far_target
        self._name = name

    @property
    def name(self):
        return self._name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        del estimator, export_path, checkpoint_path, is_the_final_export
        if eval_result:
            logging.info("%s", sets_table(eval_result, self._sets, self._far_target))
