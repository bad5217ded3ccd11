"""Training step throughput per backbone and precision, with real and synthetic input.

Each backbone and precision builds the model_fn's TRAIN spec (class-level Circle head, momentum
SGD) in its own graph and runs ``train_op`` in a ``tf.Session`` loop, after a warm-up (oneDNN
primitive creation, tf.data AUTOTUNE). ``real`` input is the training input_fn over TFRecords of
generated JPEGs; ``synthetic`` is one fixed in-memory batch repeated through tf.data; both feed the
same graph through a feedable iterator and alternate in rounds, so ``real / synthetic`` near 1
means the input pipeline never starves the model.

FLOPs are counted with ``tf.profiler`` (float_ops of the inference-mode forward graph at batch 1)
and a training step is taken as 3x the forward pass (forward + two backward products), the usual
analytic estimate. The peak is a measured square matmul of the same dtype in the same run.
"""

import argparse
import contextlib
import functools

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from data_tools import input_fns
from model import model_fn as model_fn_lib
from runtime import estimator_factory

BACKBONES = ("tiny", "mobilefacenet", "iresnet50")
PRECISIONS = ("fp32", "bf16")
DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16}
# (warm-up steps per input, steps per round, rounds) at batch 64: one to four minutes per
# backbone on 2 cores.
STEPS = {"tiny": (3, 5, 3), "mobilefacenet": (2, 2, 3), "iresnet50": (2, 1, 3)}
QUICK_STEPS = (1, 1, 2)


def matmul_peak(dtype, size=2048, count=4, repeats=5):
    """FLOP/s of ``count`` independent ``size``-square matmuls of ``dtype`` (best of repeats)."""
    graph = tf.Graph()
    with graph.as_default():
        products = []
        for index in range(count):
            a = tf.Variable(tf.cast(tf.random.normal([size, size], seed=2 * index), dtype))
            b = tf.Variable(tf.cast(tf.random.normal([size, size], seed=2 * index + 1), dtype))
            products.append(tf.matmul(a, b))
        # Fetch a reduction: Grappler prunes stateless ops that only feed a tf.group.
        step = tf.add_n([tf.reduce_sum(tf.cast(p, tf.float32)) for p in products])
        init = tf.global_variables_initializer()
    with tf.Session(graph=graph, config=common.session_config()) as session:
        session.run(init)
        session.run(step)  # warm-up
        seconds = common.timed(lambda: session.run(step), repeats=repeats)
    return 2.0 * size ** 3 * count / seconds


def forward_flops_per_image(backbone, image_size=common.IMAGE_SIZE):
    """Float ops of one image's inference forward pass, counted by ``tf.profiler``."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.zeros([1, image_size, image_size, 3], tf.float32)
        model_fn_lib.embed(images, backbone, is_training=False, embedding_size=512)
        options = tf.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        stats = tf.profiler.profile(graph, options=options)
    return float(stats.total_float_ops)


@contextlib.contextmanager
def training_steps(backbone, precision, dataset_fns, num_classes, warmup):
    """An open session training ``backbone`` at ``precision``: yields ``(steps, graph)``.

    ``dataset_fns`` maps a name to a function building a tf.data dataset; one model is built on
    a feedable iterator, so every input trains the same graph and variables. ``steps`` maps each
    name to a function running one training step fed by that input, after ``warmup`` steps of
    each (oneDNN primitive creation, tf.data AUTOTUNE).
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        datasets = {name: fn() for name, fn in dataset_fns.items()}
        first = next(iter(datasets.values()))
        handle = tf.placeholder(tf.string, [])
        iterator = tf.data.Iterator.from_string_handle(
            handle, tf.data.get_output_types(first), tf.data.get_output_shapes(first))
        features, labels = iterator.get_next()
        iterators = {name: tf.data.make_one_shot_iterator(dataset)
                     for name, dataset in datasets.items()}
        model_fn = common.circle_model_fn(backbone, num_classes, precision=precision,
                                          learning_rate=0.01, total_steps=1001,
                                          warmup_steps=1000)
        spec = model_fn(features, labels, tf.estimator.ModeKeys.TRAIN)
        init = tf.group(tf.global_variables_initializer(), tf.local_variables_initializer())
        train = tf.group(spec.train_op)
        handles = {name: it.string_handle() for name, it in iterators.items()}
    with tf.Session(graph=graph, config=common.session_config()) as session:
        session.run(init)
        steps = {}
        for name, handle_op in handles.items():
            feed = {handle: session.run(handle_op)}
            steps[name] = functools.partial(session.run, train, feed_dict=feed)
            for _ in range(warmup):
                steps[name]()
        yield steps, graph


def trainable_params(graph, scope="backbone"):
    """Trainable parameters of the variables under ``scope/`` in ``graph`` (by default the
    backbone's: ``model_fn.embed`` builds it under ``backbone/``)."""
    variables = graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES)
    return int(sum(np.prod(v.shape.as_list()) for v in variables
                   if v.op.name.startswith(scope + "/")))


