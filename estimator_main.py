"""Train, evaluate and export Circle-loss face embeddings with tf.estimator.

    python estimator_main.py --mode=train_and_evaluate \\
        --train_records=records/train --eval_records=records/pairs --model_dir=runs/r50

Modes: ``train``, ``evaluate`` (LFW-style verification of a checkpoint: eval/report.json and
eval/roc.png), ``train_and_evaluate`` (train, evaluate on new checkpoints, export the best model
by verification accuracy and the latest), ``export`` (checkpoint -> SavedModel + frozen .pb).

This file is thin on purpose: flags -> one validated params dict -> input_fns, model_fn and
estimator from their builders -> mode dispatch. The model never reads flags.
"""

import collections
import errno
import functools
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import time

if __package__ in (None, ""):  # `python estimator_main.py` from anywhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    # TensorFlow's C++ banners (oneDNN, CPU features) are noise to a user; --verbosity and an
    # explicit TF_CPP_MIN_LOG_LEVEL still win. Set before TensorFlow is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from data_tools import input_config, input_fns, manifest  # noqa: E402
from export import (  # noqa: E402
    eval_metrics,
    eval_sets,
    export_dirs,
    exporters,
    freeze,
    report,
    retrieval_eval,
    serving,
)
from model import backbones, estimator_factory, heads, hooks, model_fn, optimization  # noqa: E402
from model import config as model_config  # noqa: E402

MODES = ("train", "evaluate", "train_and_evaluate", "export")
EVAL_NAME = "lfw"
SETS_EVAL_NAME = "verification"  # several named sets: model_dir/eval_verification
EVAL_PROTOCOLS = ("verification", "retrieval")

FLAGS = flags.FLAGS


