"""Does bf16 train like fp32? Loss curves of the same model in both precisions, next to run noise.

A small set of the project's synthetic faces (``data_tools.synthetic.dataset``) is converted to
TFRecords once; then one model (class-level Circle head, momentum SGD, warm-up + cosine schedule)
trains for ``steps`` steps three times, on the training input_fn with shuffling and augmentation
seeded:

* ``fp32_seed0``: float32, seed 0;
* ``bf16_seed0``: the backbone in bfloat16 (``precision="bf16"``), seed 0: the same batches in
  the same order and the same initial weights (copied from ``fp32_seed0``'s session, so they
  match even where the bf16 graph's extra cast ops would shift op-level random seeds);
* ``fp32_seed1``: float32, seed 1: other initial weights, batch order and augmentation. Its
  distance from ``fp32_seed0`` is the run-to-run noise the bf16 difference is measured against.

The training loss (``spec.loss``: head loss + weight decay, of the batch the step trains on) is
recorded at every step. Each curve is EMA-smoothed; ``bf16_vs_fp32_mean_abs_diff`` is the mean
over steps of |smoothed bf16 - smoothed fp32_seed0|, ``noise_mean_abs_diff`` the same for
fp32_seed1, and ``bf16_diff_over_noise`` their ratio: at most 1 means bf16's curve is within the
noise of fp32's. Throughput comes from the same runs (the first steps, which create the oneDNN
primitives, excluded); ``bf16_over_fp32`` divides bf16's images/s by the mean of the two fp32
runs'.

    python -m benchmarks.precision_curve [--backbone=iresnet50] [--steps=200] [--batch_size=16]

On TensorFlow without bfloat16 CPU kernels (1.15) it prints a ``skipped`` figure and trains
nothing.
"""

import argparse
import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from data_tools import conversion, input_fns
from data_tools.synthetic import dataset as synthetic_dataset
from model import model_fn as model_fn_lib
from runtime import estimator_factory

BENCHMARK = "precision_curve"
RUNS = (("fp32_seed0", "fp32", 0), ("bf16_seed0", "bf16", 0), ("fp32_seed1", "fp32", 1))
# backbone, image size, steps, batch, identities x images per identity, lr, warm-up steps.
# The full setting runs about a quarter of an hour on 2 cores (iresnet50 fp32 ~8 images/s,
# bf16 ~25): 2 x 400 s of fp32 and ~130 s of bf16.
FULL = {"backbone": "iresnet50", "image_size": 112, "steps": 200, "batch_size": 16,
        "identities": 40, "images_per_identity": 20, "learning_rate": 0.02, "warmup_steps": 20}
QUICK = {"backbone": "tiny", "image_size": 32, "steps": 20, "batch_size": 16,
         "identities": 8, "images_per_identity": 8, "learning_rate": 0.05, "warmup_steps": 2}
GAMMA = 64.0
# EMA weight of the previous smoothed value: a time constant of ~10 steps.
SMOOTHING = 0.9
# Steps left out of the throughput: oneDNN primitive creation, tf.data AUTOTUNE warm-up.
TIMING_SKIP = 2
# The curves in the JSON line: every CURVE_EVERY-th step (and the last one).
CURVE_EVERY = 10
MEAN_WINDOW = 20


def make_records(workdir, image_size, identities, images_per_identity):
    """Synthetic training faces as TFRecords under ``workdir`` (reused when already there)."""
    root = os.path.join(workdir, BENCHMARK, f"{image_size}px_{identities}x{images_per_identity}")
    records = os.path.join(root, "records")
    if os.path.isfile(os.path.join(records, "manifest.json")):
        return records
    faces = os.path.join(root, "faces")
    # One tiny verification fold: generate() always writes one, this benchmark does not use it.
    summary = synthetic_dataset.generate(faces, num_train_identities=identities,
                                         train_images_per_identity=images_per_identity, num_folds=1,
                                         pair_identities_per_fold=2, pair_images_per_identity=2,
                                         pairs_per_fold=1, image_size=image_size, seed=0,
                                         num_workers=None if identities * images_per_identity > 256
                                         else 1,  # worker processes would cost more than they save
                                         progress=False)
    conversion.convert_folder(summary["train_dir"], records, num_workers=1, progress=False)
    return records


