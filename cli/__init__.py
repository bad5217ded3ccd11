"""The command-line recipe every program of the project shares. No TensorFlow here, and nothing
that imports it: the programs call :func:`quiet_tensorflow` before they import TensorFlow.

One way to build a command line, in every program (``data_tools/make_tfrecords.py``,
``estimator_main.py``, ``python -m export.embed``, ``python -m evaluation.compare_reports``,
... : each a console script of setup.py)::

    import cli
    cli.quiet_tensorflow()          # before anything imports TensorFlow
    from cli import flag_groups     # the flags several programs share, defined once

    def define_flags(flag_values=flags.FLAGS): ...   # DEFINE_* and flag_groups.define_*(fv)
    def main(argv, flag_values=flags.FLAGS): ...     # parsed flags in, exit code out
    def run():                                       # console script and __main__
        cli.run(define_flags, main)

Tests call ``define_flags`` on a ``flags.FlagValues()`` of their own, parse, and call ``main``
with it (:func:`run_main`), so no test needs the global ``FLAGS``.
"""

import functools
import logging
import os
import sys

TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
# TensorFlow's C++ log level: 0 all, 1 no INFO (the oneDNN and CPU-feature banners are INFO),
# 2 no WARNING either, 3 errors only.
DEFAULT_TF_LOG_LEVEL = "2"
_ABSL_LEVEL_NAMES = {"debug": 1, "info": 0, "warning": -1, "warn": -1, "error": -2, "fatal": -3}


def verbosity_from_argv(argv):
    """The absl ``--verbosity`` (``-v``) a command line asks for, or None when it asks none."""
    value = None
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, has_value, text = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or name not in ("verbosity", "v"):
            continue
        if not has_value:
            text = args[i + 1] if i + 1 < len(args) else ""
        text = text.strip().lower()
        try:
            value = int(text)
        except ValueError:
            value = _ABSL_LEVEL_NAMES.get(text, value)
    return value


def quiet_tensorflow(argv=None):
    """Set TensorFlow's C++ log level before TensorFlow is imported.

    ``TF_CPP_MIN_LOG_LEVEL`` becomes 2 (errors only: no oneDNN and CPU-feature banners) unless
    the environment already sets it, or ``--verbosity`` in ``argv`` (default ``sys.argv``) asks
    for more: 0 or more (INFO, DEBUG) shows everything, -1 (WARNING) shows warnings.
    """
    verbosity = verbosity_from_argv(sys.argv if argv is None else argv)
    if verbosity is not None and verbosity >= 0:
        os.environ[TF_LOG_LEVEL_ENV] = "0"
    elif verbosity == -1:
        os.environ[TF_LOG_LEVEL_ENV] = "1"
    else:
        os.environ.setdefault(TF_LOG_LEVEL_ENV, DEFAULT_TF_LOG_LEVEL)


class _DropDeprecations(logging.Filter):
    """TensorFlow's "X is deprecated and will be removed" warnings name the project's own calls
    of the TF1 API it must keep for TF 1.15 users: nothing a user of a CLI can act on."""

    def filter(self, record):
        return "is deprecated and will be removed" not in record.getMessage()


def quiet_python_logs(verbosity_given=False):
    """Unless ``--verbosity`` was given (``verbosity_given``): absl's INFO lines off
    (TensorFlow's "Restoring parameters", tf2onnx's and the TFLite converter's progress notes)
    and TensorFlow's deprecation warnings dropped. The programs' own output is printed, not
    logged."""
    if verbosity_given:
        return
    from absl import logging as absl_logging  # noqa: PLC0415

    absl_logging.set_verbosity(absl_logging.WARNING)
    tf_logger = logging.getLogger("tensorflow")  # TensorFlow's, whether imported yet or not
    if not any(isinstance(f, _DropDeprecations) for f in tf_logger.filters):
        tf_logger.addFilter(_DropDeprecations())


def count(number, singular, plural=None):
    """``1 identity``, ``2 identities``: a count with its noun in the right number."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def check_usage(argv, flag_values=None, required=()):
    """Raise absl's ``UsageError`` (exit 1 with the usage under ``app.run``) when the command line
    has positional arguments (``argv[1:]``) or leaves a ``required`` flag of ``flag_values``
    empty."""
    from absl import app  # noqa: PLC0415

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in required:
        if not flag_values[name].value:
            raise app.UsageError(f"--{name} is required")


def one_line_usage_errors(main):
    """``main``, with a bad setting (absl's ``UsageError``) printed as its one line and exit 1,
    where ``app.run`` would print the program's whole short help before it."""
    from absl import app  # noqa: PLC0415

    @functools.wraps(main)
    def main_with_one_line_errors(argv, *args, **kwargs):
        try:
            return main(argv, *args, **kwargs)
        except app.UsageError as e:
            sys.stderr.write(f"{os.path.basename(argv[0])}: {e}\nsee --help for the flags\n")
            return 1

    return main_with_one_line_errors


def run(define_flags, main):
    """The console-script entry: define the flags in the global ``FLAGS``, then ``app.run(main)``
    (which parses them, handles ``--help`` and exits with ``main``'s return value).

    The flags are made key flags of the program too, so that ``--help`` lists them when the
    program is a console script (absl lists the flags of the module named by ``sys.argv[0]``).
    """
    from absl import app, flags  # noqa: PLC0415 - absl is light, but only entry points need it

    before = set(flags.FLAGS)
    define_flags()
    for name in sorted(set(flags.FLAGS) - before):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

    def quiet_main(argv):
        quiet_python_logs(bool(flags.FLAGS["verbosity"].present))
        return main(argv)

    app.run(quiet_main)


def run_main(define_flags, main, argv):
    """``main`` on ``argv`` (``argv[0]`` is the program name) with flags of its own: a fresh
    ``FlagValues``, so that tests and other programs can call a CLI in-process, again and again,
    whatever the global ``FLAGS`` holds. Flag errors raise ``absl.flags.Error``."""
    from absl import flags  # noqa: PLC0415

    flag_values = flags.FlagValues()
    define_flags(flag_values)
    return main(flag_values(list(argv)), flag_values=flag_values)
