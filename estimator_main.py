"""Train, evaluate and export Circle-loss face embeddings with tf.estimator.

    python estimator_main.py --mode=train_and_evaluate \\
        --train_records=records/train --eval_records=records/pairs --model_dir=runs/r50

Modes: ``train``, ``evaluate`` (LFW-style verification of a checkpoint: eval/report.json and
eval/roc.png), ``train_and_evaluate`` (train, evaluate on new checkpoints, export the best model
by verification accuracy and the latest), ``export`` (checkpoint -> SavedModel + frozen .pb).

This file is thin on purpose: flags -> one validated params dict -> input_fns, model_fn and
estimator from their builders -> mode dispatch. The model never reads flags.
"""

import errno
import json
import os
import platform
import re
import subprocess
import sys
import time

if __package__ in (None, ""):  # `python estimator_main.py` from anywhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from data_tools import input_fns, manifest  # noqa: E402
from export import eval_metrics, exporters, freeze, report, serving  # noqa: E402
from model import backbones, estimator_factory, heads, model_fn, optimization  # noqa: E402

MODES = ("train", "evaluate", "train_and_evaluate", "export")
EVAL_NAME = "lfw"

FLAGS = flags.FLAGS

# Data and output.
flags.DEFINE_enum("mode", "train_and_evaluate", MODES, "What to run.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, exports and reports go here; "
                    "an existing checkpoint is resumed.")
flags.DEFINE_string("train_records", None, "Directory of training image records "
                    "(make_tfrecords.py output, with manifest.json).")
flags.DEFINE_string("eval_records", None, "Directory of verification pair records "
                    "(make_tfrecords.py --pairs output).")
flags.DEFINE_string("data_url", None, "ModelArts-style dataset root: train_records defaults to "
                    "DATA_URL/train and eval_records to DATA_URL/pairs.")
flags.DEFINE_string("train_url", None, "ModelArts-style output location: model_dir defaults to it.")
# Network and head.
flags.DEFINE_enum("backbone", "iresnet50", sorted(backbones.BACKBONES), "Backbone network.")
flags.DEFINE_enum("head", "circle", sorted(heads.HEADS), "Loss head.")
flags.DEFINE_integer("embedding_size", 512, "Embedding dimension.")
flags.DEFINE_integer("image_size", None, "Network input side; default: the backbone's (112).")
flags.DEFINE_float("dropout_rate", 0.0, "Dropout before the embedding layer (iresnet).")
flags.DEFINE_float("margin", None, "Margin m (Circle: 0.25; cosface 0.35; arcface 0.5).")
flags.DEFINE_float("gamma", None, "Circle scale gamma (paper's face setting: 256).")
flags.DEFINE_float("scale", 64.0, "Scale s of the softmax, cosface and arcface heads.")
flags.DEFINE_float("class_weight", 1.0, "circle_combined: weight of the class-level loss.")
flags.DEFINE_float("pair_weight", 1.0, "circle_combined: weight of the pair-level loss.")
flags.DEFINE_integer("images_per_identity", 0, "K of P×K batches (0: plain shuffling). "
                     "Needed by circle_pair and circle_combined.")
