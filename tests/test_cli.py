"""The one command-line recipe: TensorFlow's C++ log level, set before TensorFlow loads."""

import ast
import importlib
import importlib.util
import os
import sysconfig

import pytest
from absl import flags

import cli


@pytest.mark.parametrize("argv, verbosity", [
    (["prog"], None),
    (["prog", "a.jpg", "--model=m"], None),
    (["prog", "--verbosity=1"], 1),
    (["prog", "--verbosity", "0"], 0),
    (["prog", "-v", "-1"], -1),
    (["prog", "--v=debug"], 1),
    (["prog", "--", "--verbosity=1"], None),
])
def test_verbosity_from_argv(argv, verbosity):
    assert cli.verbosity_from_argv(argv) == verbosity


@pytest.mark.parametrize("environ, argv, level", [
    (None, ["prog"], "2"),             # quiet by default: no oneDNN / CPU-feature banners
    ("0", ["prog"], "0"),              # the user's own setting stays
    ("3", ["prog"], "3"),
    (None, ["prog", "--verbosity=0"], "0"),   # --verbosity brings the banners back
    ("2", ["prog", "--verbosity=1"], "0"),
    (None, ["prog", "--verbosity=-1"], "1"),  # warnings only
    (None, ["prog", "--verbosity=-2"], "2"),
])
def test_quiet_tensorflow(monkeypatch, environ, argv, level):
    if environ is None:
        monkeypatch.delenv(cli.TF_LOG_LEVEL_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.TF_LOG_LEVEL_ENV, environ)
    cli.quiet_tensorflow(argv)
    assert os.environ[cli.TF_LOG_LEVEL_ENV] == level


# Every command-line module of the project: each follows the recipe of cli/.
CLI_MODULES = [
    "estimator_main", "data_tools.alignment.align", "data_tools.lfw_holdout",
    "data_tools.lfw_identification", "data_tools.insightface.make_bin", "data_tools.make_pairs",
    "data_tools.make_tfrecords", "data_tools.synthetic.make_faces", "evaluation.compare_reports",
    "export.convert", "export.embed",
    "export.gallery", "export.identification", "export.ijb",
]


def _standard_library(name):
    spec = importlib.util.find_spec(name.split(".")[0])
    return spec.origin in (None, "built-in", "frozen") or spec.origin.startswith(
        sysconfig.get_paths()["stdlib"])


def _is_quiet_call(node):
    call = node.value if isinstance(node, ast.Expr) else None
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "quiet_tensorflow" and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "cli")


def _imported_modules(node):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name != "cli"]
    if isinstance(node, ast.ImportFrom):
        return [node.module]
    return []


@pytest.mark.parametrize("name", CLI_MODULES)
def test_cli_modules_follow_the_recipe(monkeypatch, name):
    module = importlib.import_module(name)
    with open(module.__file__, encoding="utf-8") as f:
        body = ast.parse(f.read()).body
    # TensorFlow's log level is set before the module imports anything that may load it.
    quiet = [node.lineno for node in body if _is_quiet_call(node)]
    imports = [node.lineno for node in body
               if any(not _standard_library(m) for m in _imported_modules(node))]
    assert len(quiet) == 1 and imports and quiet[0] < min(imports)
    # run() is the shared entry: cli.run(define_flags, main), main perhaps wrapped by
    # cli.one_line_usage_errors.
    calls = []
    monkeypatch.setattr(cli, "run", lambda *args: calls.append(args))
    module.run()
    assert len(calls) == 1 and calls[0][0] is module.define_flags
    assert getattr(calls[0][1], "__wrapped__", calls[0][1]) is module.main
    # The flags go to the FlagValues given (tests use their own), not to the global FLAGS.
    before, fresh = set(flags.FLAGS), flags.FlagValues()
    module.define_flags(fresh)
    assert set(fresh) and set(flags.FLAGS) == before


def test_one_line_usage_errors(capsys):
    from absl import app  # noqa: PLC0415

    def main(argv, flag_values=None):
        if argv[1:]:
            raise app.UsageError("--x contradicts --y")
        return 0

    wrapped = cli.one_line_usage_errors(main)
    assert wrapped(["path/prog.py"]) == 0
    assert wrapped(["path/prog.py", "bad"]) == 1
    assert capsys.readouterr().err == "prog.py: --x contradicts --y\nsee --help for the flags\n"
