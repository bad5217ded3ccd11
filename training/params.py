"""Flag values -> the run's one frozen spec (``training.run_spec.RunSpec``).

Every setting is checked here, once, before anything is written or any graph is built: a bad
value is a :class:`ParamsError` with one line that says what to change. This module resolves
what the flags leave open from the world outside them (record sizes from the manifests, steps
from epochs, the worker count from TF_CONFIG, the warm-start scopes from the checkpoint, an
evaluate/export run's model from its params.json); the typed configs the spec is made of check
the rest in their constructors.
"""

import os

import tensorflow.compat.v1 as tf
from absl import logging

from data_tools import input_fns, manifest
from data_tools.transform import Transform
from evaluation import registry
from evaluation import sets as eval_sets
from model import heads
from runtime import ascend, cluster, estimator_factory
from training import run_spec
from training.run_spec import (  # noqa: F401  (the names callers import from here)
    EVAL_PROTOCOLS,
    MODES,
    NO_HEAD,
    ParamsError,
    RunSpec,
    head_options,
)


def _require(condition, message):
    if not condition:
        raise ParamsError(message)


def build_params(values, recorded=None):
    """Validate the flag values once and return the run's frozen :class:`RunSpec`.

    Every setting is checked here, before anything is written: the spec's typed configs
    (``model.config``, ``data_tools.input_config``, the head built from its declaration,
    ``training.run_spec``) refuse bad values with one line. ``recorded``: the params.json
    (dict) of the run in model_dir, for evaluate/export (read from model_dir when needed and
    not given); an older file loads, or fails with one line saying what to do.
    """
    p = dict(values)
    if p["data_url"]:
        p["train_records"] = p["train_records"] or os.path.join(p["data_url"], "train")
        p["eval_records"] = p["eval_records"] or os.path.join(p["data_url"], "pairs")
    p["model_dir"] = p["model_dir"] or p["train_url"]
    _require(p["model_dir"], "--model_dir (or --train_url) is required")
    if recorded is not None and not isinstance(recorded, RunSpec):
        # First: a params.json that cannot be a run's spec is the one line to read.
        recorded = RunSpec.from_json_dict(recorded, os.path.join(p["model_dir"],
                                                                 run_spec.PARAMS_NAME))
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
    if p["head"] == NO_HEAD:
        _require(p.get("distill_weight", 0) > 0, "--head=none trains on the teacher alone: "
                 "set --distill_weight > 0 (and train on records made with make_tfrecords.py "
                 "--teacher)")
    elif getattr(heads.HEADS.get(p["head"]), "needs_pk_batches", False):
        _require(k >= 2, f"--head={p['head']} needs P×K batches: set "
                 "--images_per_identity=K >= 2 (e.g. 4)")
    if k:
        _require(k >= 2, f"--images_per_identity={k}: K must be at least 2 (0 turns P×K "
                 "batches off)")
        _require(p["batch_size"] % k == 0, f"--batch_size={p['batch_size']} must be a multiple "
                 f"of --images_per_identity={k}")
    p["num_workers"] = multi_worker_task(p).num_workers if p["distribution"] == \
        "multi_worker" else 1
    runtime = run_spec.runtime_config(p)  # built once: the spec takes this one
    p["distribution"], p["num_replicas"] = runtime.distribution, runtime.num_replicas
    _check_replicas(p)
    recorded = _read_records(p, needs_train, needs_eval, recorded)
    if recorded is not None and p.get("eval_transform") is None:
        # An export without --eval_records serves the transform its training evaluated with.
        p["eval_transform"] = recorded.get("eval_transform")
    if needs_train and p["batch_size"] > p["num_train_images"]:
        logging.warning("--batch_size=%d is larger than the %d training images of %s: every "
                        "batch repeats images (the loss sees duplicates as pairs); lower "
                        "--batch_size", p["batch_size"], p["num_train_images"],
                        p["train_records"])
    _resolve_steps(p, needs_train)
    # Every remaining setting, checked by the configs and resolved into p, once.
    configs = run_spec.build_configs(p, runtime)
    if p["warm_start_from"] and needs_train:
        p["warm_start_scopes"] = _warm_start_scopes(p, configs.head)
        configs = configs._replace(checkpoints=configs.checkpoints._replace(
            warm_start_scopes=p["warm_start_scopes"]))
    # A missing device stack (Ascend's bridge, a TF without the oneDNN bf16 rewrite, no GPU) is a
    # setting to change too: report it here, before model_dir is written.
    estimator_factory.check_device(runtime)
    return RunSpec(p, configs)


def multi_worker_task(p):
    """This process's task of a --distribution=multi_worker cluster, from TF_CONFIG."""
    _require(p["mode"] in ("train", "train_and_evaluate"), "--distribution=multi_worker is for "
             f"training; run --mode={p['mode']} without it (and without TF_CONFIG)")
    try:
        task = cluster.multi_worker_task(os.environ.get("TF_CONFIG"))
    except ValueError as e:
        raise ParamsError(str(e)) from None
    _require(task.task_type != "evaluator" or p["mode"] == "train_and_evaluate",
             "the evaluator task needs --mode=train_and_evaluate (--mode=train only trains)")
    return task