flags.DEFINE_integer("proxy_partitions", 1, "Split the class proxies into this many variables.")
# Optimisation.
flags.DEFINE_integer("batch_size", 128, "Global training batch size.")
flags.DEFINE_integer("train_steps", None, "Total training steps (or use --train_epochs).")
flags.DEFINE_float("train_epochs", None, "Total training epochs over the training records.")
flags.DEFINE_enum("optimizer", "momentum", list(optimization.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("learning_rate", 0.1, "Base learning rate (after warm-up).")
flags.DEFINE_float("momentum", 0.9, "Momentum.")
flags.DEFINE_float("weight_decay", 5e-4, "Weight decay on kernels and proxies.")
flags.DEFINE_enum("schedule", "piecewise", list(optimization.SCHEDULES), "Learning rate schedule.")
flags.DEFINE_list("decay_boundaries", ["0.5", "0.7", "0.9"],
                  "piecewise: fractions of the total steps where the rate is divided.")
flags.DEFINE_float("decay_factor", 0.1, "piecewise: factor applied at each boundary.")
flags.DEFINE_integer("warmup_steps", None, "Linear warm-up steps (default: 2%% of training).")
# Input.
flags.DEFINE_bool("random_flip", True, "Random horizontal flips in training.")
flags.DEFINE_bool("random_crop", False, "Random crops (padding 8) in training.")
flags.DEFINE_float("brightness_delta", 0.0, "Random brightness shift (0..255 scale).")
flags.DEFINE_float("min_crop_scale", 1.0, "Random scale crops: box side in [this, 1] of the "
                   "stored face, aspect ratio within 1.1 (1: off).")
flags.DEFINE_float("contrast_delta", 0.0, "Random contrast factor in [1 - d, 1 + d] (0: off).")
flags.DEFINE_integer("shuffle_buffer", 10000, "Records held for shuffling.")
flags.DEFINE_integer("seed", 0, "Seed of shuffling, augmentation and initialisation.")
# Evaluation and export.
flags.DEFINE_integer("eval_batch_size", 64, "Pairs per eval batch (the last one is padded).")
flags.DEFINE_bool("eval_flip", True, "Flip test-time augmentation in verification.")
flags.DEFINE_float("far_target", 1e-3, "FAR of the VAL@FAR metric.")
flags.DEFINE_integer("eval_throttle_secs", 60, "Minimum seconds between evaluations.")
flags.DEFINE_integer("exports_to_keep", 3, "SavedModels kept by each exporter.")
flags.DEFINE_string("checkpoint_path", None, "evaluate/export: this checkpoint, not the latest.")
flags.DEFINE_string("warm_start_from", None, "Initialise a fresh run from this checkpoint.")
# Devices and precision.
flags.DEFINE_enum("device", "cpu", list(estimator_factory.DEVICES), "cpu, gpu or npu (Ascend).")
flags.DEFINE_enum("precision", "fp32", list(estimator_factory.PRECISIONS),
                  "fp32; bf16 (CPU: backbone in bfloat16, head and loss float32); fp16 (GPU "
                  "rewrite, loss scaling).")
flags.DEFINE_enum("npu_precision_mode", "allow_mix_precision",
                  list(estimator_factory.NPU_PRECISION_MODES), "Ascend precision_mode.")
flags.DEFINE_integer("iterations_per_loop", 100, "Ascend: steps per device loop.")
flags.DEFINE_enum("distribution", "none", list(estimator_factory.DISTRIBUTIONS),
                  "mirrored: synchronous data parallelism over this host's devices (the global "
                  "--batch_size is split across them). Several hosts: set TF_CONFIG instead.")
flags.DEFINE_integer("num_gpus", 0, "GPUs to mirror over; more than 1 implies "
                     "--distribution=mirrored (needs --device=gpu).")
flags.DEFINE_integer("num_cpu_devices", 1, "--device=cpu: split the host into this many CPU "
                     "devices, mirrored with --distribution=mirrored (stands in for GPUs).")
flags.DEFINE_integer("save_checkpoints_steps", 500, "Checkpoint (and eval) interval.")
flags.DEFINE_integer("save_summary_steps", 100, "Summary interval.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept.")
flags.DEFINE_integer("log_every_n_steps", 100, "Logging interval.")
flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0: all cores).")
flags.DEFINE_integer("inter_op_threads", 0, "TF inter-op threads (0: TF's default).")
flags.DEFINE_bool("progress", True, "Show a progress bar while training.")
flags.DEFINE_bool("check_finite_loss", True, "Stop on a NaN/Inf loss, naming the step.")
flags.DEFINE_bool("verify_records", True, "Check every shard's size and sha256 against its "
                  "manifest before any graph is built (local paths; hashing reads every byte).")


class ParamsError(ValueError):
    """Inconsistent settings, reported before any graph is built."""


def _require(condition, message):
    if not condition:
        raise ParamsError(message)


def flag_values():
    """This program's flags (not absl's own) as a plain dict."""
    return {f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])}


