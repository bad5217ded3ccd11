"""Fixtures shared by several test files."""

import pytest

import estimator_main

# The program's flags on absl's global FLAGS, as its entry point defines them.
estimator_main.define_flags()


@pytest.fixture
def parse_flags():
    """``parse(args) -> flag_values()`` on the global FLAGS; the defaults come back afterwards."""

    def parse(args):
        estimator_main.FLAGS.unparse_flags()
        estimator_main.FLAGS(["estimator_main.py"] + list(args))
        return estimator_main.flag_values()

    yield parse
    estimator_main.FLAGS.unparse_flags()