def define_flags(fv=flags.FLAGS):
    """Define this program's flags on ``fv`` (absl's global FLAGS by default); idempotent."""
    if "mode" in fv:
        return fv
    bool_flag = functools.partial(flags.DEFINE_bool, flag_values=fv)
    enum_flag = functools.partial(flags.DEFINE_enum, flag_values=fv)
    float_flag = functools.partial(flags.DEFINE_float, flag_values=fv)
    integer_flag = functools.partial(flags.DEFINE_integer, flag_values=fv)
    list_flag = functools.partial(flags.DEFINE_list, flag_values=fv)
    string_flag = functools.partial(flags.DEFINE_string, flag_values=fv)
    # Data and output.
    enum_flag("mode", "train_and_evaluate", MODES, "What to run.")
    string_flag("model_dir", None, "Checkpoints, summaries, exports and reports go here; "
                "an existing checkpoint is resumed.")
    string_flag("train_records", None, "Directory of training image records "
                "(make_tfrecords.py output, with manifest.json).")
    string_flag("eval_records", None, "Directory of verification pair records "
                "(make_tfrecords.py --pairs output), or several named sets evaluated at every "
                "checkpoint: lfw=records/lfw,cfp_fp=records/cfp_fp (metrics NAME/accuracy, ...; "
                "a plain directory is the set 'lfw').")
    string_flag("data_url", None, "ModelArts-style dataset root: train_records defaults to "
                "DATA_URL/train and eval_records to DATA_URL/pairs.")
    string_flag("train_url", None, "ModelArts-style output location: model_dir defaults to it.")
    # Network and head.
    enum_flag("backbone", "iresnet50", sorted(backbones.BACKBONES), "Backbone network.")
    enum_flag("head", "circle", sorted(heads.HEADS), "Loss head.")
    integer_flag("embedding_size", 512, "Embedding dimension.")
    integer_flag("image_size", None, "Network input side; default: the backbone's (112).")
    float_flag("dropout_rate", 0.0, "Dropout before the embedding layer (iresnet).")
    float_flag("margin", None, "Margin m (Circle: 0.25; cosface 0.35; arcface 0.5).")
    float_flag("gamma", None, "Circle scale gamma (paper's face setting: 256).")
    float_flag("scale", 64.0, "Scale s of the softmax, cosface and arcface heads.")
    float_flag("class_weight", 1.0, "circle_combined: weight of the class-level loss.")
    float_flag("pair_weight", 1.0, "circle_combined: weight of the pair-level loss.")
    integer_flag("images_per_identity", 0, "K of P×K batches (0: plain shuffling). "
                 "Needed by circle_pair and circle_combined.")
    integer_flag("proxy_partitions", 1, "Split the class proxies into this many variables.")
    float_flag("partial_fc_rate", 1.0, "Partial FC, in (0, 1]: each training step uses the "
               "batch's classes and a uniform sample of the others, ceil(rate × classes) in "
               "all, with sparse proxy updates (class-level heads; 1: every class).")
    # Optimisation.
    integer_flag("batch_size", 128, "Global training batch size.")
    integer_flag("train_steps", None, "Total training steps (or use --train_epochs).")
    float_flag("train_epochs", None, "Total training epochs over the training records.")
    enum_flag("optimizer", "momentum", list(optimization.OPTIMIZERS), "Optimizer.")
    float_flag("learning_rate", 0.1, "Base learning rate (after warm-up).")
    float_flag("momentum", 0.9, "Momentum.")
    float_flag("weight_decay", 5e-4, "Weight decay on kernels and proxies.")
    enum_flag("schedule", "piecewise", list(optimization.SCHEDULES), "Learning rate schedule.")
    list_flag("decay_boundaries", ["0.5", "0.7", "0.9"],
              "piecewise: fractions of the total steps where the rate is divided.")
    float_flag("decay_factor", 0.1, "piecewise: factor applied at each boundary.")
    integer_flag("warmup_steps", None, "Linear warm-up steps (default: 2%% of training).")
    # Input.
    bool_flag("random_flip", True, "Random horizontal flips in training.")
    bool_flag("random_crop", False, "Random crops (padding 8) in training.")
    float_flag("brightness_delta", 0.0, "Random brightness shift (0..255 scale).")
    float_flag("min_crop_scale", 1.0, "Random scale crops: box side in [this, 1] of the "
               "stored face, aspect ratio within 1.1 (1: off).")
    float_flag("contrast_delta", 0.0, "Random contrast factor in [1 - d, 1 + d] (0: off).")
    integer_flag("shuffle_buffer", 10000, "Records held for shuffling.")
    integer_flag("seed", 0, "Seed of shuffling, augmentation and initialisation.")
    # Evaluation and export.
    integer_flag("eval_batch_size", 64, "Pairs per eval batch (the last one is padded).")
    bool_flag("eval_flip", True, "Flip test-time augmentation in verification.")
    float_flag("far_target", 1e-3, "FAR of the VAL@FAR metric.")
    enum_flag("eval_protocol", "verification", list(EVAL_PROTOCOLS),
              "verification: LFW-style 1:1 on pair records (make_tfrecords.py --pairs); "
              "retrieval: Recall@K, R-precision and MAP@R on image records of held-out "
              "identities (re-identification, fine-grained retrieval).")
    integer_flag("eval_throttle_secs", 60, "Minimum seconds between evaluations.")
    integer_flag("exports_to_keep", 3, "SavedModels kept by each exporter.")
    string_flag("best_metric", None, "What the best exporter keeps the highest of: "
                "NAME/accuracy, NAME/val_far1e-3 or NAME/auc of an --eval_records set, or "
                "mean/accuracy (etc.) over several sets. Default: the first set's accuracy.")
    string_flag("checkpoint_path", None, "evaluate/export: this checkpoint, not the latest.")
    string_flag("warm_start_from", None, "Initialise a fresh run from this checkpoint (a file "
                "prefix or a model_dir): fine-tuning.")
    enum_flag("warm_start_vars", "auto", ["auto", "backbone", "all"],
              "What --warm_start_from initialises: the backbone (and neck), plus the head when "
              "its proxies have the new shape (auto); the backbone only; or all (the class "
              "count must match).")
    # Devices and precision.
    enum_flag("device", "cpu", list(estimator_factory.DEVICES), "cpu, gpu or npu (Ascend).")
    enum_flag("precision", "fp32", list(estimator_factory.PRECISIONS),
              "fp32; bf16 (CPU: backbone in bfloat16, head and loss float32); fp16 (GPU "
              "rewrite, loss scaling).")
    enum_flag("npu_precision_mode", "allow_mix_precision",
              list(estimator_factory.NPU_PRECISION_MODES), "Ascend precision_mode.")
    integer_flag("iterations_per_loop", 100, "Ascend: steps per device loop.")
    enum_flag("distribution", "none", list(estimator_factory.DISTRIBUTIONS),
              "mirrored: synchronous data parallelism over this host's devices (the global "
              "--batch_size is split across them). multi_worker: the same across the worker "
              "processes TF_CONFIG lists (collective all-reduce; the global --batch_size is "
              "split across all replicas). TF_CONFIG alone (chief, worker, ps): asynchronous "
              "parameter-server training.")
    integer_flag("num_gpus", 0, "GPUs to mirror over; more than 1 implies "
                 "--distribution=mirrored (needs --device=gpu).")
    integer_flag("num_cpu_devices", 1, "--device=cpu: split the host into this many CPU "
                 "devices, mirrored with --distribution=mirrored (stands in for GPUs).")
    integer_flag("worker_timeout_secs", 600, "--distribution=multi_worker: a session run "
                 "(one step, or the start) that waits longer for the other workers fails the "
                 "worker with DeadlineExceeded instead of hanging (0: wait forever).")
    integer_flag("save_checkpoints_steps", 500, "Checkpoint (and eval) interval.")
    integer_flag("save_summary_steps", 100, "Summary interval.")
    integer_flag("keep_checkpoint_max", 5, "Checkpoints kept.")
    integer_flag("log_every_n_steps", 100, "Logging interval.")
    integer_flag("intra_op_threads", 0, "TF intra-op threads (0: all cores).")
    integer_flag("inter_op_threads", 0, "TF inter-op threads (0: TF's default).")
    bool_flag("progress", True, "Show a progress bar while training.")
    bool_flag("check_finite_loss", True, "Stop on a NaN/Inf loss, naming the step.")
    bool_flag("verify_records", True, "Check every shard's size and sha256 against its "
              "manifest before any graph is built (local paths; hashing reads every byte).")
    return fv


class ParamsError(ValueError):
    """Inconsistent settings, reported before any graph is built."""


def _require(condition, message):
    if not condition:
        raise ParamsError(message)


def flag_values():
    """This program's flags (not absl's own) as a plain dict."""
    return {f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])}


