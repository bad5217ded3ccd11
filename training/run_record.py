"""The run record in model_dir: flags.txt, params.json, and one line per run in runs.jsonl."""

import json
import os
import platform
import subprocess
import sys
import time

import tensorflow.compat.v1 as tf

RUNS_NAME = "runs.jsonl"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git_revision():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                       stderr=subprocess.DEVNULL).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def writes_run_record():
    """Under TF_CONFIG only the chief writes flags.txt, params.json and runs.jsonl: every task
    shares model_dir, and concurrent read-then-write of runs.jsonl would lose lines. The chief
    is the ``chief`` (or ``master``) task, or worker 0 of a cluster that has neither (a
    multi-worker cluster of workers only)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = config.get("task", {}), config.get("cluster", {})
    task_type = task.get("type", "chief")
    if task_type == "worker" and not {"chief", "master"} & set(cluster):
        return int(task.get("index", 0)) == 0
    return task_type in ("chief", "master")


def record_run(params, flags_text):
    """Flags of this run (flags.txt), params.json, and one line per run in runs.jsonl with the
    TF version and git revision."""
    model_dir = params["model_dir"]
    tf.io.gfile.makedirs(model_dir)
    # gfile, not open(): model_dir may be an object store (ModelArts --train_url, gs://, s3://).
    with tf.io.gfile.GFile(os.path.join(model_dir, "flags.txt"), "w") as fh:
        fh.write(flags_text)
    with tf.io.gfile.GFile(os.path.join(model_dir, "params.json"), "w") as fh:
        json.dump(params, fh, indent=2, sort_keys=True)
    info = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "mode": params["mode"],
            "tensorflow": tf.__version__, "python": platform.python_version(),
            "git_revision": _git_revision(), "argv": sys.argv}
    runs_path = os.path.join(model_dir, RUNS_NAME)
    history = ""
    if tf.io.gfile.exists(runs_path):
        with tf.io.gfile.GFile(runs_path) as fh:
            history = fh.read()
    with tf.io.gfile.GFile(runs_path, "w") as fh:
        fh.write(history + json.dumps(info) + "\n")
