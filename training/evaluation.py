"""Evaluate a checkpoint (on Ascend: embeddings on the device, metrics on the host) and write
its reports: eval/report.json and roc.png, one per named set, and the line printed for it."""

import os
import time

import tensorflow.compat.v1 as tf

from export import eval_metrics, eval_sets, report, retrieval_eval
from training.builders import EVAL_NAME, eval_input_fn, eval_name, set_sizes


def round_summary(p, eval_result):
    """The one line of an evaluation round: the step and the headline metrics."""
    step = eval_result.get("global_step")
    if p.get("eval_protocol") == "retrieval":
        prefix = retrieval_eval.PREFIX
        scores = ", ".join(f"{name} {float(eval_result[f'{prefix}/{name}']):.4f}"
                           for name in retrieval_eval.scalar_names()[:-1]
                           if f"{prefix}/{name}" in eval_result)
        return f"evaluation at step {step}: {scores}"
    if p.get("eval_sets_named"):
        scores = ", ".join(f"{s['name']} {float(eval_result[s['name'] + '/accuracy']):.4f}"
                           for s in p["eval_sets"] if s["name"] + "/accuracy" in eval_result)
        return f"evaluation at step {step}: accuracy {scores}"
    m = {key: float(eval_result[f"{EVAL_NAME}/{key}"])
         for key in ("accuracy", "accuracy_std", "auc", "eer")
         if f"{EVAL_NAME}/{key}" in eval_result}
    return (f"evaluation at step {step}: accuracy {m.get('accuracy', float('nan')):.4f} ± "
            f"{m.get('accuracy_std', float('nan')):.4f}, AUC {m.get('auc', float('nan')):.4f}, "
            f"EER {m.get('eer', float('nan')):.4f}")


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
    sets = set_sizes(p)
    if len(sets) > 1:
        return eval_metrics.verification_sets_on_host(predictions, sets, p["far_target"],
                                                      global_step=step)
    name, num_pairs, n_folds = sets[0]
    return eval_metrics.verification_on_host(predictions, num_pairs, n_folds, p["far_target"],
                                             name, global_step=step)
