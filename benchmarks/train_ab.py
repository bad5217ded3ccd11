"""Before/after of this project's training-step changes, measured in one process.

    python -m benchmarks.train_ab --backbone=mobilefacenet --precision=bf16 --batch=32 \\
        --before=select_prelu --rounds=6
    python -m benchmarks.train_ab --backbone=mobilefacenet --precision=bf16 \\
        --after_precision=fp32        # bf16 against fp32, both as the project trains now

Builds the model_fn's TRAIN graph twice, "before" with the changes named in ``--before`` undone
and "after" as the project is (or at ``--after_precision``), warms both up, then runs one step of
each per round, the order flipping every round. Prints one JSON line: the median step times, the
per-round speed-ups (before / after step time) with their median, quartiles and extremes, and the
load average. The changes it can undo (issue 29, docs/PERFORMANCE.md):

* ``select_prelu``: PReLU trains in the select form whatever the dtype (bf16 selects are slow);
* ``depthwise_groups``: grouped convolutions train as depthwise + sum, not one grouped Conv2D;
* ``bf16_depthwise``: grouped/depthwise convolutions of bf16 activations compute in bf16.
"""

import argparse
import contextlib
import time

import tensorflow.compat.v1 as tf

from benchmarks import common, train_step
from model import layers

CHANGES = ("select_prelu", "depthwise_groups", "bf16_depthwise")


def _select_prelu(x, name=None, is_training=True):
    """layers.prelu as it was: the select form in every training graph."""
    if not is_training:
        return _PROJECT_PRELU(x, name=name, is_training=False)
    with tf.variable_scope(name, default_name="prelu"):
        alpha = tf.get_variable("alpha", [int(x.shape[-1])], tf.float32,
                                tf.constant_initializer(0.25))
        alpha = tf.cast(alpha, x.dtype) if x.dtype.base_dtype != tf.float32 else alpha
        return tf.where(x >= 0, x, alpha * x)


_PROJECT_PRELU = layers.prelu


@contextlib.contextmanager
def undone(changes):
    """The project with ``changes`` undone while a graph is built."""
    saved = (layers.prelu, layers.grouped_conv2d_supported, layers.BF16_GROUPED_CONV_IN_FLOAT32)
    if "select_prelu" in changes:
        layers.prelu = _select_prelu
    if "depthwise_groups" in changes:
        layers.grouped_conv2d_supported = lambda: False
    if "bf16_depthwise" in changes:
        layers.BF16_GROUPED_CONV_IN_FLOAT32 = False
    try:
        yield
    finally:
        (layers.prelu, layers.grouped_conv2d_supported,
         layers.BF16_GROUPED_CONV_IN_FLOAT32) = saved


def training_step(backbone, precision, batch, num_classes, changes, warmup=2):
    """A function running one training step of a fresh graph and session."""
    graph = tf.Graph()
    with graph.as_default(), undone(changes):
        tf.set_random_seed(0)
        features, labels = tf.data.make_one_shot_iterator(train_step.synthetic_batches(
            batch, num_classes, common.IMAGE_SIZE)).get_next()
        model_fn = common.circle_model_fn(backbone, num_classes, precision=precision,
                                          learning_rate=0.01, total_steps=1001,
                                          warmup_steps=1000)
        train = tf.group(model_fn(features, labels, tf.estimator.ModeKeys.TRAIN).train_op)
        init = tf.group(tf.global_variables_initializer(), tf.local_variables_initializer())
    session = tf.Session(graph=graph, config=common.session_config())
    session.run(init)
    for _ in range(warmup):
        session.run(train)
    return lambda: session.run(train)


def run(backbone, precision, batch, rounds, before, after_precision=None, num_classes=100):
    unknown = [c for c in before if c not in CHANGES]
    if unknown:
        raise ValueError(f"unknown change(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(CHANGES)}")
    load_start = common.load_average()
    steps = {"before": training_step(backbone, precision, batch, num_classes, before),
             "after": training_step(backbone, after_precision or precision, batch, num_classes,
                                    ())}
    seconds = {"before": [], "after": []}
    for index in range(rounds):
        for side in (("before", "after") if index % 2 == 0 else ("after", "before")):
            start = time.perf_counter()
            steps[side]()
            seconds[side].append(time.perf_counter() - start)
    speedups = [b / a for b, a in zip(seconds["before"], seconds["after"])]
    stats = common.spread(speedups)
    figures = {"backbone": backbone, "batch": batch, "precision": precision,
               "after_precision": after_precision or precision, "undone_before": list(before),
               "before_s_per_step": round(common.spread(seconds["before"])["median"], 3),
               "after_s_per_step": round(common.spread(seconds["after"])["median"], 3),
               "speedup_rounds": [round(s, 3) for s in speedups],
               "cpus": common.cpu_count(), "cpu_model": common.cpu_model(),
               "load_average_start": load_start, "load_average_end": common.load_average()}
    figures.update({f"speedup_{key}": round(stats[key], 3)
                    for key in ("median", "q1", "q3", "min", "max")})
    warning = common.load_warning(figures["load_average_end"], figures["cpus"])
    if warning:
        figures["load_warning"] = warning
    return common.emit("train_ab", figures)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mobilefacenet")
    parser.add_argument("--precision", default="bf16", choices=train_step.PRECISIONS)
    parser.add_argument("--after_precision", default=None, choices=train_step.PRECISIONS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--before", default="",
                        help=f"comma-separated changes to undo in 'before': {', '.join(CHANGES)}")
    args = parser.parse_args(argv)
    before = tuple(c for c in args.before.split(",") if c)
    try:
        run(args.backbone, args.precision, args.batch, args.rounds, before,
            args.after_precision)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
