"""The data_tools sub-packages (issue 28): every command the README showed before the move still
runs. ``python -m data_tools.align`` and ``python -m data_tools.make_bin`` are shims over the
moved modules; ``python -m data_tools.synthetic`` is the package's ``__main__``."""

import importlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# old command -> (the module that now holds it, a flag only that program defines)
MOVED = {
    "data_tools.align": ("data_tools.alignment.align", "--landmarks"),
    "data_tools.make_bin": ("data_tools.insightface.make_bin", "--image_dir"),
    "data_tools.synthetic": ("data_tools.synthetic.make_faces", "--num_train_identities"),
}


@pytest.mark.parametrize("old", ["data_tools.align", "data_tools.make_bin"])
def test_the_old_module_runs_the_moved_command_line(old):
    assert importlib.import_module(old).run is importlib.import_module(MOVED[old][0]).run


@pytest.mark.parametrize("old", sorted(MOVED))
def test_the_old_command_prints_the_moved_programs_flags(old):
    # absl's --helpfull lists every flag defined, then exits (status 1 in absl).
    moved, flag = MOVED[old]
    result = subprocess.run([sys.executable, "-m", old, "--helpfull"], check=False, cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode in (0, 1), result.stderr
    assert flag in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
