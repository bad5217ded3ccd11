"""Shared benchmark machinery: timing, generated JPEG folders, JSON output, sessions."""

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from data_tools import conversion
from model import backbones

IMAGE_SIZE = backbones.default_image_size("iresnet50")  # the backbones' own input size


def cpu_count():
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return multiprocessing.cpu_count()


def _cpuinfo_field(field):
    """The first ``field : value`` of /proc/cpuinfo ('' when unreadable, e.g. not on Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags():
    """The CPU's feature flags (/proc/cpuinfo; empty when unknown)."""
    return set(_cpuinfo_field("flags").split())


def cpu_model():
    return _cpuinfo_field("model name") or platform.processor() or None


# The vector units that decide fp32 and bf16 speed: AVX2, AVX-512, and bf16 in hardware
# (AVX512-BF16 dot products, AMX tiles). Without the last two, bf16 is emulated in fp32.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def peak_rss_mb():
    """The largest resident set of this process so far, in whole MiB (None where ``resource``
    is missing, e.g. on Windows)."""
    try:
        import resource  # noqa: PLC0415  (Unix only)
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # Linux: KiB


def load_average():
    """1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def quantile(values, fraction):
    """The ``fraction`` quantile of ``values`` by linear interpolation between order statistics
    (numpy's default, "linear"; written out so the tests can check it against numpy)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("quantile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values):
    """Median, quartiles and extremes of per-round figures: ``{"median", "q1", "q3", "iqr",
    "min", "max", "n"}``. The median is what a report quotes; the interquartile range is how
    far the middle half of the rounds scatter (a burst of load on one round moves the extremes,
    not the quartiles)."""
    q1, median, q3 = (quantile(values, f) for f in (0.25, 0.5, 0.75))
    return {"median": median, "q1": q1, "q3": q3, "iqr": q3 - q1,
            "min": min(float(v) for v in values), "max": max(float(v) for v in values),
            "n": len(values)}


def load_warning(load, cores):
    """A one-line warning when the 1-minute load average exceeds the cores, else None: then
    other jobs took CPU time from the measurement and only same-run ratios mean anything."""
    if not load or load[0] <= cores:
        return None
    return (f"load average {load[0]:.2f} > {cores} cores: other jobs share the CPUs, absolute "
            "figures are low and per-round ratios scatter; quote the median and its spread")


def machine():
    """A short description of where the figures came from."""
    flags = cpu_flags()
    load = load_average()
    return {"cpus": cpu_count(), "cpu_model": cpu_model(),
            "isa": [name for name in ISA_FLAGS if name in flags], "tf": tf.__version__,
            "python": platform.python_version(), "load_1min": load[0] if load else None}


def emit(name, figures, stream=None):
    """Print one JSON line ``{"benchmark": name, ...figures}`` and return the dict."""
    record = {"benchmark": name}
    record.update(figures)
    stream = stream or sys.stdout
    stream.write(json.dumps(record, sort_keys=False) + "\n")
    stream.flush()
    return record


def ratio(numerator, denominator):
    """``numerator / denominator`` rounded for reports; None when undefined."""
    if not denominator:
        return None
    return round(float(numerator) / float(denominator), 3)


def rounded(value, digits=1):
    return round(float(value), digits)


def timed(fn, repeats=1):
    """Seconds of the fastest of ``repeats`` calls of ``fn()`` (the least disturbed by others)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def per_call(fn, calls):
    """Seconds per call over ``calls`` back-to-back calls of ``fn()``."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved(runners, rounds):
    """Seconds per call of each runner, measured in alternating rounds.

    ``runners`` maps a name to ``(fn, calls_per_round)``; every round runs each runner once
    (``calls_per_round`` calls) in turn, so a burst of load from other jobs hits all of them
    alike. Returns ``{name: median over rounds of seconds per call}``.
    """
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, (fn, calls) in runners.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(values)) for name, values in samples.items()}


