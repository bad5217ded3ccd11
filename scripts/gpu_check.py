"""What an NVIDIA GPU machine can measure of this project, in under ten minutes (gpu_check.sh).

Detects what is there, runs what it can, and says in one line why it skips the rest:

1. the GPU (``nvidia-smi``) and a Python with torch + CUDA: the PyTorch peer's iresnet50 training
   images/s on the GPU in fp32 and in fp16 (``torch.autocast`` + ``GradScaler``), through
   ``benchmarks/peer_torch.py --device=cuda`` (the same model, head and optimizer as
   ``make bench-peer``);
2. TensorFlow with a visible GPU (``pip install .[gpu]`` where it can be installed): the tests
   marked ``gpu`` and this project's iresnet50 training images/s in fp32 and fp16 (the mixed
   precision graph rewrite, dynamic loss scaling) from ``benchmarks.train_step``'s session loop,
   each against the peer's same-precision figure.

Writes one JSON object (``--out``, written atomically) with what it measured and why anything was
not measured. Standard library only: it must start where neither TensorFlow nor torch exists.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SCRIPT = os.path.join(ROOT, "benchmarks", "peer_torch.py")
BACKBONE, NUM_CLASSES = "iresnet50", 100
# insightface trains iresnet50 at batch 128 per GPU; 3 rounds of 20 steps after 10 warm-up
# steps: seconds on a current GPU, a few minutes on an old one.
BATCH, WARMUP, STEPS, ROUNDS = 128, 10, 20, 3
PRECISIONS = ("fp32", "fp16")

TORCH_PROBE = ("import json, torch; print(json.dumps({'torch': torch.__version__, "
               "'cuda': torch.cuda.is_available() and torch.version.cuda, "
               "'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))")
TF_PROBE = ("import json, os; os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2'); "
            "import tensorflow as tf; print(json.dumps({'tf': tf.__version__, "
            "'gpus': len(tf.config.experimental.list_physical_devices('GPU'))}))")
TF_TRAIN = """
import json, sys
from benchmarks import common, train_step
backbone, precision, batch, classes, warmup, steps, rounds = sys.argv[1:8]
batch, classes, warmup, steps, rounds = map(int, (batch, classes, warmup, steps, rounds))
inputs = {"synthetic": lambda: train_step.synthetic_batches(batch, classes, common.IMAGE_SIZE)}
with train_step.training_steps(backbone, precision, inputs, classes, warmup) as (fns, _):
    seconds = common.interleaved({"synthetic": (fns["synthetic"], steps)}, rounds)["synthetic"]
print(json.dumps({"images_per_s": batch / seconds}))
"""


def say(message):
    sys.stderr.write(f"gpu_check: {message}\n")
    sys.stderr.flush()


def probe(python, code, timeout=120):
    """The JSON a ``python -c code`` prints, or ``(None, why not)``."""
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, str(error)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit code {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def gpu_name():
    """The first GPU's name from nvidia-smi, or ``(None, why not)``."""
    if shutil.which("nvidia-smi") is None:
        return None, "no nvidia-smi on PATH (no NVIDIA driver)"
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"nvidia-smi failed: {error}"
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode or not names:
        return None, f"nvidia-smi lists no GPU ({done.stderr.strip() or done.returncode})"
    return names[0], None


def peer_images_per_s(python, precision, batch, warmup, steps, rounds):
    """The peer's median images/s over ``rounds`` rounds of ``steps`` GPU steps."""
    command = [python, PEER_SCRIPT, f"--backbone={BACKBONE}", f"--precision={precision}",
               "--device=cuda", f"--batch={batch}", f"--num_classes={NUM_CLASSES}",
               f"--warmup={warmup}"]
    rounds_input = "".join(f"{steps}\n" for _ in range(rounds))
    done = subprocess.run(command, input=rounds_input, stdout=subprocess.PIPE,
                          text=True, check=True)
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    seconds = [reply["seconds_per_step"] for reply in replies[1:]]
    return batch / statistics.median(seconds), [round(batch / s, 1) for s in seconds]


