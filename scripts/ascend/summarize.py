"""The ModelZoo summary of one launcher run: ``key = value`` lines the Ascend CI parses.

Called by ``train_full_1p.sh`` and ``train_performance_1p.sh`` after ``estimator_main.py``; it
reads only what the run leaves behind (no TensorFlow import, Python 3.7 stdlib):

* ``ActualFPS``: the ``examples/sec: R (step N)`` lines of ``model/hooks.py``'s
  ``ExamplesPerSecondHook`` in the training log (one every ``--log_every_n_steps``, each over
  that interval's wall time). The first is left out when there are three or more (it carries
  the warm-up), and the median of the rest is taken, so that an interval that waited for an
  evaluation does not drag the figure down;
* ``TrainingTime``: milliseconds per step, ``BatchSize * 1000 / ActualFPS`` (ModelZoo's
  definition);
* ``TrainAccuracy``: ``accuracy`` of ``<model_dir>/eval/report.json`` (LFW-style verification
  of the final checkpoint) with ``--with_accuracy``, else ``None`` (ModelZoo's value for
  performance runs);
* ``ActualLoss``: the estimator's ``Loss for final step`` (the total loss the optimizer saw at
  the last step), else the last logged ``loss = X, step = N``;
* ``E2ETrainingTime``: wall seconds of the whole ``estimator_main.py`` run, measured by the
  launcher.

The logged total losses also go one per line to ``--loss_file`` (ModelZoo's
``train_<CaseName>_loss.txt``). A value that cannot be found is written as ``None`` and named on
stderr.
"""

import argparse
import json
import os
import re
import statistics
import sys

KEYS = ("Network", "RankSize", "BatchSize", "DeviceType", "CaseName", "ActualFPS",
        "TrainingTime", "TrainAccuracy", "ActualLoss", "E2ETrainingTime")

_RATE = re.compile(r"examples/sec: ([0-9.]+(?:[eE][-+]?[0-9]+)?) \(step (\d+)\)")
_TOTAL_LOSS = re.compile(r"\bloss = ([-+0-9.eEnaif]+), step = (\d+)")
_FINAL_LOSS = re.compile(r"Loss for final step: (\S+?)\.?\s*$")


def parse_log(text):
    """``(rates, losses, final_loss)`` found in a training log."""
    rates = [float(m.group(1)) for m in _RATE.finditer(text)]
    losses = [m.group(1) for m in _TOTAL_LOSS.finditer(text)]
    finals = [m.group(1) for m in (_FINAL_LOSS.search(line) for line in text.splitlines()) if m]
    return rates, losses, finals[-1] if finals else None


def throughput(rates):
    """Examples per second of the run: the median rate, the warm-up interval left out."""
    if not rates:
        return None
    return statistics.median(rates[1:] if len(rates) >= 3 else rates)


def summarize(log_text, batch_size, report_path=None):
    """The measured fields: ActualFPS, TrainingTime, TrainAccuracy, ActualLoss (None if absent),
    and the list of logged losses."""
    rates, losses, final = parse_log(log_text)
    fps = throughput(rates)
    accuracy = None
    if report_path and os.path.isfile(report_path):
        with open(report_path) as f:
            accuracy = json.load(f).get("accuracy")
    return {
        "ActualFPS": None if fps is None else f"{fps:.2f}",
        "TrainingTime": None if not fps else f"{batch_size * 1000.0 / fps:.2f}",
        "TrainAccuracy": None if accuracy is None else f"{accuracy:.4f}",
        "ActualLoss": final if final is not None else (losses[-1] if losses else None),
    }, losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", required=True, help="the training log of estimator_main.py")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--output", required=True, help="the summary file to write")
    parser.add_argument("--loss_file", help="where the logged losses go, one a line")
    parser.add_argument("--network", required=True)
    parser.add_argument("--rank_size", type=int, default=1)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--device_type", required=True)
    parser.add_argument("--case_name", required=True)
    parser.add_argument("--e2e_seconds", type=int, required=True)
    parser.add_argument("--with_accuracy", action="store_true",
                        help="TrainAccuracy from <model_dir>/eval/report.json (full runs)")
    args = parser.parse_args(argv)

    with open(args.log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    report = os.path.join(args.model_dir, "eval", "report.json") if args.with_accuracy else None
    measured, losses = summarize(text, args.batch_size, report)
    values = dict(measured, Network=args.network, RankSize=args.rank_size,
                  BatchSize=args.batch_size, DeviceType=args.device_type,
                  CaseName=args.case_name, E2ETrainingTime=args.e2e_seconds)
    why = {"ActualFPS": f"no 'examples/sec' line in {args.log}: the run logged fewer than two "
                        "--log_every_n_steps intervals of training",
           "ActualLoss": f"no 'Loss for final step' or 'loss = ' line in {args.log}",
           "TrainAccuracy": f"no {report}"}
    for key in ("ActualFPS", "ActualLoss") + (("TrainAccuracy",) if args.with_accuracy else ()):
        if values[key] is None:
            print(f"summarize: warning: {key} = None: {why[key]}", file=sys.stderr)
    if args.loss_file:
        with open(args.loss_file, "w") as f:
            f.write("".join(loss + "\n" for loss in losses))
    with open(args.output, "w") as f:
        f.write("".join(f"{key} = {values[key]}\n" for key in KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