def session_config():
    """Default threading (TensorFlow sizes its pools to the cores), no device placement logs."""
    return tf.ConfigProto(allow_soft_placement=True)


def face_like_pixels(rng, size=IMAGE_SIZE):
    """A smooth random image with fine noise: JPEG sizes and decode cost close to real faces.

    Pure noise would compress far worse than faces and smooth gradients far better; a low-
    resolution random field upsampled, plus mild per-pixel noise, lands near aligned-face JPEGs
    (about 4-6 kB at 112x112, quality 90).
    """
    coarse = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.float32)
    image = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize(
        (size, size), Image.BICUBIC), np.float32)
    image += rng.normal(0.0, 12.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels, quality=90):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_jpeg_folder(root, num_classes, per_class, size=IMAGE_SIZE, seed=0):
    """Write ``num_classes`` identity folders of ``per_class`` JPEGs; returns (files, bytes)."""
    rng = np.random.RandomState(seed)
    total = 0
    files = []
    for label in range(num_classes):
        folder = os.path.join(root, f"id{label:05d}")
        os.makedirs(folder, exist_ok=True)
        for index in range(per_class):
            path = os.path.join(folder, f"{index:04d}.jpg")
            data = jpeg_bytes(face_like_pixels(rng, size))
            with open(path, "wb") as handle:
                handle.write(data)
            files.append(path)
            total += len(data)
    return files, total


def make_train_records(workdir, num_classes, per_class, seed=0):
    """A generated JPEG folder converted with make_tfrecords; returns the records directory."""
    folder = os.path.join(workdir, "faces")
    records = os.path.join(workdir, "records")
    if not os.path.isdir(records):
        write_jpeg_folder(folder, num_classes, per_class, seed=seed)
        conversion.convert_folder(folder, records, num_workers=1, progress=False)
    return records


@contextlib.contextmanager
def scratch_dir(workdir, prefix):
    """``workdir`` when given (kept: a later run reuses what is there), else a new temporary
    directory named ``prefix...``, removed on exit."""
    if workdir is not None:
        yield workdir
        return
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def add_common_args(parser):
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that the benchmark runs, figures mean little")
    parser.add_argument("--workdir", default=None,
                        help="scratch directory (default: a temporary one, removed afterwards)")
    return parser


def run_command_line(run, description, argv=None, repeats_help=None):
    """The command line of a benchmark with no options of its own: ``--quick``, ``--workdir``
    and, when ``repeats_help`` says what is repeated, ``--repeats``; then ``run`` with them."""
    parser = add_common_args(argparse.ArgumentParser(description=description))
    if repeats_help:
        parser.add_argument("--repeats", type=int, default=None, help=repeats_help)
    args = parser.parse_args(argv)
    options = {"repeats": args.repeats} if repeats_help else {}
    run(quick=args.quick, workdir=args.workdir, **options)


def random_head_batch(num_classes, batch, embedding_size):
    """``(embeddings, labels)`` of the head benchmarks, in the current graph (seed 0): a
    trainable ``[batch, embedding_size]`` variable and random int32 labels."""
    tf.set_random_seed(0)
    rng = np.random.RandomState(0)
    embeddings = tf.Variable(rng.standard_normal((batch, embedding_size)).astype(np.float32),
                             name="embeddings")
    labels = tf.constant(rng.randint(0, num_classes, batch).astype(np.int32))
    return embeddings, labels


def circle_model_fn(backbone, num_classes, precision="fp32", gamma=None, **optimization):
    """The training model_fn of the benchmarks: ``backbone`` + the class-level Circle head."""
    from model import config as model_config  # noqa: PLC0415
    from model import heads, model_fn  # noqa: PLC0415

    backbone_config = model_config.BackboneConfig(backbone, precision=precision)
    head = heads.build_head("circle", num_classes=num_classes,
                            embedding_size=backbone_config.embedding_size, gamma=gamma)
    return model_fn.model_fn_builder(backbone_config, head,
                                     model_config.OptimizationConfig(**optimization))
