"""The run record in model_dir: flags.txt, params.json, and one line per run in runs.jsonl.

Only a run that trains writes ``flags.txt`` and ``params.json``: they describe the model the
checkpoints hold. ``evaluate`` and ``export`` read them back (:func:`apply_recorded_settings`)
and append their line to ``runs.jsonl``; a flag of theirs that contradicts the recorded model is
refused, because a checkpoint restored into another network fails with hundreds of lines
("Key backbone/... not found in checkpoint") and, before, rewrote the record it contradicted.
"""

import json
import os
import platform
import subprocess
import sys
import time

import tensorflow.compat.v1 as tf

from model import heads
from training.run_spec import PARAMS_NAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS_NAME = "flags.txt"
RUNS_NAME = "runs.jsonl"

# What the checkpoints' variables are: a different value cannot restore them (and the options
# the heads declare: see model_settings()).
MODEL_SETTINGS = ("backbone", "head", "embedding_size", "image_size", "dropout_rate", "margin",
                  "gamma", "scale", "class_weight", "pair_weight", "proxy_partitions",
                  "partial_fc_rate")
# How the run evaluated: taken from the record when not given, and free to change.
EVAL_SETTINGS = ("images_per_identity", "eval_protocol", "eval_flip", "far_target",
                 "eval_batch_size", "grayscale")


class RecordMismatchError(ValueError):
    """A flag contradicts the recorded settings of the run in model_dir."""


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


def trains(mode):
    """Whether ``mode`` trains, and so writes the record of the run."""
    return mode in ("train", "train_and_evaluate")


def read_recorded_params(model_dir):
    """The params.json of the run in ``model_dir`` (dict), or None when there is none."""
    if not model_dir:
        return None
    path = os.path.join(model_dir, PARAMS_NAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as fh:
        try:
            recorded = json.load(fh)
        except ValueError:
            return None
    return recorded if isinstance(recorded, dict) else None


def model_settings():
    """The settings that make the network: :data:`MODEL_SETTINGS` and every head's declared
    options (``--subcenters`` changes the proxies' shape)."""
    return MODEL_SETTINGS + tuple(heads.declared_options())


def _same(given, recorded):
    if isinstance(given, float) or isinstance(recorded, float):
        try:
            return abs(float(given) - float(recorded)) <= 1e-9 * max(1.0, abs(float(recorded)))
        except (TypeError, ValueError):
            return False
    return given == recorded


def apply_recorded_settings(values, given, recorded, model_dir):
    """``values`` (flag values) with the recorded run's model and evaluation settings filled in
    where the command line gave none (``given``: names set on it, flagfiles included).

    Raises :class:`RecordMismatchError` (one line, both values) when a given flag contradicts a
    recorded model setting. Keys the record lacks (older runs) are left as given.
    """
    values = dict(values)
    source = os.path.join(model_dir, PARAMS_NAME)
    model = model_settings()
    for name in model + EVAL_SETTINGS:
        if name not in recorded or name not in values:
            continue
        if name not in given:
            values[name] = recorded[name]
        elif name in model and recorded[name] is not None and values[name] is not None \
                and not _same(values[name], recorded[name]):
            raise RecordMismatchError(
                f"--{name}={values[name]} contradicts the run's recorded --{name}="
                f"{recorded[name]} ({source}): drop the flag to use the run's setting, or "
                "train a new run in another --model_dir")
    if "eval_records" in values and not values["eval_records"] and values["mode"] == "evaluate":
        values["eval_records"] = recorded.get("eval_records")
    return values


def program_flags_text(flag_list):
    """flags.txt content: one ``--name=value`` line per flag of the program (absl's own, such
    as ``--test_tmpdir`` or ``--stderrthreshold``, are not the run's settings)."""
    return "".join(flag.serialize() + "\n" for flag in sorted(flag_list, key=lambda f: f.name)
                   if flag.value is not None)


def record_run(params, flags_text):
    """A training run's record: its flags (flags.txt), params.json (``params``, the run's
    ``training.run_spec.RunSpec``, which evaluate/export load back with
    ``RunSpec.from_run_dir``), and its line in runs.jsonl (TF version, git revision). Other
    modes only add their line: see :func:`log_run`."""
    model_dir = params["model_dir"]
    tf.io.gfile.makedirs(model_dir)
    # gfile, not open(): model_dir may be an object store (ModelArts --train_url, gs://, s3://).
    with tf.io.gfile.GFile(os.path.join(model_dir, FLAGS_NAME), "w") as fh:
        fh.write(flags_text)
    params.to_json_file(os.path.join(model_dir, PARAMS_NAME))
    log_run(params)


def log_run(params):
    """Append this run's line to runs.jsonl (mode, time, TF and Python versions, git revision,
    argv)."""
    model_dir = params["model_dir"]
    tf.io.gfile.makedirs(model_dir)
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