def ema(values, weight=SMOOTHING):
    """Exponential moving average, started at the first value (no pull towards zero)."""
    smoothed = []
    current = None
    for value in values:
        current = value if current is None else weight * current + (1.0 - weight) * value
        smoothed.append(current)
    return np.asarray(smoothed, np.float64)


def mean_abs_diff(curve, reference, weight=SMOOTHING):
    """Mean over steps of |EMA(curve) - EMA(reference)|, over the steps both have."""
    steps = min(len(curve), len(reference))
    if not steps:
        return None
    return float(np.mean(np.abs(ema(curve[:steps], weight) - ema(reference[:steps], weight))))


def subsample(curve, every=CURVE_EVERY, digits=3):
    """Every ``every``-th value and the last one, rounded."""
    indices = list(range(0, len(curve), every))
    if curve and indices[-1] != len(curve) - 1:
        indices.append(len(curve) - 1)
    return [round(float(curve[i]), digits) for i in indices]


def train_curve(records, backbone, precision, seed, num_classes, image_size, batch_size, steps,
                learning_rate, warmup_steps, initial_values=None):
    """Train ``steps`` steps; the loss of every step, the seconds of each and the start weights.

    ``initial_values`` (``{variable name: array}``, as returned by another run) replaces the
    graph's own initialisation; it must name exactly this graph's variables. Returns a dict:
    ``losses`` (floats), ``step_seconds``, ``initial_values`` and ``diverged_at_step`` (None, or
    the step whose loss was not finite: the run stops there).
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        input_fn = input_fns.train_input_fn_builder(
            records, image_size=image_size, batch_size=batch_size, seed=seed,
            num_classes=num_classes)
        features, labels = tf.data.make_one_shot_iterator(input_fn(params={})).get_next()
        model_fn = common.circle_model_fn(
            backbone, num_classes, precision=precision, gamma=GAMMA,
            learning_rate=learning_rate, total_steps=steps, warmup_steps=warmup_steps,
            schedule="cosine")
        spec = model_fn(features, labels, tf.estimator.ModeKeys.TRAIN)
        variables = tf.global_variables()
        init = tf.group(tf.global_variables_initializer(), tf.local_variables_initializer())
    result = {"losses": [], "step_seconds": [], "diverged_at_step": None}
    with tf.Session(graph=graph, config=common.session_config()) as session:
        session.run(init)
        if initial_values is not None:
            names = {v.op.name for v in variables}
            if names != set(initial_values):
                raise ValueError("initial values for other variables: missing "
                                 f"{sorted(names - set(initial_values))}, extra "
                                 f"{sorted(set(initial_values) - names)}")
            for variable in variables:
                session.run(variable.initializer,
                            {variable.initial_value: initial_values[variable.op.name]})
        result["initial_values"] = dict(zip([v.op.name for v in variables],
                                            session.run(variables)))
        for step in range(steps):
            start = time.perf_counter()
            try:
                _, loss = session.run([spec.train_op, spec.loss])
            except tf.errors.InvalidArgumentError as error:
                if model_fn_lib.NON_FINITE_LOSS_MESSAGE not in str(error):
                    raise
                result["diverged_at_step"] = step
                break
            result["step_seconds"].append(time.perf_counter() - start)
            result["losses"].append(float(loss))
    return result


def _skip_figures(settings):
    figures = {"backbone": settings["backbone"], "skipped": (
        "bf16 needs TensorFlow 2.x with oneDNN bfloat16 CPU kernels; this is TensorFlow "
        f"{tf.__version__}")}
    return common.emit(BENCHMARK, figures)


def run(quick=False, workdir=None, backbone=None, steps=None, batch_size=None,
        learning_rate=None):
    """Train the three runs and print the figures; returns the JSON dict."""
    settings = dict(QUICK if quick else FULL)
    for key, value in (("backbone", backbone), ("steps", steps), ("batch_size", batch_size),
                       ("learning_rate", learning_rate)):
        if value is not None:
            settings[key] = value
    if settings["steps"] < 1 or settings["batch_size"] < 1:
        raise ValueError(f"steps and batch_size must be positive, got {settings['steps']} and "
                         f"{settings['batch_size']}")
    if not estimator_factory.bfloat16_supported():
        return _skip_figures(settings)
    steps, batch = settings["steps"], settings["batch_size"]
    warmup_steps = min(settings["warmup_steps"], steps // 2)
    with common.scratch_dir(workdir, "bench_precision_") as scratch:
        records = make_records(scratch, settings["image_size"], settings["identities"],
                               settings["images_per_identity"])
        results = {}
        for name, precision, seed in RUNS:
            start = time.perf_counter()
            results[name] = train_curve(
                records, settings["backbone"], precision, seed, settings["identities"],
                settings["image_size"], batch, steps, settings["learning_rate"], warmup_steps,
                initial_values=(results["fp32_seed0"]["initial_values"]
                                if precision == "bf16" else None))
            results[name]["seconds"] = time.perf_counter() - start

    window = min(MEAN_WINDOW, max(1, steps // 4))
    figures = {"backbone": settings["backbone"], "image_size": settings["image_size"],
               "batch": batch, "steps": steps, "num_classes": settings["identities"],
               "num_images": settings["identities"] * settings["images_per_identity"],
               "learning_rate": settings["learning_rate"], "warmup_steps": warmup_steps,
               "schedule": "cosine", "gamma": GAMMA, "smoothing": SMOOTHING,
               "mean_window": window, "curve_every": CURVE_EVERY}
    images_per_s = {}
    for name, _, _ in RUNS:
        result = results[name]
        losses = result["losses"]
        figures[f"{name}_curve"] = subsample(losses)
        figures[f"{name}_first_mean_loss"] = (
            common.rounded(np.mean(losses[:window]), 4) if losses else None)
        figures[f"{name}_last_mean_loss"] = (
            common.rounded(np.mean(losses[-window:]), 4) if losses else None)
        if result["diverged_at_step"] is not None:
            figures[f"{name}_diverged_at_step"] = result["diverged_at_step"]
        figures[f"{name}_seconds"] = common.rounded(result["seconds"])
        timed_steps = result["step_seconds"][TIMING_SKIP:] or result["step_seconds"]
        images_per_s[name] = batch * len(timed_steps) / max(sum(timed_steps), 1e-9)
        figures[f"{name}_images_per_s"] = common.rounded(images_per_s[name], 2)

    fp32, bf16, noise = (results[name]["losses"] for name, _, _ in RUNS)
    diverged = any(results[name]["diverged_at_step"] is not None for name, _, _ in RUNS)
    bf16_diff = None if diverged else mean_abs_diff(bf16, fp32)
    noise_diff = None if diverged else mean_abs_diff(noise, fp32)
    figures["bf16_vs_fp32_step0_abs_diff"] = (
        round(abs(bf16[0] - fp32[0]), 4) if bf16 and fp32 else None)
    figures["bf16_vs_fp32_mean_abs_diff"] = None if bf16_diff is None else round(bf16_diff, 4)
    figures["noise_mean_abs_diff"] = None if noise_diff is None else round(noise_diff, 4)
    figures["bf16_diff_over_noise"] = (None if bf16_diff is None
                                       else common.ratio(bf16_diff, noise_diff))
    figures["bf16_over_fp32"] = common.ratio(
        images_per_s["bf16_seed0"],
        (images_per_s["fp32_seed0"] + images_per_s["fp32_seed1"]) / 2.0)
    figures["targets"] = {"bf16_diff_over_noise": 1.0, "bf16_over_fp32": 1.8}
    return common.emit(BENCHMARK, figures)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--backbone", default=None,
                        help=f"backbone name (default {FULL['backbone']}; --quick: "
                             f"{QUICK['backbone']})")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps per run (default {FULL['steps']}; --quick: "
                             f"{QUICK['steps']})")
    parser.add_argument("--batch_size", type=int, default=None,
                        help=f"batch size (default {FULL['batch_size']}; --quick: "
                             f"{QUICK['batch_size']})")
    parser.add_argument("--learning_rate", type=float, default=None,
                        help="peak learning rate after the warm-up (default "
                             f"{FULL['learning_rate']:g}; --quick: "
                             f"{QUICK['learning_rate']:g})")
    args = parser.parse_args(argv)
    run(quick=args.quick, workdir=args.workdir, backbone=args.backbone, steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate)


if __name__ == "__main__":
    main()
