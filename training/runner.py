"""Mode dispatch: train, evaluate, train_and_evaluate (one host, mirrored, TF_CONFIG clusters,
Ascend's host-side evaluation loop) and export, with the frozen graph of the exported model."""

import os
import time

import tensorflow.compat.v1 as tf

from export import export_dirs, exporters, freeze, serving
from model import hooks
from training.builders import build_estimator, eval_protocol, train_input_fn
from training.evaluation import evaluate_checkpoint, write_eval_report


def _train_multi_worker(estimator, p):
    """``--mode=train`` under MultiWorkerMirroredStrategy. ``Estimator.train`` refuses the
    strategy in a TF_CONFIG cluster ("Only `STANDALONE_CLIENT` mode is supported"); the
    estimator's distribute coordinator runs it from ``train_and_evaluate``, where the training
    tasks only train. Its EvalSpec is never used: --mode=train has no evaluator task."""
    def no_evaluation(params=None, config=None):
        raise ValueError("--mode=train evaluates nothing")

    tf.estimator.train_and_evaluate(estimator, _train_spec(p), tf.estimator.EvalSpec(
        no_evaluation, name=eval_protocol(p).eval_name))


def _train_spec(p):
    # A lost multi-worker session is not recoverable in-process (see NoSessionRecoveryHook).
    train_hooks = [hooks.NoSessionRecoveryHook()] if p["distribution"] == "multi_worker" else []
    return tf.estimator.TrainSpec(train_input_fn(p), max_steps=p["train_steps"],
                                  hooks=train_hooks)


def freeze_export(p, saved_model_dir):
    name = os.path.basename(os.path.normpath(saved_model_dir))
    path = os.path.join(p["model_dir"], "frozen", f"embedding_{name}.pb")
    # Input at the eval records' size: the evaluation's own path, no upsampling of a smaller input.
    size = serving.frozen_input_size(p.get("eval_transform"), p["image_size"])
    freeze.freeze_saved_model(saved_model_dir, path, image_size=size)
    print(f"frozen graph (input 'input' {size}x{size}, output 'embedding'): {path}")
    return path


def _train_and_evaluate_on_host(estimator, p, protocol, exporter_list):
    """Ascend's train_and_evaluate: train to each checkpoint, evaluate it on the host, export.

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
        result = protocol.evaluate(estimator, checkpoint)
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
        protocol = eval_protocol(p)
        exporter_list = protocol.round_loggers() + exporters.best_and_latest_exporters(
            receiver, protocol.best_metric, protocol.export_report_fn(), p["exports_to_keep"],
            transform=p.get("eval_transform"))
        exporter_list.append(exporters.RoundSummaryExporter(protocol.round_summary))
        if protocol.on_host:
            result = _train_and_evaluate_on_host(estimator, p, protocol, exporter_list)
        else:
            train_spec = _train_spec(p)
            eval_spec = tf.estimator.EvalSpec(
                protocol.input_fn(), steps=None, name=protocol.eval_name,
                exporters=exporter_list, start_delay_secs=0,
                throttle_secs=p["eval_throttle_secs"])
            outcome = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
            result = outcome[0] if outcome else None
            # Under TF_CONFIG the estimator returns None on every task. Training tasks leave
            # checkpoints; the evaluator alone reports (its last evaluation, of the final
            # checkpoint, is repeated to get the numbers) and freezes what its exporters wrote.
            if estimator.config.task_type == "evaluator":
                result = result or estimator.evaluate(protocol.input_fn(),
                                                      name=protocol.eval_name)
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

