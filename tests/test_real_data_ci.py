"""Real-data tests skip on a user's clone without ../shared/data, and fail in CI with it."""

import types

import pytest

from tests import conftest, real_lfw


@pytest.mark.parametrize("environ,expected", [
    ({}, False), ({"CI": ""}, False), ({"CI": "false"}, False), ({"CI": "0"}, False),
    ({"CI": "true"}, True), ({"CI": "1"}, True),
])
def test_ci_is_told_by_the_environment(environ, expected):
    assert real_lfw.in_ci(environ) is expected


def test_skipping_fails_only_in_ci_with_the_data_folder(tmp_path):
    missing = str(tmp_path / "absent")
    assert real_lfw.ci_failure("why", {"CI": "true"}, data_dir=missing) is None
    assert real_lfw.ci_failure("why", {}, data_dir=str(tmp_path)) is None
    message = real_lfw.ci_failure("lfw_pairs.txt missing", {"CI": "true"}, data_dir=str(tmp_path))
    assert str(tmp_path) in message and "lfw_pairs.txt missing" in message


class _Item:
    def __init__(self, marks):
        self._marks = marks

    def get_closest_marker(self, name):
        return object() if name in self._marks else None


def _report_after_hook(marks, outcome="skipped", **extra):
    report = types.SimpleNamespace(outcome=outcome, skipped=outcome == "skipped",
                                   longrepr=("test_x.py", 3, "Skipped: data not found"), **extra)
    hook = conftest.pytest_runtest_makereport(_Item(marks), None)
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(types.SimpleNamespace(get_result=lambda: report))
    return report


def test_the_hook_turns_a_real_data_skip_into_a_failure_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(real_lfw, "DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    report = _report_after_hook({"real_data"})
    assert report.outcome == "failed"
    assert "Skipped: data not found" in report.longrepr and str(tmp_path) in report.longrepr
    # Other skips, expected failures and runs that did not skip are left alone.
    assert _report_after_hook(set()).outcome == "skipped"
    assert _report_after_hook({"real_data"}, wasxfail="").outcome == "skipped"
    assert _report_after_hook({"real_data"}, outcome="passed").outcome == "passed"
    monkeypatch.setenv("CI", "false")
    assert _report_after_hook({"real_data"}).outcome == "skipped"