def build_params(values):
    """Validate the flag values once and return the run's params dict."""
    p = dict(values)
    if p["data_url"]:
        p["train_records"] = p["train_records"] or os.path.join(p["data_url"], "train")
        p["eval_records"] = p["eval_records"] or os.path.join(p["data_url"], "pairs")
    p["model_dir"] = p["model_dir"] or p["train_url"]
    _require(p["model_dir"], "--model_dir (or --train_url) is required")
    mode = p["mode"]
    needs_train = mode in ("train", "train_and_evaluate")
    needs_eval = mode in ("evaluate", "train_and_evaluate")
    if needs_train:
        _require(p["train_records"], "--mode=%s needs --train_records (or --data_url)" % mode)
    if needs_eval:
        _require(p["eval_records"], "--mode=%s needs --eval_records: the pair records of "
                 "make_tfrecords.py --pairs" % mode)
    p["image_size"] = p["image_size"] or backbones.default_image_size(p["backbone"])
    try:
        backbones.check_image_size(p["backbone"], p["image_size"])
    except ValueError as e:
        raise ParamsError(str(e)) from None
    _require(p["batch_size"] > 0 and p["eval_batch_size"] > 0, "batch sizes must be positive")
    k = p["images_per_identity"]
    if heads.HEADS[p["head"]].needs_pk_batches:
        _require(k >= 2, "--head=%s needs P×K batches: set --images_per_identity=K >= 2 "
                 "(e.g. 4)" % p["head"])
    if k:
        _require(k >= 2, "--images_per_identity=%d: K must be at least 2 (0 turns P×K batches "
                 "off)" % k)
        _require(p["batch_size"] % k == 0,
                 "--batch_size=%d must be a multiple of --images_per_identity=%d"
                 % (p["batch_size"], k))
    p["decay_boundaries"] = tuple(float(b) for b in p["decay_boundaries"])
    _require(0.0 < p["min_crop_scale"] <= 1.0, "--min_crop_scale must be in (0, 1], got %g"
             % p["min_crop_scale"])
    _require(0.0 <= p["contrast_delta"] < 1.0, "--contrast_delta must be in [0, 1), got %g"
             % p["contrast_delta"])

    if needs_train or mode == "export" or needs_eval:
        records = p["train_records"]
        if records:
            info = manifest.read_manifest(records)
            _require(info.get("kind") == "images", "--train_records=%s holds %s records, not "
                     "training images" % (records, info.get("kind")))
            p["num_classes"] = int(info["num_classes"])
            p["num_train_images"] = int(info["num_images"])
            if needs_train:
                _verify(records, p["verify_records"])
            labels_path = os.path.join(records, "labels.txt")
            if tf.io.gfile.exists(labels_path):
                with tf.io.gfile.GFile(labels_path) as fh:
                    lines = [line for line in fh.read().splitlines() if line]
                _require(len(lines) == p["num_classes"],
                         "%s lists %d identities but the manifest says %d classes"
                         % (labels_path, len(lines), p["num_classes"]))
        else:
            p["num_classes"] = _num_classes_from_run(p["model_dir"])
    if needs_train:
        _require(bool(p["train_steps"]) != bool(p["train_epochs"]),
                 "give exactly one of --train_steps and --train_epochs")
        if p["train_epochs"]:
            p["train_steps"] = max(1, int(round(
                p["train_epochs"] * p["num_train_images"] / p["batch_size"])))
        _require(p["train_steps"] > 0, "--train_steps must be positive")
        if p["warmup_steps"] is None:
            p["warmup_steps"] = int(0.02 * p["train_steps"])
        _require(p["warmup_steps"] < p["train_steps"], "--warmup_steps must be below the total")
    else:
        p["train_steps"] = p["train_steps"] or 1
        p["warmup_steps"] = p["warmup_steps"] or 0
    if needs_eval:
        info = manifest.read_manifest(p["eval_records"])
        _require(info.get("kind") == "pairs", "--eval_records=%s holds %s records, not pairs"
                 % (p["eval_records"], info.get("kind")))
        p["num_pairs"] = int(info["num_pairs"])
        p["num_folds"] = int(info.get("num_folds", 10))
        _verify(p["eval_records"], p["verify_records"])
    # What the eval records' pixels went through: the serving graph and the exports carry it.
    p["eval_transform"] = manifest.conversion_transform(info) if needs_eval else None
    if mode == "export" and p["eval_records"]:
        p["eval_transform"] = manifest.conversion_transform(
            manifest.read_manifest(p["eval_records"]))
    if p["precision"] == "bf16":
        _require(p["device"] == "cpu", "--precision=bf16 is for CPUs (use fp16 on GPU, "
                 "--npu_precision_mode on Ascend)")
    if p["precision"] == "fp16":
        _require(p["device"] == "gpu", "--precision=fp16 is for GPUs")
    _validate_distribution(p)
    # A missing device stack (npu_bridge, a TF without the oneDNN bf16 rewrite) is a setting to
    # change too: report it here, before model_dir is written, not as a traceback mid-run.
    estimator_factory.session_config(p["device"], p["precision"])
    if p["device"] == "npu":
        estimator_factory.load_npu_api()
    return p