def build_configs(spec):
    """The typed configs the builders take: a spec's own (built once, with it); a plain dict
    of resolved settings (a copy with another seed) is built into a spec first."""
    if not isinstance(spec, RunSpec):
        spec = RunSpec.build(spec)
    return spec.configs


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
    if head is None:  # --head=none: nothing but the backbone to take over
        return [BACKBONE_SCOPE]
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


def _read_records(p, needs_train, needs_eval, recorded):
    """Sizes from the records' manifests (and shard checks), or from the run's params.json
    (``recorded``, a RunSpec, loaded here when needed and not given: returned)."""
    records = p["train_records"]
    if records:
        info = manifest.read_manifest(records)
        _require(info.get("kind") == "images", f"--train_records={records} holds "
                 f"{info.get('kind')} records, not training images")
        p["num_classes"] = int(info["num_classes"])
        p["num_train_images"] = int(info["num_images"])
        p["train_transform"] = manifest.conversion_transform(info)
        p["teacher_dim"] = int((info.get("teacher") or {}).get("dim") or 0)
        if needs_train and p.get("distill_weight") and p.get("distill_center") \
                and p["teacher_dim"]:
            # Recorded in params.json: the run's frozen record of what its term subtracted.
            p["teacher_mean"] = input_fns.records_teacher_mean(records)
        if needs_train:
            _verify(records, p["verify_records"])
        labels_path = os.path.join(records, "labels.txt")
        if tf.io.gfile.exists(labels_path):
            with tf.io.gfile.GFile(labels_path) as fh:
                lines = [line for line in fh.read().splitlines() if line]
            _require(len(lines) == p["num_classes"], f"{labels_path} lists {len(lines)} "
                     f"identities but the manifest says {p['num_classes']} classes")
    else:
        recorded = recorded or _recorded_spec(p["model_dir"])
        p["num_classes"] = int(recorded["num_classes"])
        p["train_transform"] = recorded.get("train_transform")
    sets, named = _parse_eval_records(p, needs_eval)
    if needs_eval:
        try:  # the protocol checks its settings against its records, once
            registry.protocol_class(p["eval_protocol"]).resolve(p, sets, named)
        except manifest.ManifestError:
            raise  # the records' own failure, as the converter's tools report it
        except ValueError as e:
            raise ParamsError(str(e)) from None
    # What the eval records' pixels went through: the serving graph and the exports carry it
    # (with several sets, the first one's).
    p["eval_transform"] = None
    if sets:
        p["eval_transform"] = manifest.conversion_transform(manifest.read_manifest(sets[0][1]))
    if needs_eval:
        _check_transforms(p, sets or [("eval", p["eval_records"])])
    return recorded


def _check_transforms(p, sets):
    """Evaluation records converted otherwise than the training records (another crop box, no
    crop, aligned) measure the model on faces it never saw, and its exports would carry the
    wrong transform: refused unless --allow_transform_mismatch."""
    train = Transform.from_dict(p.get("train_transform"))
    if p.get("train_transform") is None or p.get("allow_transform_mismatch"):
        return
    for _name, records in sets:
        record = manifest.conversion_transform(manifest.read_manifest(records))
        if record is None:
            continue  # another tool's records: nothing to compare
        evaluated = Transform.from_dict(record)
        if not (train or Transform()).same_conversion(evaluated):
            described = evaluated.describe() if evaluated else "none"
            _require(False, f"--eval_records {records} were converted with {described}, the "
                     f"training records with {train.describe() if train else 'none'}: convert "
                     "them as the training records were (make_tfrecords.py --crop_box, "
                     "--image_size, --align), or pass --allow_transform_mismatch to evaluate "
                     "on them knowingly")


def _parse_eval_records(p, needs_eval):
    """``(sets, named)`` of --eval_records (see ``evaluation.sets``), or ``([], False)`` when
    this mode reads none."""
    if not p["eval_records"] or not (needs_eval or p["mode"] == "export"):
        return [], False
    try:
        return eval_sets.parse_eval_records(p["eval_records"])
    except ValueError as e:
        raise ParamsError(str(e)) from None


def _data_parallel_ranks(p):
    """Processes that each read their own part of the data with a per-device ``--batch_size``:
    Ascend ranks (RANK_SIZE, one process per device). Mirrored and TF_CONFIG runs split or
    count the global batch themselves."""
    if p["device"] != "npu":
        return 1
    return ascend.ascend_rank()[1]


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


def _recorded_spec(model_dir):
    """The spec of the training run (evaluate/export without --train_records)."""
    recorded = RunSpec.from_run_dir(model_dir)
    path = os.path.join(model_dir, run_spec.PARAMS_NAME)
    _require(recorded is not None, f"no --train_records and no {path}: cannot size the head")
    return recorded
