"""scripts/ascend: the ModelZoo launchers end to end on this CPU, and their summary file.

Each launcher runs once on a ModelArts-style root (``train/`` and ``pairs/`` records of 32x32
images) with the tiny backbone passed through after ``--``: the accuracy run with
``--device=cpu`` (it ends with the LFW-style evaluation), the performance run on its default
device, ``npu``, through the fake ``npu_bridge`` of ``tests/fake_npu``.
"""

import collections
import importlib.util
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys

import pytest

from tests import records_helpers as rh
from tests.test_npu import FAKE_NPU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts", "ascend")
_SPEC = importlib.util.spec_from_file_location("summarize", os.path.join(SCRIPTS, "summarize.py"))
summarize = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(summarize)
LAUNCHERS = ("train_full_1p.sh", "train_performance_1p.sh")
STEPS, BATCH = 12, 8
NET = ["--backbone=tiny", "--image_size=32", "--embedding_size=16", "--gamma=32",
       "--log_every_n_steps=2", "--eval_batch_size=4", "--eval_throttle_secs=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("modelarts")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=8, size=32)
    rh.write_pair_records(str(root / "pairs"), num_pairs=10, size=32, n_folds=2)
    return root


def _environ(env):
    return dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2", **env)


def launch(script, *args, **env):
    return subprocess.run(["bash", os.path.join(SCRIPTS, script)] + list(args), cwd=ROOT,
                          env=_environ(env), capture_output=True, text=True, timeout=600,
                          check=False)


Run = collections.namedtuple("Run", ["out", "returncode", "stdout", "stderr"])


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Both launchers, started together (each is mostly TensorFlow start-up on one core)."""
    commands = {
        "full": (["train_full_1p.sh", "--device=cpu"], {}),
        # The default device, through the fake npu_bridge; RANK_SIZE=8 must not matter.
        "perf": (["train_performance_1p.sh", "--precision_mode=allow_fp32_to_fp16"],
                 {"PYTHONPATH": FAKE_NPU + os.pathsep + os.environ.get("PYTHONPATH", ""),
                  "RANK_SIZE": "8"}),
    }
    started = {}
    for kind, (argv, env) in commands.items():
        out = tmp_path_factory.mktemp(kind)
        stdout, stderr = open(str(out) + ".stdout", "w+"), open(str(out) + ".stderr", "w+")
        proc = subprocess.Popen(
            ["bash", os.path.join(SCRIPTS, argv[0])] + argv[1:] + [
                f"--data_path={data}", f"--output_path={out}", f"--batch_size={BATCH}",
                f"--train_steps={STEPS}", "--"] + NET,
            cwd=ROOT, env=_environ(env), stdout=stdout, stderr=stderr, text=True,
            start_new_session=True)
        started[kind] = (out, proc, stdout, stderr)
    done = {}
    try:
        for kind, (out, proc, stdout, stderr) in started.items():
            returncode = proc.wait(timeout=600)
            texts = []
            for f in (stdout, stderr):
                f.seek(0)
                texts.append(f.read())
            done[kind] = Run(str(out), returncode, texts[0], texts[1])
    finally:
        for _, proc, stdout, stderr in started.values():
            if proc.poll() is None:  # a timeout: stop the launcher we started and its python
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            stdout.close()
            stderr.close()
    return done


@pytest.fixture(scope="module")
def full(runs):
    run = runs["full"]
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    return run.out, run


@pytest.fixture(scope="module")
def perf(runs):
    run = runs["perf"]
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    return run.out, run


def read_summary(path):
    with open(path) as f:
        lines = f.read().splitlines()
    pairs = [re.match(r"^(\w+) = (\S+)$", line) for line in lines]
    assert all(pairs), lines
    assert [m.group(1) for m in pairs] == list(summarize.KEYS)
    return {m.group(1): m.group(2) for m in pairs}


def read_flags(model_dir):
    with open(os.path.join(model_dir, "flags.txt")) as f:
        return set(f.read().splitlines())


def check_common(summary, case_name, log_path):
    assert summary["Network"] == "CircleLoss_for_TensorFlow"
    assert (summary["RankSize"], summary["BatchSize"]) == ("1", str(BATCH))
    assert summary["DeviceType"] == platform.machine()
    assert summary["CaseName"] == case_name
    fps = float(summary["ActualFPS"])
    assert 0 < fps < 1e6
    assert float(summary["TrainingTime"]) == pytest.approx(BATCH * 1000 / fps, rel=1e-2)
    with open(log_path) as f:
        final = re.findall(r"Loss for final step: (\S+)\.$", f.read(), re.M)
    assert summary["ActualLoss"] == final[-1]
    assert math.isfinite(float(summary["ActualLoss"]))
    assert 0 < int(summary["E2ETrainingTime"]) < 600


def test_full_run_summary(full):
    out, proc = full
    case = f"CircleLoss_for_TensorFlow_bs{BATCH}_1p_acc"
    summary = read_summary(os.path.join(out, case + ".log"))
    check_common(summary, case, os.path.join(out, f"train_{case}.log"))
    with open(os.path.join(out, case, "eval", "report.json")) as f:
        accuracy = json.load(f)["accuracy"]
    assert summary["TrainAccuracy"] == f"{accuracy:.4f}"
    assert 0.0 <= accuracy <= 1.0
    assert "Final result" in proc.stdout and "ActualFPS = " in proc.stdout
    with open(os.path.join(out, f"train_{case}_loss.txt")) as f:
        losses = f.read().split()
    assert len(losses) == STEPS // 2  # loss logged every 2 steps: 0, 2, ..., 10


def test_full_run_starts_from_the_seed_flagfile(full):
    out, _ = full
    flags = read_flags(os.path.join(out, f"CircleLoss_for_TensorFlow_bs{BATCH}_1p_acc"))
    assert {"--mode=train_and_evaluate", "--device=cpu", f"--train_steps={STEPS}",
            f"--batch_size={BATCH}", "--backbone=tiny", "--head=circle", "--margin=0.25",
            "--schedule=piecewise", "--noprogress"} <= flags
    # The seed's run length and warm-up are dropped with --train_steps (2% of 12 steps: 0).
    assert "--warmup_steps=10000" not in flags and not any(
        f.startswith("--train_epochs") for f in flags)


def test_performance_run_on_the_default_npu_device(perf):
    out, _ = perf
    case = f"CircleLoss_for_TensorFlow_bs{BATCH}_1p_perf"
    summary = read_summary(os.path.join(out, case + ".log"))
    check_common(summary, case, os.path.join(out, f"train_{case}.log"))
    assert summary["TrainAccuracy"] == "None"
    model_dir = os.path.join(out, case)
    assert {"--mode=train", "--device=npu", "--npu_precision_mode=allow_fp32_to_fp16",
            f"--train_steps={STEPS}"} <= read_flags(model_dir)
    assert not os.path.exists(os.path.join(model_dir, "eval"))


def test_performance_run_refuses_a_foreign_model_dir(data, tmp_path):
    case = tmp_path / f"CircleLoss_for_TensorFlow_bs{BATCH}_1p_perf"
    case.mkdir()
    (case / "precious.txt").write_text("not ours")
    proc = launch("train_performance_1p.sh", f"--data_path={data}",
                  f"--output_path={tmp_path}", f"--batch_size={BATCH}")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is not a run of this launcher" in proc.stderr
    assert (case / "precious.txt").exists()


@pytest.mark.parametrize("script", LAUNCHERS)
def test_help_prints_the_usage(script):
    proc = launch(script, "-h")
    assert proc.returncode == 0 and not proc.stderr
    assert proc.stdout.startswith(f"usage: {script} --data_path=DIR")
    for option in ("--data_path", "--output_path", "--precision_mode", "--train_steps",
                   "--train_epochs", "--batch_size", "--device", "-h"):
        assert option in proc.stdout


@pytest.mark.parametrize("script", LAUNCHERS)
@pytest.mark.parametrize("args, message", [
    (["--data_path={data}", "--learning_rate=1"], "unknown option '--learning_rate'"),
    (["--data_path={data}", "extra"], "unknown option 'extra'"),
    (["--data_path"], "--data_path needs a value"),
    ([], "--data_path=DIR is required"),
    (["--data_path={data}/train"], "has no train/ directory"),
    (["--data_path={data}", "--", "--batch_size=4"], "--batch_size after -- is set by this"),
    (["--data_path={data}", "--precision_mode=fp8"], "--precision_mode=fp8 is not one of"),
    (["--data_path={data}", "--train_steps=0"], "--train_steps=0 is not a positive integer"),
])
def test_a_bad_option_is_one_line(script, args, message, data, tmp_path):
    out = tmp_path / "out"
    proc = launch(script, f"--output_path={out}", *[a.format(data=data) for a in args])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"{script}: error: ") and message in proc.stderr
    assert not proc.stdout and not out.exists()


def test_summarize_parses_the_log():
    log = "\n".join([
        "INFO:tensorflow:loss = 31.5, step = 0",
        "INFO:tensorflow:loss = 31.2, lr = 0.1, s_n = -0.1, s_p = 0.2, step = 0",
        "INFO:tensorflow:examples/sec: 4.0 (step 2)",
        "INFO:tensorflow:loss = 28.5, step = 2 (4.017 sec)",
        "INFO:tensorflow:examples/sec: 50.0 (step 4)",
        "INFO:tensorflow:examples/sec: 1e2 (step 6)",
        "INFO:tensorflow:examples/sec: 20.0 (step 8)",  # waited for an evaluation
        "INFO:tensorflow:Saving dict for global step 8: lfw/accuracy = 0.9, loss = 0.08",
        "INFO:tensorflow:Loss for final step: 27.25.",
    ])
    measured, losses = summarize.summarize(log, batch_size=10)
    assert losses == ["31.5", "28.5"]
    assert measured == {"ActualFPS": "50.00", "TrainingTime": "200.00", "TrainAccuracy": None,
                        "ActualLoss": "27.25"}
    assert summarize.throughput([7.0]) == 7.0 and summarize.throughput([]) is None
    measured, _ = summarize.summarize("loss = 3.5, step = 4\n", batch_size=10)
    assert (measured["ActualFPS"], measured["ActualLoss"]) == (None, "3.5")