def build_params(values):
    """Validate the flag values once and return the run's params dict.

    Every setting is checked here, before anything is written: the typed configs of
    ``model.config`` (backbone, optimisation, runtime), ``data_tools.input_config`` (input) and
    the built head (``model.heads``) refuse bad values with one line. The dict holds the resolved
    values (the head's own default margin, the steps derived from epochs), JSON-ready for
    ``params.json``; :func:`build_configs` turns it into the configs the builders take.
    """
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
        _require(p["train_records"], f"--mode={mode} needs --train_records (or --data_url)")
    if needs_eval:
        _require(p["eval_records"], f"--mode={mode} needs --eval_records: the pair records of "
                 "make_tfrecords.py --pairs")
    _require(p["batch_size"] > 0 and p["eval_batch_size"] > 0, "batch sizes must be positive")
    k = p["images_per_identity"]
    if heads.HEADS[p["head"]].needs_pk_batches:
        _require(k >= 2, f"--head={p['head']} needs P×K batches: set "
                 "--images_per_identity=K >= 2 (e.g. 4)")
    if k:
        _require(k >= 2, f"--images_per_identity={k}: K must be at least 2 (0 turns P×K "
                 "batches off)")
        _require(p["batch_size"] % k == 0, f"--batch_size={p['batch_size']} must be a multiple "
                 f"of --images_per_identity={k}")
    p["decay_boundaries"] = tuple(float(b) for b in p["decay_boundaries"])
    p["num_workers"] = _multi_worker_task(p).num_workers if p["distribution"] == \
        "multi_worker" else 1
    runtime = _config(model_config.RuntimeConfig, **_fields(model_config.RuntimeConfig, p))
    p["distribution"], p["num_replicas"] = runtime.distribution, runtime.num_replicas
    _check_replicas(p)
    _read_records(p, needs_train, needs_eval)
    _resolve_steps(p, needs_train)
    configs = build_configs(p)  # every remaining setting, checked and resolved into p
    if p["warm_start_from"] and needs_train:
        p["warm_start_scopes"] = _warm_start_scopes(p, configs.head)
    # A missing device stack (npu_bridge, a TF without the oneDNN bf16 rewrite, no GPU) is a
    # setting to change too: report it here, before model_dir is written.
    estimator_factory.check_device(runtime)
    return p


def _multi_worker_task(p):
    """This process's task of a --distribution=multi_worker cluster, from TF_CONFIG."""
    _require(p["mode"] in ("train", "train_and_evaluate"), "--distribution=multi_worker is for "
             f"training; run --mode={p['mode']} without it (and without TF_CONFIG)")
    try:
        task = model_config.multi_worker_task(os.environ.get("TF_CONFIG"))
    except ValueError as e:
        raise ParamsError(str(e)) from None
    _require(task.task_type != "evaluator" or p["mode"] == "train_and_evaluate",
             "the evaluator task needs --mode=train_and_evaluate (--mode=train only trains)")
    return task


Configs = collections.namedtuple("Configs", ["backbone", "head", "optimization", "input",
                                             "runtime"])


def _fields(config_type, p):
    """The entries of ``p`` that ``config_type``'s constructor takes (derived fields aside)."""
    accepted = inspect.signature(config_type.__new__).parameters
    return {name: p[name] for name in config_type._fields if name in p and name in accepted}


def _config(config_type, **values):
    try:
        return config_type(**values)
    except ValueError as e:
        raise ParamsError(str(e)) from None


def build_configs(p):
    """The typed configs of a params dict; resolved values (image size, margin, gamma) are
    written back into ``p`` so that ``params.json`` records what the run uses."""
    backbone = _config(model_config.BackboneConfig, name=p["backbone"],
                       embedding_size=p["embedding_size"], image_size=p["image_size"],
                       dropout_rate=p["dropout_rate"], precision=p["precision"])
    p["image_size"] = backbone.image_size
    try:
        head = heads.build_head(p["head"], num_classes=p["num_classes"],
                                embedding_size=backbone.embedding_size, margin=p["margin"],
                                gamma=p["gamma"], scale=p["scale"],
                                class_weight=p["class_weight"], pair_weight=p["pair_weight"],
                                proxy_partitions=p["proxy_partitions"],
                                partial_fc_rate=p["partial_fc_rate"])
    except (ValueError, TypeError) as e:
        raise ParamsError(f"--head={p['head']}: {e}") from None
    p["margin"], p["gamma"] = head.margin, head.gamma
    if head.partial_fc and p["mode"] in ("train", "train_and_evaluate"):
        # Static shapes: a step's sample holds every class of the (per-replica) batch.
        batch = p["batch_size"] // max(p.get("num_replicas") or 1, 1)
        _require(batch <= head.num_sample or head.num_sample == head.num_classes,
                 f"--partial_fc_rate={p['partial_fc_rate']:g} keeps {head.num_sample} of "
                 f"{head.num_classes} classes per step, fewer than the {batch} examples of a "
                 "batch (which may all be different classes): raise --partial_fc_rate or lower "
                 "--batch_size")
    optimization_values = _fields(model_config.OptimizationConfig, p)
    optimization_values["total_steps"] = p["train_steps"]
    optimization = _config(model_config.OptimizationConfig, **optimization_values)
    input_values = _fields(input_config.InputConfig, p)
    input_values["images_per_identity"] = p["images_per_identity"] or None
    inputs = _config(input_config.InputConfig, **input_values)
    runtime = _config(model_config.RuntimeConfig, **_fields(model_config.RuntimeConfig, p))
    return Configs(backbone, head, optimization, inputs, runtime)


