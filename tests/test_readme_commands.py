"""Every complete ``estimator_main.py`` command the README shows passes validation.

Commands are read from the README's code blocks (line continuations joined); fragments that
stand for more (``...``, ``$ARGS``) are skipped. Paths are pointed at small test records;
environment prefixes (``RANK_SIZE=1``) are applied; GPUs are made visible to the check and
Ascend's adapter is the fake of tests/fake_npu, so the commands validate on this CPU.
"""

import os
import re
import shlex

import pytest

from runtime import estimator_factory
from tests import records_helpers as rh
from tests.test_npu import FAKE_NPU, forget_npu_modules
from training.params import build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    commands = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S):
        for raw in block.replace("\\\n", " ").splitlines():
            line = " ".join(raw.split())
            if "estimator_main.py" in line and "..." not in line and "$" not in line \
                    and line.startswith(("python", "RANK", "DEVICE")):
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_commands():
    assert any("--flagfile=configs/ms1m_paper.flags" in c for c in COMMANDS), COMMANDS
    assert any("--flagfile=configs/ascend_seed.flags" in c for c in COMMANDS), COMMANDS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme_data")
    # With a teacher column, so that the distillation commands validate too.
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=2, size=32,
                           teacher_dim=8)
    rh.write_pair_records(str(root / "pairs"), num_pairs=20, size=32, n_folds=10)
    return root


def _as_test_args(words, data, run_dir):
    paths = {"train_records": data / "train", "data_url": data, "eval_records": data / "pairs",
             "model_dir": run_dir, "train_url": run_dir}
    args = []
    for word in words:
        name = word[2:].split("=", 1)[0] if word.startswith("--") else None
        value = word.split("=", 1)[1] if name else ""
        if name == "eval_records" and "=" in value:  # named sets: each reads the test pairs
            sets = ",".join(f"{entry.split('=', 1)[0]}={paths[name]}"
                            for entry in value.split(","))
            args.append(f"--{name}={sets}")
        else:
            args.append(f"--{name}={paths[name]}" if name in paths else word)
    return args


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_validates(command, data, tmp_path, parse_flags, monkeypatch):
    words = shlex.split(command)
    while "=" in words[0] and not words[0].startswith("-"):  # RANK_SIZE=1 python ...
        name, value = words.pop(0).split("=", 1)
        monkeypatch.setenv(name, value)
    words = words[words.index("estimator_main.py") + 1:]
    args = _as_test_args(words, data, tmp_path / "run")
    flagfile = [w.split("=", 1)[1] for w in words if w.startswith("--flagfile=")]
    lines = []
    for path in flagfile:
        with open(os.path.join(ROOT, path)) as fh:
            lines += [line.strip() for line in fh if line.startswith("--")]
        args = [f"--flagfile={os.path.join(ROOT, path)}" if a == f"--flagfile={path}" else a
                for a in args]
    everything = set(lines) | set(args)
    if "--device=npu" in everything:
        forget_npu_modules()
        monkeypatch.syspath_prepend(FAKE_NPU)
    if "--device=gpu" in everything:
        monkeypatch.setattr(estimator_factory, "visible_gpus", lambda: ["GPU"] * 8)
    if any(a.startswith("--train_epochs") for a in everything):
        # A few test images make one-step epochs; the flagfiles' warm-ups are checked at
        # MS1MV2 size in test_configs.py.
        args.append("--warmup_steps=0")
    if "--mode=train_and_evaluate" not in args and not any(
            a.startswith("--eval_records") or a.startswith("--data_url") for a in args):
        args.append(f"--eval_records={data / 'pairs'}")
    params = build_params(parse_flags(args))
    forget_npu_modules()
    assert params["train_steps"] >= 1
    assert not (tmp_path / "run").exists()  # validation writes nothing
