"""The builders bound to a params dict: model_fn, estimator, input_fns, the evaluation protocol.

``estimator_main.py`` composes the layers here: the evaluation protocol of ``evaluation/``
(chosen by name, bound to the params) hands its pair EVAL/PREDICT spec to the ``model_fn``
builder of ``model/``, the input_fns come from ``data_tools``.
"""

import os

import tensorflow.compat.v1 as tf

from data_tools import input_fns
from evaluation import registry
from model import model_fn
from runtime import cluster, estimator_factory
from training import run_record
from training.params import build_configs, multi_worker_task


def eval_protocol(p):
    """The run's evaluation protocol (``--eval_protocol``), bound to its settings."""
    return registry.build(p)


def build_model_fn(p, optimizer_wrapper=None, configs=None):
    configs = configs or build_configs(p)
    return model_fn.model_fn_builder(
        configs.backbone, configs.head, configs.optimization,
        eval_spec_fn=eval_protocol(p).eval_spec_fn(), optimizer_wrapper=optimizer_wrapper,
        check_finite_loss=p["check_finite_loss"], log_every_n_steps=p["log_every_n_steps"],
        show_progress=p["progress"], model_dir=p["model_dir"],
        # Ascend runs iterations_per_loop steps per session call: no hooks fetching tensors.
        host_logging=p["device"] == "npu",
        distill=configs.distillation, loss_record_path=_loss_record_path(p, configs))


def _loss_record_path(p, configs):
    """runs.jsonl of the run record, where a distillation run's training ends with its last
    head, distillation and total losses (the chief only, as for the rest of the run record)."""
    if not configs.distillation.enabled or not run_record.writes_run_record():
        return None
    return os.path.join(p["model_dir"], run_record.RUNS_NAME)


def build_estimator(p):
    configs = build_configs(p)
    runtime = configs.runtime
    wrapper = estimator_factory.optimizer_wrapper(runtime.device, runtime.npu_precision_mode)
    strategy, timeout, tf_config = None, 0, None
    if _is_evaluator(p):
        # Not part of the all-reduce: no strategy, no step timeout, a RunConfig it accepts.
        tf_config = cluster.evaluator_tf_config(os.environ["TF_CONFIG"])
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
    return p["distribution"] == "multi_worker" and multi_worker_task(p).task_type == \
        "evaluator"


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
                                            worker_shard=cluster.worker_shard(),
                                            **inputs._asdict())


def eval_name(p):
    """The evaluation's name (its summaries go to model_dir/eval_<name>)."""
    return eval_protocol(p).eval_name


def eval_input_fn(p):
    return eval_protocol(p).input_fn()