def _verify(records_dir, enabled):
    """A damaged or cut-short shard is named now, not met as a DataLossError mid-training."""
    if enabled and "://" not in records_dir:  # object stores: the copy tool checks, not us
        manifest.verify_shards(records_dir)


def _validate_distribution(p):
    """Resolve --distribution/--num_gpus/--num_cpu_devices into p['num_replicas']."""
    _require(p["num_gpus"] >= 0, "--num_gpus must not be negative")
    _require(p["num_cpu_devices"] >= 1, "--num_cpu_devices must be at least 1")
    if p["num_gpus"] > 1:
        p["distribution"] = "mirrored"
    if p["num_gpus"]:
        _require(p["device"] == "gpu", "--num_gpus=%d needs --device=gpu" % p["num_gpus"])
    if p["num_cpu_devices"] > 1:
        _require(p["device"] == "cpu", "--num_cpu_devices is for --device=cpu")
    p["num_replicas"] = 1
    if p["distribution"] == "mirrored":
        _require(p["device"] != "npu", "--distribution=mirrored is for GPUs and CPUs; Ascend "
                 "devices train together through HCCL (RANK_ID, RANK_SIZE, RANK_TABLE_FILE)")
        if p["device"] == "gpu":
            _require(p["num_gpus"] >= 1, "--distribution=mirrored --device=gpu needs "
                     "--num_gpus=N")
            p["num_replicas"] = p["num_gpus"]
        else:
            _require(p["num_cpu_devices"] >= 2, "--distribution=mirrored --device=cpu needs "
                     "--num_cpu_devices=N >= 2")
            p["num_replicas"] = p["num_cpu_devices"]
        n = p["num_replicas"]
        _require(p["batch_size"] % n == 0, "--batch_size=%d (global) must split evenly over %d "
                 "replicas" % (p["batch_size"], n))
        k = p["images_per_identity"]
        _require(not k or (p["batch_size"] // n) % k == 0,
                 "the per-replica batch %d must be a multiple of --images_per_identity=%d"
                 % (p["batch_size"] // n, k))
        _require(p["proxy_partitions"] == 1, "--proxy_partitions is for parameter servers "
                 "(TF_CONFIG); a mirrored run keeps one proxy matrix per device")


def _num_classes_from_run(model_dir):
    """num_classes recorded by the training run (evaluate/export without --train_records)."""
    path = os.path.join(model_dir, "params.json")
    _require(tf.io.gfile.exists(path), "no --train_records and no %s: cannot size the head"
             % path)
    with tf.io.gfile.GFile(path) as fh:
        return int(json.load(fh)["num_classes"])


def _git_revision():
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
            stderr=subprocess.DEVNULL).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _writes_run_record():
    """Under TF_CONFIG only the chief writes flags.txt, params.json and runs.jsonl: every task
    shares model_dir, and concurrent read-then-write of runs.jsonl would lose lines."""
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    return task.get("type", "chief") in ("chief", "master")


def record_run(params):
    """Flags of this run (flags.txt), params.json, and one line per run in runs.jsonl with the
    TF version and git revision."""
    model_dir = params["model_dir"]
    tf.io.gfile.makedirs(model_dir)
    # gfile, not open(): model_dir may be an object store (ModelArts --train_url, gs://, s3://).
    with tf.io.gfile.GFile(os.path.join(model_dir, "flags.txt"), "w") as fh:
        fh.write(FLAGS.flags_into_string())
    with tf.io.gfile.GFile(os.path.join(model_dir, "params.json"), "w") as fh:
        json.dump(params, fh, indent=2, sort_keys=True)
    info = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "mode": params["mode"],
            "tensorflow": tf.__version__, "python": platform.python_version(),
            "git_revision": _git_revision(), "argv": sys.argv}
    runs_path = os.path.join(model_dir, "runs.jsonl")
    history = ""
    if tf.io.gfile.exists(runs_path):
        with tf.io.gfile.GFile(runs_path) as fh:
            history = fh.read()
    with tf.io.gfile.GFile(runs_path, "w") as fh:
        fh.write(history + json.dumps(info) + "\n")


def build_model_fn(p, optimizer_wrapper=None):
    metrics_fn = None
    if p.get("num_pairs"):
        metrics_fn = eval_metrics.verification_metrics_fn_builder(
            p["num_pairs"], n_folds=p["num_folds"], far_target=p["far_target"], prefix=EVAL_NAME)
    return model_fn.model_fn_builder(
        backbone=p["backbone"], head=p["head"], num_classes=p["num_classes"],
        embedding_size=p["embedding_size"], dropout_rate=p["dropout_rate"],
        margin=p["margin"], gamma=p["gamma"], scale=p["scale"],
        class_weight=p["class_weight"], pair_weight=p["pair_weight"],
        proxy_partitions=p["proxy_partitions"], optimizer=p["optimizer"],
        learning_rate=p["learning_rate"], momentum=p["momentum"],
        weight_decay=p["weight_decay"], total_steps=p["train_steps"],
        warmup_steps=p["warmup_steps"], schedule=p["schedule"],
        decay_boundaries=p["decay_boundaries"], decay_factor=p["decay_factor"],
        eval_flip=p["eval_flip"], eval_metrics_fn=metrics_fn,
        optimizer_wrapper=optimizer_wrapper, precision=p["precision"],
        check_finite_loss=p["check_finite_loss"], log_every_n_steps=p["log_every_n_steps"],
        show_progress=p["progress"], model_dir=p["model_dir"])


def build_estimator(p):
    wrapper = estimator_factory.optimizer_wrapper(p["device"], p["npu_precision_mode"])
    strategy = None
    if p["mode"] in ("train", "train_and_evaluate"):
        strategy = estimator_factory.train_distribution(p["distribution"], p["device"],
                                                        p["num_replicas"])
    return estimator_factory.build_estimator(
        build_model_fn(p, wrapper), p["model_dir"], device=p["device"],
        precision=p["precision"], npu_precision_mode=p["npu_precision_mode"],
        iterations_per_loop=p["iterations_per_loop"],
        save_checkpoints_steps=p["save_checkpoints_steps"],
        save_summary_steps=p["save_summary_steps"], keep_checkpoint_max=p["keep_checkpoint_max"],
        log_step_count_steps=p["log_every_n_steps"], tf_random_seed=p["seed"],
        warm_start_from=p["warm_start_from"], intra_op_threads=p["intra_op_threads"],
        inter_op_threads=p["inter_op_threads"], train_distribute=strategy,
        num_cpu_devices=p["num_cpu_devices"])


def train_input_fn(p):
    return input_fns.train_input_fn_builder(
        p["train_records"], image_size=p["image_size"], random_flip=p["random_flip"],
        random_crop=p["random_crop"], brightness_delta=p["brightness_delta"],
        min_crop_scale=p["min_crop_scale"], contrast_delta=p["contrast_delta"],
        shuffle_buffer=p["shuffle_buffer"], images_per_identity=p["images_per_identity"] or None,
        seed=p["seed"], num_classes=p["num_classes"], batch_size=p["batch_size"])


def eval_input_fn(p):
    return input_fns.pairs_input_fn_builder(p["eval_records"], image_size=p["image_size"],
                                            flip_tta=p["eval_flip"], num_pairs=p["num_pairs"],
                                            batch_size=p["eval_batch_size"])


def write_eval_report(p, eval_result, started=None):
    """report.json + roc.png of one evaluation; ``started`` (time.time() at the start of this
    invocation) records its wall time, training and evaluations included, as extra.wall_seconds."""
    metrics = eval_metrics.metrics_from_eval_result(eval_result, EVAL_NAME)
    extra = {"mode": p["mode"]}
    if started is not None:
        extra["wall_seconds"] = round(time.time() - started, 1)
    paths = report.write_report(metrics, os.path.join(p["model_dir"], "eval"), extra=extra)
    print("LFW-style verification at step %s: accuracy %.4f ± %.4f, VAL@FAR=%g %.4f, AUC %.4f, "
          "EER %.4f (threshold %.2f) -> %s" % (
              metrics.get("global_step"), metrics["accuracy"], metrics["accuracy_std"],
              p["far_target"], metrics["val"], metrics["auc"], metrics["eer"],
              metrics["threshold"], paths[0]))
    return metrics


def freeze_export(p, saved_model_dir):
    name = os.path.basename(os.path.normpath(saved_model_dir))
    path = os.path.join(p["model_dir"], "frozen", "embedding_%s.pb" % name)
    # Input at the eval records' size: the evaluation's own path, no upsampling of a smaller input.
    size = serving.record_size_of(p.get("eval_transform")) or p["image_size"]
    freeze.freeze_saved_model(saved_model_dir, path, image_size=size)
    print("frozen graph (input 'input' %dx%d, output 'embedding'): %s" % (size, size, path))
    return path


def latest_export(export_base):
    if not tf.io.gfile.isdir(export_base):
        return None
    versions = sorted((d for d in tf.io.gfile.listdir(export_base) if d.strip("/").isdigit()),
                      key=lambda d: int(d.strip("/")))
    return os.path.join(export_base, versions[-1].strip("/")) if versions else None


_NON_FINITE = re.compile(re.escape(model_fn.NON_FINITE_LOSS_MESSAGE) + r"\]\s*\[(\d+)\]")


def run_mode(p):
    started = time.time()
    estimator = build_estimator(p)
    receiver = serving.serving_input_receiver_fn_builder(p["image_size"], p.get("eval_transform"))
    mode = p["mode"]
    if mode == "train":
        estimator.train(train_input_fn(p), max_steps=p["train_steps"])
    elif mode == "evaluate":
        result = estimator.evaluate(eval_input_fn(p), name=EVAL_NAME,
                                    checkpoint_path=p["checkpoint_path"])
        write_eval_report(p, result)
    elif mode == "train_and_evaluate":
        train_spec = tf.estimator.TrainSpec(train_input_fn(p), max_steps=p["train_steps"])
        eval_spec = tf.estimator.EvalSpec(
            eval_input_fn(p), steps=None, name=EVAL_NAME,
            exporters=exporters.build_exporters(receiver, EVAL_NAME, p["exports_to_keep"],
                                                transform=p.get("eval_transform")),
            start_delay_secs=0, throttle_secs=p["eval_throttle_secs"])
        outcome = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
        result = outcome[0] if outcome else None
        # Under TF_CONFIG the estimator returns None on every task. Training tasks leave
        # checkpoints; the evaluator alone reports (its last evaluation, of the final
        # checkpoint, is repeated to get the numbers) and freezes what its exporters wrote.
        if estimator.config.task_type == "evaluator":
            result = result or estimator.evaluate(eval_input_fn(p), name=EVAL_NAME)
        elif estimator.config.cluster_spec.jobs:
            return
        if result:
            write_eval_report(p, result, started)
        best = latest_export(os.path.join(p["model_dir"], "export", "best"))
        if best:
            print("best SavedModel: %s" % best)
            freeze_export(p, best)
    elif mode == "export":
        path = exporters.export_checkpoint(
            estimator, os.path.join(p["model_dir"], "export", "manual"), receiver,
            checkpoint_path=p["checkpoint_path"], transform=p.get("eval_transform"))
        print("SavedModel: %s" % path)
        freeze_export(p, path)
    else:
        raise ValueError("unknown mode %r" % mode)


def _silence_deprecation_warnings():
    """The compat.v1 estimator stack warns about its own deprecation on every call; users of this
    CLI cannot act on those lines, and they bury the ones they can."""
    try:
        from tensorflow.python.util import deprecation  # noqa: PLC0415
    except ImportError:
        return
    deprecation._PRINT_DEPRECATION_WARNINGS = False


def main(argv):
    # TensorFlow's logger has its own handler; without this every line prints twice under absl.
    tf.get_logger().propagate = False
    # --verbosity (absl) governs TensorFlow's logger too: -1 leaves warnings and the progress bar.
    tf.get_logger().setLevel(logging.get_absl_logger().getEffectiveLevel())
    _silence_deprecation_warnings()
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    try:
        params = build_params(flag_values())
    except (ParamsError, manifest.ManifestError, estimator_factory.DeviceUnavailableError) as e:
        raise app.UsageError(str(e)) from None
    if _writes_run_record():
        record_run(params)
    try:
        run_mode(params)
    except tf.errors.InvalidArgumentError as e:
        match = _NON_FINITE.search(e.message)
        if not match:
            raise
        latest = tf.train.latest_checkpoint(params["model_dir"])
        logging.error("training stopped: the loss became NaN/Inf at global step %s; no update "
                      "was applied. Last good checkpoint: %s. Lower --learning_rate or --gamma, "
                      "or lengthen --warmup_steps.", match.group(1), latest)
        sys.exit(1)
    except (tf.errors.OpError, OSError) as e:
        # Out of memory is a ResourceExhaustedError too: only a full disk is handled here.
        message = getattr(e, "message", None) or str(e)
        if getattr(e, "errno", None) != errno.ENOSPC and "No space left on device" not in message:
            raise
        logging.error("training stopped: cannot write to %s (No space left on device). Last "
                      "good checkpoint: %s. Free space and re-run the same command to resume.",
                      params["model_dir"], tf.train.latest_checkpoint(params["model_dir"]))
        sys.exit(1)


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