# Scopes of the variables a fine-tuning run may take over; optimizer slots (Momentum, Adam)
# start afresh. The head's proxies are [D, C] ([C, D] "class_proxies" under Partial FC): they
# carry over only between equal class counts and layouts.
_NO_SLOTS = r"(?!.*/(Momentum|Adam|Adam_1)$)"
BACKBONE_SCOPE = "backbone/" + _NO_SLOTS
HEAD_SCOPE = "head/" + _NO_SLOTS


def _checkpoint_shapes(path):
    try:
        return dict(tf.train.list_variables(path))
    except (tf.errors.OpError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ParamsError(f"--warm_start_from={path}: no readable checkpoint there ({reason})") \
            from None


def _warm_start_scopes(p, head):
    """Which variable scopes --warm_start_from initialises, checked against the checkpoint."""
    shapes = _checkpoint_shapes(p["warm_start_from"])
    _require(any(name.startswith("backbone/") for name in shapes),
             f"--warm_start_from={p['warm_start_from']} holds no backbone variables")
    # The checkpoint holds a partitioned matrix as one tensor of the full shape.
    name, shape = head.proxy_variable
    same_head = shapes.get("head/" + name) == shape
    old_classes = None
    if "head/proxies" in shapes:
        old_classes = shapes["head/proxies"][1]
    elif "head/class_proxies" in shapes:
        old_classes = shapes["head/class_proxies"][0]
    mode = p["warm_start_vars"]
    if mode == "all":
        _require(same_head or old_classes != head.num_classes, "--warm_start_vars=all: the "
                 f"checkpoint's proxies are not head/{name} {shape} (Partial FC, "
                 "--partial_fc_rate < 1, stores them class-major as head/class_proxies)")
        _require(same_head, "--warm_start_vars=all: the checkpoint's head has "
                 f"{old_classes} classes, this run {head.num_classes} (use "
                 "--warm_start_vars=auto or backbone to fine-tune on other identities)")
    if mode == "all" or (mode == "auto" and same_head):
        logging.info("warm start: backbone and head from %s", p["warm_start_from"])
        return [BACKBONE_SCOPE, HEAD_SCOPE]
    logging.info("warm start: backbone from %s (head starts afresh: %s -> %s classes)",
                 p["warm_start_from"], old_classes, head.num_classes)
    return [BACKBONE_SCOPE]


def _check_replicas(p):
    """The global batch splits over the replicas; per-replica P×K batches stay whole."""
    n = p["num_replicas"]
    if n > 1:
        _require(p["batch_size"] % n == 0, f"--batch_size={p['batch_size']} (global) must "
                 f"split evenly over {n} replicas")
        k = p["images_per_identity"]
        _require(not k or (p["batch_size"] // n) % k == 0, f"the per-replica batch "
                 f"{p['batch_size'] // n} must be a multiple of --images_per_identity={k}")
        _require(p["proxy_partitions"] == 1, "--proxy_partitions is for parameter servers "
                 "(TF_CONFIG); a mirrored run keeps one proxy matrix per device")


def _read_records(p, needs_train, needs_eval):
    """Sizes from the records' manifests (and shard checks), or from the run's params.json."""
    records = p["train_records"]
    if records:
        info = manifest.read_manifest(records)
        _require(info.get("kind") == "images", f"--train_records={records} holds "
                 f"{info.get('kind')} records, not training images")
        p["num_classes"] = int(info["num_classes"])
        p["num_train_images"] = int(info["num_images"])
        if needs_train:
            _verify(records, p["verify_records"])
        labels_path = os.path.join(records, "labels.txt")
        if tf.io.gfile.exists(labels_path):
            with tf.io.gfile.GFile(labels_path) as fh:
                lines = [line for line in fh.read().splitlines() if line]
            _require(len(lines) == p["num_classes"], f"{labels_path} lists {len(lines)} "
                     f"identities but the manifest says {p['num_classes']} classes")
    else:
        p["num_classes"] = _num_classes_from_run(p["model_dir"])
    sets, named = _parse_eval_records(p, needs_eval)
    if needs_eval and p["eval_protocol"] == "retrieval":
        _require(not named, "--eval_protocol=retrieval takes one directory of image records "
                 "in --eval_records, not named sets (several sets are verification pairs)")
        _require(not p["best_metric"], "--best_metric applies to --eval_protocol=verification "
                 "(the retrieval exporter keeps the best "
                 f"{retrieval_eval.PREFIX}/{retrieval_eval.BEST_METRIC})")
        _require(p["device"] != "npu", "--eval_protocol=retrieval is not available on "
                 "--device=npu yet (its metric runs in the graph; the Ascend host path covers "
                 "verification)")
        info = manifest.read_manifest(p["eval_records"])
        _require(info.get("kind") == "images", "--eval_protocol=retrieval needs image records "
                 f"of held-out identities; --eval_records={p['eval_records']} holds "
                 f"{info.get('kind')} records")
        p["num_eval_images"] = int(info["num_images"])
        _require(p["num_eval_images"] >= 2,
                 f"--eval_records={p['eval_records']} holds fewer than 2 images")
        _verify(p["eval_records"], p["verify_records"])
    elif needs_eval:
        _read_pair_sets(p, sets, named)
    # What the eval records' pixels went through: the serving graph and the exports carry it
    # (with several sets, the first one's).
    p["eval_transform"] = None
    if sets:
        p["eval_transform"] = manifest.conversion_transform(manifest.read_manifest(sets[0][1]))


def _parse_eval_records(p, needs_eval):
    """``(sets, named)`` of --eval_records (see ``export.eval_sets``), or ``([], False)`` when
    this mode reads none."""
    if not p["eval_records"] or not (needs_eval or p["mode"] == "export"):
        return [], False
    try:
        return eval_sets.parse_eval_records(p["eval_records"])
    except ValueError as e:
        raise ParamsError(str(e)) from None


def _read_pair_sets(p, sets, named):
    """``p["eval_sets"]``: each verification set's name, records, pairs and folds, from its
    manifest; ``p["best_metric"]`` resolved against them."""
    p["eval_sets"] = []
    for name, records in sets:
        info = manifest.read_manifest(records)
        if named:
            _require(info.get("kind") == "pairs", f"--eval_records: set {name} ({records}) "
                     f"holds {info.get('kind')} records, not pairs (several sets are "
                     "verification pairs; --eval_protocol=retrieval takes one directory of "
                     "image records)")
        else:
            _require(info.get("kind") == "pairs", f"--eval_records={records} holds "
                     f"{info.get('kind')} records, not pairs")
        p["eval_sets"].append({"name": name, "records": records,
                               "num_pairs": int(info["num_pairs"]),
                               "num_folds": int(info.get("num_folds", 10))})
        _verify(records, p["verify_records"])
    p["eval_sets_named"] = named
    if len(sets) == 1:
        p["num_pairs"] = p["eval_sets"][0]["num_pairs"]
        p["num_folds"] = p["eval_sets"][0]["num_folds"]
    try:
        p["best_metric"] = eval_sets.resolve_best_metric(p["best_metric"],
                                                         [name for name, _ in sets])
    except ValueError as e:
        raise ParamsError(str(e)) from None


def _data_parallel_ranks(p):
    """Processes that each read their own part of the data with a per-device ``--batch_size``:
    Ascend ranks (RANK_SIZE, one process per device). Mirrored and TF_CONFIG runs split or
    count the global batch themselves."""
    if p["device"] != "npu":
        return 1
    return estimator_factory.ascend_rank()[1]


def _round_up_to_loop(p, name, what):
    loop = p["iterations_per_loop"]
    value = p[name]
    if value % loop:
        rounded = (value // loop + 1) * loop
        logging.warning("--device=npu runs %d steps per device loop: %s %d rounded up to %d",
                        loop, what, value, rounded)
        p[name] = rounded


def _resolve_steps(p, needs_train):
    if needs_train:
        _require(bool(p["train_steps"]) != bool(p["train_epochs"]),
                 "give exactly one of --train_steps and --train_epochs")
        if p["train_epochs"]:
            # One epoch is the data read once across all ranks: each of RANK_SIZE Ascend
            # processes reads 1/RANK_SIZE of it with its own --batch_size.
            global_batch = p["batch_size"] * _data_parallel_ranks(p)
            p["train_steps"] = max(1, int(round(
                p["train_epochs"] * p["num_train_images"] / global_batch)))
        _require(p["train_steps"] > 0, "--train_steps must be positive")
        if p["warmup_steps"] is None:
            p["warmup_steps"] = int(0.02 * p["train_steps"])
        _require(p["warmup_steps"] < p["train_steps"], "--warmup_steps must be below the total")
    else:
        p["train_steps"] = p["train_steps"] or 1
        p["warmup_steps"] = p["warmup_steps"] or 0
    if p["device"] == "npu":
        _require(p["iterations_per_loop"] >= 1, "--iterations_per_loop must be positive")
        # The device runs whole loops: a total or a checkpoint interval between two loop ends
        # is never reached exactly (NPUEstimator refuses such settings).
        if needs_train:
            _round_up_to_loop(p, "train_steps", "--train_steps")
        _round_up_to_loop(p, "save_checkpoints_steps", "--save_checkpoints_steps")


def _verify(records_dir, enabled):
    """A damaged or cut-short shard is named now, not met as a DataLossError mid-training."""
    if enabled and "://" not in records_dir:  # object stores: the copy tool checks, not us
        manifest.verify_shards(records_dir)


def _num_classes_from_run(model_dir):
    """num_classes recorded by the training run (evaluate/export without --train_records)."""
    path = os.path.join(model_dir, "params.json")
    _require(tf.io.gfile.exists(path), f"no --train_records and no {path}: cannot size the head")
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
    shares model_dir, and concurrent read-then-write of runs.jsonl would lose lines. The chief
    is the ``chief`` (or ``master``) task, or worker 0 of a cluster that has neither (a
    multi-worker cluster of workers only)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = config.get("task", {}), config.get("cluster", {})
    task_type = task.get("type", "chief")
    if task_type == "worker" and not {"chief", "master"} & set(cluster):
        return int(task.get("index", 0)) == 0
    return task_type in ("chief", "master")


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


def build_model_fn(p, optimizer_wrapper=None, configs=None):
    configs = configs or build_configs(p)
    metrics_fn = None
    host_verification = p["device"] == "npu"
    if p.get("eval_protocol") == "retrieval" and p.get("num_eval_images"):
        metrics_fn = retrieval_eval.retrieval_metrics_fn_builder(
            input_fns.image_record_labels(p["eval_records"]))
    elif p.get("eval_sets") and not host_verification:
        sets = p["eval_sets"]
        if len(sets) == 1:
            metrics_fn = eval_metrics.verification_metrics_fn_builder(
                sets[0]["num_pairs"], n_folds=sets[0]["num_folds"], far_target=p["far_target"],
                prefix=sets[0]["name"])
        else:
            metrics_fn = eval_metrics.verification_sets_metrics_fn_builder(
                _set_sizes(p), far_target=p["far_target"])
    return model_fn.model_fn_builder(
        configs.backbone, configs.head, configs.optimization, eval_metrics_fn=metrics_fn,
        eval_flip=p["eval_flip"], optimizer_wrapper=optimizer_wrapper,
        check_finite_loss=p["check_finite_loss"], log_every_n_steps=p["log_every_n_steps"],
        show_progress=p["progress"], model_dir=p["model_dir"], host_logging=host_verification)


def build_estimator(p):
    configs = build_configs(p)
    runtime = configs.runtime
    wrapper = estimator_factory.optimizer_wrapper(runtime.device, runtime.npu_precision_mode)
    strategy, timeout, tf_config = None, 0, None
    if _is_evaluator(p):
        # Not part of the all-reduce: no strategy, no step timeout, a RunConfig it accepts.
        tf_config = model_config.evaluator_tf_config(os.environ["TF_CONFIG"])
    elif p["mode"] in ("train", "train_and_evaluate"):
        strategy = estimator_factory.train_distribution(runtime.distribution, runtime.device,
                                                        runtime.num_replicas)
        if runtime.distribution == "multi_worker":
            # A step waiting for a worker that is gone fails after this long.
            timeout = runtime.worker_timeout_secs
    return estimator_factory.build_estimator(
        build_model_fn(p, wrapper, configs), p["model_dir"], device=runtime.device,
        precision=runtime.precision, npu_precision_mode=runtime.npu_precision_mode,
        iterations_per_loop=runtime.iterations_per_loop,
        save_checkpoints_steps=p["save_checkpoints_steps"],
        save_summary_steps=p["save_summary_steps"], keep_checkpoint_max=p["keep_checkpoint_max"],
        log_step_count_steps=p["log_every_n_steps"], tf_random_seed=p["seed"],
        warm_start_from=_warm_start_settings(p), intra_op_threads=p["intra_op_threads"],
        inter_op_threads=p["inter_op_threads"], train_distribute=strategy,
        num_cpu_devices=runtime.num_cpu_devices, operation_timeout_secs=timeout,
        tf_config=tf_config)


def _is_evaluator(p):
    """The evaluator task of a multi-worker cluster: it evaluates checkpoints, no strategy (it
    is not part of the all-reduce)."""
    return p["distribution"] == "multi_worker" and _multi_worker_task(p).task_type == \
        "evaluator"


def _train_multi_worker(estimator, p):
    """``--mode=train`` under MultiWorkerMirroredStrategy. ``Estimator.train`` refuses the
    strategy in a TF_CONFIG cluster ("Only `STANDALONE_CLIENT` mode is supported"); the
    estimator's distribute coordinator runs it from ``train_and_evaluate``, where the training
    tasks only train. Its EvalSpec is never used: --mode=train has no evaluator task."""
    def no_evaluation(params=None, config=None):
        raise ValueError("--mode=train evaluates nothing")

    tf.estimator.train_and_evaluate(estimator, _train_spec(p),
                                    tf.estimator.EvalSpec(no_evaluation, name=eval_name(p)))


def _train_spec(p):
    # A lost multi-worker session is not recoverable in-process (see NoSessionRecoveryHook).
    train_hooks = [hooks.NoSessionRecoveryHook()] if p["distribution"] == "multi_worker" else []
    return tf.estimator.TrainSpec(train_input_fn(p), max_steps=p["train_steps"],
                                  hooks=train_hooks)


def _warm_start_settings(p):
    if not p["warm_start_from"] or not p.get("warm_start_scopes"):
        return None
    # A list of scopes reaches GLOBAL_VARIABLES (batch-norm moving statistics too); a single
    # regex would only see trainable ones.
    return tf.estimator.WarmStartSettings(ckpt_to_initialize_from=p["warm_start_from"],
                                          vars_to_warm_start=list(p["warm_start_scopes"]))


def train_input_fn(p):
    inputs = build_configs(p).input
    return input_fns.train_input_fn_builder(p["train_records"], num_classes=p["num_classes"],
                                            **inputs._asdict())


def _set_sizes(p):
    """``[(name, num_pairs, n_folds)]`` of the verification sets, in evaluation order."""
    return [(s["name"], s["num_pairs"], s["num_folds"]) for s in p["eval_sets"]]


def eval_name(p):
    """The evaluation's name (its summaries go to model_dir/eval_<name>)."""
    if p.get("eval_protocol") == "retrieval":
        return retrieval_eval.PREFIX
    sets = p.get("eval_sets") or []
    if len(sets) > 1:
        return SETS_EVAL_NAME
    return sets[0]["name"] if sets else EVAL_NAME


def eval_input_fn(p):
    if p.get("eval_protocol") == "retrieval":
        return input_fns.image_pairs_input_fn_builder(
            p["eval_records"], image_size=p["image_size"], flip_tta=p["eval_flip"],
            num_images=p["num_eval_images"], batch_size=p["eval_batch_size"])
    sets = p["eval_sets"]
    if len(sets) > 1:
        return input_fns.pair_sets_input_fn_builder(
            [(s["records"], s["num_pairs"]) for s in sets], image_size=p["image_size"],
            flip_tta=p["eval_flip"], batch_size=p["eval_batch_size"])
    return input_fns.pairs_input_fn_builder(sets[0]["records"], image_size=p["image_size"],
                                            flip_tta=p["eval_flip"],
                                            num_pairs=sets[0]["num_pairs"],
                                            batch_size=p["eval_batch_size"])


def write_eval_report(p, eval_result, started=None):
    """report.json + roc.png of one evaluation; ``started`` (time.time() at the start of this
    invocation) records its wall time, training and evaluations included, as extra.wall_seconds."""
    if p.get("eval_protocol") == "retrieval":
        metrics = retrieval_eval.metrics_from_eval_result(eval_result)
        extra = {"mode": p["mode"]}
        if started is not None:
            extra["wall_seconds"] = round(time.time() - started, 1)
        path = retrieval_eval.write_report(metrics, os.path.join(p["model_dir"], "eval"), extra)
        scores = ", ".join(f"{k} {metrics[k]:.4f}" for k in retrieval_eval.scalar_names()[:-1])
        print(f"Retrieval at step {metrics.get('global_step')}: {scores} -> {path}")
        return metrics
    extra = {"mode": p["mode"]}
    if started is not None:
        extra["wall_seconds"] = round(time.time() - started, 1)
    if p.get("eval_sets_named"):
        return _write_sets_reports(p, eval_result, extra)
    metrics = eval_metrics.metrics_from_eval_result(eval_result, EVAL_NAME)
    paths = report.write_report(metrics, os.path.join(p["model_dir"], "eval"), extra=extra)
    m = metrics
    print(f"LFW-style verification at step {m.get('global_step')}: accuracy "
          f"{m['accuracy']:.4f} ± {m['accuracy_std']:.4f}, VAL@FAR={p['far_target']:g} "
          f"{m['val']:.4f}, AUC {m['auc']:.4f}, EER {m['eer']:.4f} (threshold "
          f"{m['threshold']:.2f}) -> {paths[0]}")
    if "threshold_single" in metrics:
        print("  without flip TTA (one embedding per image): accuracy "
              f"{m['accuracy_single']:.4f}, threshold {m['threshold_single']:.2f}")
    return metrics


def _write_sets_reports(p, eval_result, extra):
    """Named sets: report.json and roc.png of each in eval/<name>/ (the first set's also in
    eval/), and the table of the sets."""
    sets = p["eval_sets"]
    eval_dir = os.path.join(p["model_dir"], "eval")
    eval_sets.write_sets_reports(eval_result, [s["name"] for s in sets], eval_dir, extra)
    print(eval_sets.sets_table(eval_result, [(s["name"], s["num_pairs"]) for s in sets],
                               p["far_target"]))
    reports = [os.path.join(eval_dir, s["name"], report.REPORT_JSON) for s in sets]
    print(f"reports: {', '.join(reports)}")
    if p["best_metric"] in eval_result:
        print(f"{p['best_metric']}: {float(eval_result[p['best_metric']]):.4f}")
    return {s["name"]: eval_metrics.metrics_from_eval_result(eval_result, s["name"])
            for s in sets}


def freeze_export(p, saved_model_dir):
    name = os.path.basename(os.path.normpath(saved_model_dir))
    path = os.path.join(p["model_dir"], "frozen", f"embedding_{name}.pb")
    # Input at the eval records' size: the evaluation's own path, no upsampling of a smaller input.
    size = serving.record_size_of(p.get("eval_transform")) or p["image_size"]
    freeze.freeze_saved_model(saved_model_dir, path, image_size=size)
    print(f"frozen graph (input 'input' {size}x{size}, output 'embedding'): {path}")
    return path


_NON_FINITE = re.compile(re.escape(model_fn.NON_FINITE_LOSS_MESSAGE) + r"\]\s*\[(\d+)\]")


def evaluate_checkpoint(estimator, p, checkpoint_path=None):
    """One verification of a checkpoint (default: the latest), as ``estimator.evaluate``'s dict.

    On Ascend the graph handed to the device holds no ``py_func`` (CANN's default mode cannot
    run one): the device computes the pair embeddings (PREDICT) and the metrics are computed on
    the host, in numpy, by the same protocol.
    """
    if p["device"] != "npu":
        return estimator.evaluate(eval_input_fn(p), name=eval_name(p),
                                  checkpoint_path=checkpoint_path)
    checkpoint_path = checkpoint_path or tf.train.latest_checkpoint(p["model_dir"])
    if checkpoint_path is None:
        raise ValueError(f"no checkpoint to evaluate in {p['model_dir']}")
    step = tf.train.load_variable(checkpoint_path, tf.GraphKeys.GLOBAL_STEP)
    predictions = estimator.predict(eval_input_fn(p), checkpoint_path=checkpoint_path,
                                    yield_single_examples=True)
    sets = _set_sizes(p)
    if len(sets) > 1:
        return eval_metrics.verification_sets_on_host(predictions, sets, p["far_target"],
                                                      global_step=step)
    name, num_pairs, n_folds = sets[0]
    return eval_metrics.verification_on_host(predictions, num_pairs, n_folds, p["far_target"],
                                             name, global_step=step)


def _train_and_evaluate_on_host(estimator, p, exporter_list):
    """Ascend's train_and_evaluate: train to each checkpoint, verify it on the host, export.

    Each segment restarts the input pipeline; its seed is offset by the starting step, so
    segments see different batches and a resumed run repeats the same sequence.
    """
    interval = p["save_checkpoints_steps"]
    checkpoint = tf.train.latest_checkpoint(p["model_dir"])
    step = tf.train.load_variable(checkpoint, tf.GraphKeys.GLOBAL_STEP) if checkpoint else 0
    result = None
    while True:
        if step < p["train_steps"]:
            target = min(step + interval, p["train_steps"])
            estimator.train(train_input_fn(dict(p, seed=p["seed"] + step)), max_steps=target)
            step = target
        checkpoint = tf.train.latest_checkpoint(p["model_dir"])
        result = evaluate_checkpoint(estimator, p, checkpoint)
        final = step >= p["train_steps"]
        for exporter in exporter_list:
            exporter.export(estimator, os.path.join(p["model_dir"], "export", exporter.name),
                            checkpoint, result, final)
        if final:
            return result


def run_mode(p):
    started = time.time()
    estimator = build_estimator(p)
    receiver = serving.serving_input_receiver_fn_builder(p["image_size"], p.get("eval_transform"))
    mode = p["mode"]
    if mode == "train" and p["distribution"] == "multi_worker":
        _train_multi_worker(estimator, p)
    elif mode == "train":
        estimator.train(train_input_fn(p), max_steps=p["train_steps"])
    elif mode == "evaluate":
        write_eval_report(p, evaluate_checkpoint(estimator, p, p["checkpoint_path"]))
    elif mode == "train_and_evaluate":
        if p["eval_protocol"] == "retrieval":
            exporter_list = retrieval_eval.build_exporters(
                receiver, eval_name(p), p["exports_to_keep"], transform=p.get("eval_transform"))
        else:
            named_sets = ([(s["name"], s["num_pairs"]) for s in p["eval_sets"]]
                          if p["eval_sets_named"] else None)
            exporter_list = exporters.build_exporters(
                receiver, eval_name(p), p["exports_to_keep"], metric_key=p["best_metric"],
                transform=p.get("eval_transform"), sets=named_sets, far_target=p["far_target"])
        if p["device"] == "npu":
            result = _train_and_evaluate_on_host(estimator, p, exporter_list)
        else:
            train_spec = _train_spec(p)
            eval_spec = tf.estimator.EvalSpec(
                eval_input_fn(p), steps=None, name=eval_name(p), exporters=exporter_list,
                start_delay_secs=0, throttle_secs=p["eval_throttle_secs"])
            outcome = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
            result = outcome[0] if outcome else None
            # Under TF_CONFIG the estimator returns None on every task. Training tasks leave
            # checkpoints; the evaluator alone reports (its last evaluation, of the final
            # checkpoint, is repeated to get the numbers) and freezes what its exporters wrote.
            if estimator.config.task_type == "evaluator":
                result = result or estimator.evaluate(eval_input_fn(p), name=eval_name(p))
            elif estimator.config.cluster_spec.jobs:
                return
        if result:
            write_eval_report(p, result, started)
        # By the accuracy recorded with each export, not the newest directory: a later, worse
        # evaluation or a restarted job never displaces the best model.
        best = export_dirs.best_export(os.path.join(p["model_dir"], "export", "best"))
        if best:
            print(f"best SavedModel: {best}")
            freeze_export(p, best)
    elif mode == "export":
        path = exporters.export_checkpoint(
            estimator, os.path.join(p["model_dir"], "export", "manual"), receiver,
            checkpoint_path=p["checkpoint_path"], transform=p.get("eval_transform"))
        print(f"SavedModel: {path}")
        freeze_export(p, path)
    else:
        raise ValueError(f"unknown mode {mode!r}")


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
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
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
    except (hooks.WorkerLostError, tf.errors.DeadlineExceededError) as e:
        if params["distribution"] != "multi_worker":
            raise
        _exit_multi_worker_failure(params, e)
    except (tf.errors.OpError, OSError) as e:
        # Out of memory is a ResourceExhaustedError too: only a full disk is handled here.
        message = getattr(e, "message", None) or str(e)
        if getattr(e, "errno", None) != errno.ENOSPC and "No space left on device" not in message:
            raise
        logging.error("training stopped: cannot write to %s (No space left on device). Last "
                      "good checkpoint: %s. Free space and re-run the same command to resume.",
                      params["model_dir"], tf.train.latest_checkpoint(params["model_dir"]))
        sys.exit(1)


def _exit_multi_worker_failure(params, error):
    """One worker of a synchronous job cannot go on alone: say so, and how to resume."""
    if isinstance(error, tf.errors.DeadlineExceededError):
        why = (f"a step waited more than --worker_timeout_secs={params['worker_timeout_secs']} "
               "s for the other workers (a worker failed, was stopped, or is stalled)")
    else:
        why = str(error)
    logging.error("multi-worker training stopped: %s. Every worker of the all-reduce is needed "
                  "for each step: restart all of them with the same command and TF_CONFIG; they "
                  "resume from the last checkpoint, %s.", why,
                  tf.train.latest_checkpoint(params["model_dir"]))
    sys.exit(1)


def _main_with_one_line_errors(argv):
    """``main``, with a bad setting printed as its one line (absl would print the whole short
    help before it)."""
    try:
        return main(argv)
    except app.UsageError as e:
        sys.stderr.write(f"{os.path.basename(argv[0])}: {e}\nsee --help for the flags\n")
        return 1


def run():
    """Console-script entry point."""
    define_flags()
    app.run(_main_with_one_line_errors)


if __name__ == "__main__":
    run()