def tf_images_per_s(python, precision, batch, warmup, steps, rounds):
    done = subprocess.run([python, "-c", TF_TRAIN, BACKBONE, precision, str(batch),
                           str(NUM_CLASSES), str(warmup), str(steps), str(rounds)],
                          stdout=subprocess.PIPE, text=True, check=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


def write_json(path, record):
    """Atomically: a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".gpu_check_")
    with os.fdopen(handle, "w") as stream:
        json.dump(record, stream, indent=1)
        stream.write("\n")
    os.replace(temporary, path)


def check(args):
    """Measure what this machine allows; returns the record."""
    record = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "backbone": BACKBONE, "batch": args.batch, "skipped": {}}
    name, why = gpu_name()
    record["gpu"] = name
    if name is None:
        record["skipped"]["all"] = f"no GPU: {why}"
        say(record["skipped"]["all"])
        return record
    say(f"GPU: {name}")
    torch_info, why = probe(args.torch_python, TORCH_PROBE)
    record["torch"] = torch_info
    measure_torch = bool(torch_info and torch_info.get("cuda"))
    if not measure_torch:
        reason = why or f"torch {torch_info['torch']} has no CUDA"
        record["skipped"]["peer"] = f"no PyTorch peer on the GPU ({args.torch_python}): {reason}"
        say(record["skipped"]["peer"])
    tf_info, why = probe(args.tf_python, TF_PROBE)
    record["tensorflow"] = tf_info
    measure_tf = bool(tf_info and tf_info.get("gpus"))
    if not measure_tf:
        reason = why or f"TensorFlow {tf_info['tf']} sees no GPU (a CPU-only build)"
        record["skipped"]["tensorflow"] = (
            f"no TensorFlow GPU measurement or GPU tests ({args.tf_python}): {reason}; "
            "`pip install .[gpu]` (TensorFlow 2.15 with CUDA, Python <= 3.11) provides it")
        say(record["skipped"]["tensorflow"])
    if args.dry_run:
        record["dry_run"] = True
        say("dry run: would measure " + ", ".join(
            what for what, ok in (("the peer", measure_torch), ("TensorFlow", measure_tf)) if ok)
            if measure_torch or measure_tf else "dry run: nothing to measure")
        return record
    for precision in PRECISIONS:
        try:
            _measure_precision(args, record, precision, measure_torch, measure_tf)
        except (subprocess.CalledProcessError, OSError, ValueError) as error:
            # The record keeps what was measured before; the failure is named, not hidden.
            record["skipped"][precision] = f"failed: {error}"
            say(f"{precision} failed: {error}")
    if measure_tf:
        tests = subprocess.run([args.tf_python, "-m", "pytest", "-q", "-m", "gpu", "tests"],
                               cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), check=False)
        record["gpu_tests_exit_code"] = tests.returncode
    return record


def _measure_precision(args, record, precision, measure_torch, measure_tf):
    """One precision: the peer and/or this project, and their ratio, into ``record``."""
    if measure_torch:
        images, per_round = peer_images_per_s(args.torch_python, precision, args.batch,
                                              WARMUP, args.steps, ROUNDS)
        record[f"peer_{precision}_images_per_s"] = round(images, 1)
        record[f"peer_{precision}_rounds_images_per_s"] = per_round
        say(f"peer {precision}: {images:.1f} images/s")
    if measure_tf:
        images = tf_images_per_s(args.tf_python, precision, args.batch, WARMUP,
                                 args.steps, ROUNDS)
        record[f"project_{precision}_images_per_s"] = round(images, 1)
        say(f"project {precision}: {images:.1f} images/s")
        if measure_torch:
            record[f"{BACKBONE}_{precision}_over_peer"] = round(
                images / record[f"peer_{precision}_images_per_s"], 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json", help="the JSON record")
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", "python3"),
                        help="a Python with torch + CUDA (default: $TORCH_PYTHON, else python3)")
    parser.add_argument("--tf_python", default=os.environ.get("TF_PYTHON", sys.executable),
                        help="a Python with TensorFlow (default: $TF_PYTHON, else this one)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--steps", type=int, default=STEPS, help="steps per round")
    parser.add_argument("--dry_run", action="store_true",
                        help="detect and report what would be measured, measure nothing")
    args = parser.parse_args(argv)
    record = check(args)
    write_json(args.out, record)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