def synthetic_batches(batch, num_classes, image_size):
    """One fixed in-memory batch of random pixels and labels, repeated through tf.data."""
    rng = np.random.RandomState(0)
    images = rng.uniform(-1.0, 1.0, (batch, image_size, image_size, 3)).astype(np.float32)
    labels = rng.randint(0, num_classes, batch).astype(np.int32)
    dataset = tf.data.Dataset.from_tensors(({"image": images}, labels)).repeat()
    return dataset.prefetch(tf.data.experimental.AUTOTUNE)


def time_training(backbone, precision, dataset_fns, num_classes, warmup, steps, rounds):
    """Seconds per training step of ``backbone`` at ``precision`` fed by each dataset.

    The inputs of ``dataset_fns`` (see ``training_steps``) are timed in alternating rounds of
    ``steps`` steps (a burst of load from other jobs hits them alike). Returns
    ``{name: median over rounds of seconds per step}``.
    """
    with training_steps(backbone, precision, dataset_fns, num_classes, warmup) as (fns, _):
        return common.interleaved({name: (fn, steps) for name, fn in fns.items()}, rounds)


def available_precisions():
    """fp32, and bf16 where TensorFlow has bfloat16 CPU kernels (TF 2.x, not Ascend's 1.15)."""
    return PRECISIONS if estimator_factory.bfloat16_supported() else ("fp32",)


def run(quick=False, workdir=None, backbones=None, precisions=None):
    """Measure and print; returns the JSON dict."""
    precisions = precisions or available_precisions()
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(PRECISIONS)}")
    backbones = backbones or (("tiny",) if quick else BACKBONES)
    batch = 8 if quick else 64
    num_classes, per_class = (8, 16) if quick else (100, 30)
    with common.scratch_dir(workdir, "bench_train_") as scratch:
        records = common.make_train_records(scratch, num_classes, per_class)
        real = input_fns.train_input_fn_builder(records, batch_size=batch, seed=0,
                                                shuffle_buffer=num_classes * per_class)
        peak_size = 512 if quick else 2048
        peaks = {p: matmul_peak(DTYPES[p], size=peak_size) for p in precisions}
        figures = {"batch": batch, "image_size": common.IMAGE_SIZE, "precisions": list(precisions),
                   "flops": "tf.profiler float_ops of the forward pass x3 (forward + backward)"}
        achieved = {}
        for backbone in backbones:
            warmup, steps, rounds = QUICK_STEPS if quick else STEPS[backbone]
            step_flops = 3.0 * forward_flops_per_image(backbone) * batch
            figures[f"{backbone}_train_gflop_per_image"] = common.rounded(
                step_flops / batch / 1e9, 3)
            for precision in precisions:
                key = f"{backbone}_{precision}"
                seconds = time_training(backbone, precision, {
                    "real": lambda: real(params={}),
                    "synthetic": lambda: synthetic_batches(batch, num_classes,
                                                            common.IMAGE_SIZE)},
                    num_classes, warmup, steps, rounds)
                for source in ("real", "synthetic"):
                    figures[f"{key}_{source}_images_per_s"] = common.rounded(
                        batch / seconds[source], 2)
                figures[f"{key}_real_over_synthetic"] = common.ratio(seconds["synthetic"],
                                                                       seconds["real"])
                achieved[key] = (precision, step_flops / seconds["synthetic"])
                figures[f"{key}_gflops"] = common.rounded(achieved[key][1] / 1e9)
            if "fp32" in precisions and "bf16" in precisions:
                figures[f"{backbone}_bf16_over_fp32"] = common.ratio(
                    figures[f"{backbone}_bf16_synthetic_images_per_s"],
                    figures[f"{backbone}_fp32_synthetic_images_per_s"])
        # Measured again at the end, the best of both: the peak is what the cores can do when
        # other jobs leave them alone.
        for precision in precisions:
            peaks[precision] = max(peaks[precision], matmul_peak(DTYPES[precision], peak_size))
            figures[f"matmul_peak_gflops_{precision}"] = common.rounded(peaks[precision] / 1e9)
        for key, (precision, flops) in achieved.items():
            figures[f"{key}_over_matmul_peak"] = common.ratio(flops, peaks[precision])
        figures["targets"] = {"real_over_synthetic": 0.95, "iresnet50_bf16_over_fp32": 1.8}
        return common.emit("train_step", figures)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--backbones", default=None,
                        help=f"comma-separated subset of {','.join(BACKBONES)}")
    parser.add_argument("--precisions", default=None,
                        help=f"comma-separated subset of {','.join(PRECISIONS)} (default: those "
                             "this TensorFlow has kernels for)")
    args = parser.parse_args(argv)
    backbones = tuple(args.backbones.split(",")) if args.backbones else None
    run(quick=args.quick, workdir=args.workdir, backbones=backbones,
        precisions=tuple(args.precisions.split(",")) if args.precisions else None)


if __name__ == "__main__":
    main()
