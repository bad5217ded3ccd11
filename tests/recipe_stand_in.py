"""Run a real-faces recipe script (scripts/lfw_recipe.sh, scripts/model_recipe.sh) with a
stand-in Python that only logs its command lines: which split, records and flags each step
uses, in a second, without data or training. The real runs are the slow real-LFW tests."""

import os
import shlex
import subprocess

from tests import _folder_fixtures as ff


def run_recipe_script(script, tmp_path, *flags, **env_vars):
    """``(OUT, logged command lines)`` of ``scripts/SCRIPT OUT FLAGS`` over an empty LFW-a
    archive and pairs file (present, never read once ``OUT/lfw_gray250`` exists)."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("lfw_a_gray250.tar.gz", "lfw_pairs.txt"):
        (data / name).write_bytes(b"")
    out = tmp_path / "out"
    (out / "lfw_gray250").mkdir(parents=True)
    log = tmp_path / "commands.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n')
    python.chmod(0o755)
    env = dict(os.environ, LFW_DATA=str(data), PYTHON=str(python), **env_vars)
    subprocess.run(["bash", os.path.join(ff.REPO_ROOT, "scripts", script), str(out)]
                   + list(flags), cwd=ff.REPO_ROOT, env=env, check=True, capture_output=True)
    return out, log.read_text().splitlines() if log.exists() else []


def commands_of(lines, program):
    """The logged lines that run ``program`` (a script path, or a module with ``-m``)."""
    return [line for line in lines
            if line.split()[:1] == [program] or line.split()[:2] == ["-m", program]]
