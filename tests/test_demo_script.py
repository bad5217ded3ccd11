"""scripts/demo.sh (make demo) with a stand-in interpreter: the commands it runs, in which
order, the two evaluation rounds, the side-by-side steps and their failures, the stage times.

The stand-in records each command line and fakes the files the next step reads, so this checks
the script's own logic in a second; the pipeline itself is what the other tests cover.
"""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "scripts", "demo.sh")

# Appends its arguments to $CALLS (one line per command), makes the two verification identities
# of the synthetic step, and fails with exit 7 when its arguments contain $FAIL_ON.
STAND_IN = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  *"$FAIL_ON"*) if [ -n "$FAIL_ON" ]; then echo "stand-in failure: $*"; exit 7; fi ;;
esac
for arg in "$@"; do
  case "$arg" in
    --output_dir=*/synthetic) mkdir -p "${arg#--output_dir=}/lfw/synth_v0001" \
                                       "${arg#--output_dir=}/lfw/synth_v0002" ;;
  esac
done
echo "ran: $*"
"""


def run_demo(tmp_path, fail_on="", **env):
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    calls = tmp_path / "calls.txt"
    environ = dict(os.environ, PYTHON=str(stand_in), CALLS=str(calls), FAIL_ON=fail_on, **env)
    out = tmp_path / "demo_output"
    proc = subprocess.run(["bash", DEMO, str(out)], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=60, check=False)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, lines, str(out)


def test_every_step_runs_with_two_evaluation_rounds(tmp_path):
    proc, calls, out = run_demo(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 6
    assert calls[0] == f"-m data_tools.synthetic --output_dir={out}/synthetic"
    conversions = sorted(calls[1:3])
    assert conversions == sorted([
        f"data_tools/make_tfrecords.py --input_dir={out}/synthetic/train "
        f"--output_dir={out}/records/train",
        f"data_tools/make_tfrecords.py --pairs={out}/synthetic/pairs.txt "
        f"--input_dir={out}/synthetic/lfw --output_dir={out}/records/pairs"])
    train = calls[3]
    assert train.startswith("estimator_main.py --flagfile=configs/demo.flags ")
    assert f"--train_records={out}/records/train" in train
    assert f"--eval_records={out}/records/pairs" in train
    steps = int(re.search(r"--train_steps=(\d+)", train).group(1))
    every = int(re.search(r"--save_checkpoints_steps=(\d+)", train).group(1))
    assert steps // every == 2 and steps % every == 0, train  # mid-training and the end
    lfw = f"{out}/synthetic/lfw"
    assert sorted(calls[4:6]) == sorted([
        f"-m export.embed --model={out}/model/export/best "
        f"{lfw}/synth_v0001/synth_v0001_0001.jpg {lfw}/synth_v0001/synth_v0001_0002.jpg",
        f"-m export.embed --model={out}/model/export/best "
        f"{lfw}/synth_v0001/synth_v0001_0001.jpg {lfw}/synth_v0002/synth_v0002_0001.jpg"])
    # Both side-by-side outputs are printed, in the order of the commands.
    same = proc.stdout.index("synth_v0001_0002.jpg")
    other = proc.stdout.index("synth_v0002_0001.jpg")
    assert proc.stdout.index("records/train") < proc.stdout.index("records/pairs") < same < other
    times = re.search(r"^Stage times: (.*)$", proc.stdout, re.M).group(1)
    assert re.fullmatch(r"1/4 faces [\d.]+ s; 2/4 records [\d.]+ s; 3/4 train_and_evaluate "
                        r"[\d.]+ s; 4/4 serve [\d.]+ s; total [\d.]+ s", times), times


def test_demo_steps_sets_the_length_and_keeps_two_rounds(tmp_path):
    proc, calls, _ = run_demo(tmp_path, DEMO_STEPS="30")
    assert proc.returncode == 0, proc.stderr
    assert "--train_steps=30 --save_checkpoints_steps=15" in calls[3]
    (tmp_path / "one").mkdir()
    proc, calls, _ = run_demo(tmp_path / "one", DEMO_STEPS="1")
    assert proc.returncode == 0, proc.stderr
    assert "--train_steps=1 --save_checkpoints_steps=1" in calls[3]


def test_a_failed_background_conversion_stops_the_demo(tmp_path):
    proc, calls, _ = run_demo(tmp_path, fail_on="--output_dir=" + str(tmp_path)
                              + "/demo_output/records/train")
    assert proc.returncode == 7
    assert "failed (exit 7)" in proc.stderr and "records/train" in proc.stderr
    # The other conversion ran and its output is shown; training never started.
    assert "ran: data_tools/make_tfrecords.py --pairs=" in proc.stdout
    assert "stand-in failure" in proc.stdout
    assert not any(c.startswith("estimator_main.py") for c in calls)


def test_a_failed_foreground_verification_stops_the_demo(tmp_path):
    proc, calls, _ = run_demo(tmp_path, fail_on="synth_v0002_0001.jpg")
    assert proc.returncode == 7
    assert "failed (exit 7)" in proc.stderr
    assert "Stage times" not in proc.stdout
    assert len(calls) == 6
