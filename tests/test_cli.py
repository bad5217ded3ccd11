"""The one command-line recipe: TensorFlow's C++ log level, set before TensorFlow loads."""

import os

import pytest

from data_tools import cli


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
