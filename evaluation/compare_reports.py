"""Print one Markdown table row per training run (command line; the library is
``evaluation.report_table``).

    python -m evaluation.compare_reports lfw_output/fold10/models/*    [--copy_reports=DIR]

Each argument is a ``model_dir`` holding ``params.json`` and ``eval/report.json``; runs that
differ only in ``--seed`` share a row. ``--copy_reports`` keeps each report as
``<run name>.json`` next to the table.
"""

import os
import shutil
import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402

from evaluation import reports as report_lib  # noqa: E402
from evaluation.report_table import load_run, markdown_table, summarize  # noqa: E402


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags in ``flag_values``."""
    flags.DEFINE_string("copy_reports", None, "Copy each run's report.json here as "
                        "<run name>.json.", flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: ``argv[1:]`` are the model_dirs. Returns 0, or 1 with a
    message when a run is incomplete."""
    model_dirs = list(argv[1:])
    if not model_dirs:
        raise app.UsageError("give the model_dir of each run")
    try:
        runs = [load_run(d) for d in model_dirs]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if flag_values.copy_reports:
        os.makedirs(flag_values.copy_reports, exist_ok=True)
        for model_dir, (name, _, _) in zip(model_dirs, runs):
            shutil.copyfile(os.path.join(model_dir, "eval", report_lib.REPORT_JSON),
                            os.path.join(flag_values.copy_reports, name + ".json"))
    print(markdown_table(summarize(runs)))
    return 0


def run():
    """Entry point of ``python -m evaluation.compare_reports``."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
