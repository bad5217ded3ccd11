"""Inference speed against the PyTorch peer, both measured in the same invocation.

    make bench-peer        # the training comparison (benchmarks.peer), then this
    python -m benchmarks.peer_inference [--archs=iresnet50,mobilefacenet] [--rounds=N]
                                        [--threads=2] [--peer_python=PATH] [--quick]

This side: a freshly initialised iresnet50 / MobileFaceNet of this project, exported as users
export it (a SavedModel with the serving receiver, as ``estimator_main.py --mode=export``), then
frozen (``export/freeze.py``) and converted (``export/deploy_formats.py``: ONNX, TFLite float32,
TFLite int8); ``benchmarks.deploy.build_formats`` does exactly that, in a child process whose
memory is given back before the timing (``<arch>_build_peak_rss_mb``; this process's own peak is
``<arch>_peak_rss_mb``, cumulative over the architectures). Each format runs in its own
runtime as ``export/format_checks.py`` runs it: the SavedModel's pixels signature and the frozen
graph in a TF session, ONNX Runtime (CPU provider), the TFLite interpreter (XNNPACK delegate; a
batch of 64 is one invocation with the input resized to 64).
The peer: insightface's same architectures in PyTorch (``benchmarks/peer_torch_infer.py``: eager
``inference_mode`` and TorchScript traced, frozen and optimised for inference), run by the peer's
own Python (``--peer_python``, else ``$PEER_PYTHON``, else ``.venv-peer/bin/python``) as a warm
subprocess on a pipe. Parameter counts of both sides are printed (``*_params_equal``). Every
runtime of both sides gets ``--threads`` threads (default 2).

Both sides take turns, as ``benchmarks.peer`` does for training: per batch size, every round
times each format of one side and then each of the other's (``calls`` calls each), the order of
the sides flipping every round, so load from other jobs hits both alike. Per format: images/s
(batch / the median seconds per call) at batch 1 and 64, and at batch 1 the latency percentiles
p50 and p99 (nearest rank, over every timed call). ``<arch>_infer_b<N>_over_peer`` is the median
over rounds of the paired ratio best project format / best peer format (each side's best by
images/s, named in ``..._best`` and ``..._peer_best``); ``..._fp32_over_peer`` is the same with
the project's int8 model left out (int8 against fp32 is not like for like). Above 1 means this
project embeds faster.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common, deploy, peer, train_step
from export import deploy_formats, format_checks

ARCHS = ("iresnet50", "mobilefacenet")
PROJECT_FORMATS = deploy.FORMATS
INT8_FORMATS = ("tflite_int8",)
PEER_FORMATS = ("eager", "torchscript")
PEER_PREFIX = "torch_"
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_torch_infer.py")
IMAGE_SIZE, EMBEDDING_SIZE, THREADS = 112, 512, 2
BATCHES = (1, 64)
# (calls per round at batch 1, calls per round at the large batch, rounds); a call of iresnet50
# takes about 0.1 s at batch 1 and 5 s at batch 64 on two cores.
SCHEDULE = {"iresnet50": (15, 1, 5), "mobilefacenet": (30, 1, 5)}
# Checks that the benchmark runs end to end; the figures mean little.
QUICK = {"archs": ("mobilefacenet",), "batches": (1, 4), "image_size": IMAGE_SIZE,
         "embedding_size": EMBEDDING_SIZE, "schedule": (3, 1, 2)}
TARGET_OVER_PEER = 1.2
# Untimed calls per format and batch size before the first round, on both sides (TorchScript's
# profiling executor optimises the graph on its second call).
WARMUP_CALLS = 2


def percentile(values, percent):
    """The nearest-rank percentile: the smallest value with at least ``percent``% of the
    values at or below it (a p99 latency is then a latency some call really had)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(1, int(math.ceil(percent / 100.0 * len(ordered))))
    return ordered[rank - 1]


def summarize(batch, rounds):
    """Figures of one format at one batch size from ``rounds``: a list per round of seconds
    per call. Returns images/s (batch / median seconds per call), p50/p99 latency in ms and
    the per-round seconds per call (mean of the round's calls)."""
    calls = [seconds for round_seconds in rounds for seconds in round_seconds]
    return {"images_per_s": batch / float(np.median(calls)),
            "p50_ms": 1000.0 * percentile(calls, 50), "p99_ms": 1000.0 * percentile(calls, 99),
            "round_seconds": [float(np.mean(r)) for r in rounds], "calls": len(calls)}


def best_over_peer(figures, candidates, peer_formats):
    """``(best candidate, best peer format, median of per-round paired ratios, ratio of
    images/s)``; ``figures`` maps a format to :func:`summarize`'s dict."""
    ours = max(candidates, key=lambda name: figures[name]["images_per_s"])
    theirs = max(peer_formats, key=lambda name: figures[name]["images_per_s"])
    paired = [peer_seconds / project_seconds for project_seconds, peer_seconds in
              zip(figures[ours]["round_seconds"], figures[theirs]["round_seconds"])]
    return (ours, theirs, float(np.median(paired)), paired,
            figures[ours]["images_per_s"] / figures[theirs]["images_per_s"])


class PeerEmbedder(peer.PeerProcess):
    """The PyTorch side as a subprocess: built and warmed up on start, then ``timed()``."""

    def timed(self, name, batch, calls):
        """Seconds of each of ``calls`` calls of format ``name`` at ``batch`` (timed inside)."""
        request = {"format": name, "batch": batch, "calls": calls}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._receive()["seconds"]


def peer_command(peer_python, arch, batches, image_size, threads):
    return [peer_python, PEER_SCRIPT, f"--backbone={arch}",
            f"--batches={','.join(str(b) for b in batches)}", f"--image_size={image_size}",
            f"--threads={threads}", f"--warmup={WARMUP_CALLS}"]


def project_runner(name, path, threads):
    """Format ``name`` at ``path`` in its runtime (export/format_checks.py's runners), every
    runtime at ``threads`` threads."""
    if name in ("savedmodel", "frozen_graph"):
        config = common.session_config()
        config.intra_op_parallelism_threads = threads
        config.inter_op_parallelism_threads = 1
        if name == "savedmodel":
            return format_checks.SavedModelRunner(path, config)
        return format_checks.FrozenGraphRunner(path, config)
    return format_checks.runner_for(path, threads)


def saved_model_params(saved_model_dir):
    """Trainable backbone parameters of the exported SavedModel (its graph's collection)."""
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        tf.saved_model.loader.load(session, [tf.saved_model.tag_constants.SERVING],
                                   saved_model_dir)
        return train_step.trainable_params(graph)


def _timed_calls(fn, calls):
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(peer_python, arch, workdir, batches, image_size, embedding_size, schedule,
            threads, rounds=None, calls=None):
    """Both sides of one architecture, alternating; returns ``(peer ready message, project
    parameters, {batch: {format: summarize(...)}}, memory)``; peer formats carry PEER_PREFIX;
    ``memory``: the peak resident MiB of the conversions' child process and of this one."""
    # Converted in a child process, whose memory (iresnet50's conversions peak near 18 GiB)
    # goes back to the system before anything is timed.
    paths, build_peak_mb = deploy.build_formats_apart(workdir, arch, image_size, embedding_size)
    params = saved_model_params(paths["savedmodel"])
    b1_calls, large_calls, count = schedule
    b1_calls, count = calls or b1_calls, rounds or count
    rng = np.random.RandomState(0)
    pixels = np.stack([common.face_like_pixels(rng, image_size)
                       for _ in range(max(batches))]).astype(np.float32)
    # The peer builds and warms up first, then waits on its pipe while this side does the same.
    with PeerEmbedder(peer_command(peer_python, arch, batches, image_size, threads)) as other:
        runners = {name: project_runner(name, paths[name], threads) for name in PROJECT_FORMATS}
        try:
            results = {}
            for batch in batches:
                images = pixels[:batch]
                calls = b1_calls if batch == 1 else large_calls
                for runner in runners.values():
                    for _ in range(WARMUP_CALLS):  # graph optimisation, allocation, delegates
                        runner(images)
                samples = {name: [] for name in PROJECT_FORMATS}
                samples.update({PEER_PREFIX + name: [] for name in PEER_FORMATS})
                for index in range(count):
                    sides = ("project", "peer") if index % 2 == 0 else ("peer", "project")
                    for side in sides:
                        if side == "project":
                            for name, runner in runners.items():
                                samples[name].append(_timed_calls(
                                    lambda r=runner, x=images: r(x), calls))
                        else:
                            for name in PEER_FORMATS:
                                samples[PEER_PREFIX + name].append(
                                    other.timed(name, batch, calls))
                    per_call = ", ".join(f"{name} {1000 * np.mean(seconds[-1]):.1f}"
                                         for name, seconds in samples.items())
                    sys.stderr.write(f"peer_inference: {arch} batch {batch} round "
                                     f"{index + 1}/{count}, ms per call: {per_call}\n")
                results[batch] = {name: summarize(batch, rounds_seconds)
                                  for name, rounds_seconds in samples.items()}
        finally:
            for runner in runners.values():
                runner.close()
    memory = {"build_peak_rss_mb": build_peak_mb, "peak_rss_mb": common.peak_rss_mb()}
    return other.ready, params, results, memory


def arch_figures(arch, ready, params, results):
    """The JSON figures of one architecture."""
    figures = {f"{arch}_params_project": params, f"{arch}_params_peer": ready["backbone_params"],
               f"{arch}_params_equal": params == ready["backbone_params"]}
    peer_names = [PEER_PREFIX + name for name in PEER_FORMATS]
    fp32 = [name for name in PROJECT_FORMATS if name not in INT8_FORMATS]
    for batch, by_format in results.items():
        for name, summary in by_format.items():
            key = f"{arch}_{name}_b{batch}"
            figures[f"{key}_images_per_s"] = common.rounded(summary["images_per_s"], 2)
            if batch == 1:
                figures[f"{key}_p50_ms"] = common.rounded(summary["p50_ms"], 2)
                figures[f"{key}_p99_ms"] = common.rounded(summary["p99_ms"], 2)
        for label, candidates in (("", list(PROJECT_FORMATS)), ("_fp32", fp32)):
            ours, theirs, median, paired, of_medians = best_over_peer(by_format, candidates,
                                                                      peer_names)
            key = f"{arch}_infer_b{batch}{label}"
            figures[f"{key}_over_peer"] = round(median, 3)
            figures[f"{key}_over_peer_rounds"] = [round(r, 3) for r in paired]
            # The spread of the per-round ratios, as benchmarks.peer reports training's.
            spread = common.spread(paired)
            for name in ("q1", "q3", "iqr", "min", "max"):
                figures[f"{key}_over_peer_{name}"] = round(spread[name], 3)
            figures[f"{key}_over_peer_of_medians"] = round(of_medians, 3)
            figures[f"{key}_best"] = ours
            figures[f"{key}_peer_best"] = theirs
    return figures


def ratio_keys(archs, batches):
    return [f"{arch}_infer_b{batch}{label}_over_peer" for arch in archs for batch in batches
            for label in ("", "_fp32")]


def run(quick=False, workdir=None, archs=None, rounds=None, threads=THREADS, peer_python=None,
        calls=None, batches=None):
    """Measure and print one JSON line; returns its dict. ``workdir`` keeps the exported and
    converted models (a later run reuses them)."""
    archs = list(archs or (QUICK["archs"] if quick else ARCHS))
    unknown = [arch for arch in archs if arch not in ARCHS]
    if unknown:
        raise ValueError(f"unknown architecture(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(ARCHS)}")
    batches = tuple(batches or (QUICK["batches"] if quick else BATCHES))
    image_size = QUICK["image_size"] if quick else IMAGE_SIZE
    embedding_size = QUICK["embedding_size"] if quick else EMBEDDING_SIZE
    machine = common.machine()
    figures = {"batches": list(batches), "image_size": image_size, "threads": threads,
               "cpu_model": machine["cpu_model"], "isa": machine["isa"], "tf": machine["tf"],
               "load_average_start": common.load_average()}
    python = peer.find_peer_python(peer_python)
    missing = [what for what, ok in (("tf2onnx/onnx/onnxruntime", deploy_formats.onnx_available()),
                                     ("tf.lite of TensorFlow 2", deploy_formats.tflite_available()))
               if not ok]
    if python is None or missing:
        figures.update({key: None for key in ratio_keys(archs, batches)})
        figures["skipped"] = NO_PEER if python is None else f"needs {' and '.join(missing)}"
        return common.emit("peer_inference", figures)
    figures.update({"project_formats": list(PROJECT_FORMATS),
                    "peer_formats": [PEER_PREFIX + name for name in PEER_FORMATS],
                    "input": "one in-memory batch of 112x112 RGB pixels, repeated",
                    "ratio": "median over rounds of best project format images/s / best peer "
                             "format images/s, the two sides alternating round by round"})
    with common.scratch_dir(workdir, "bench_peer_inference_") as scratch:
        for arch in archs:
            schedule = QUICK["schedule"] if quick else SCHEDULE[arch]
            ready, params, results, memory = measure(python, arch, scratch, batches,
                                                     image_size, embedding_size, schedule,
                                                     threads, rounds, calls)
            for key, value in memory.items():
                figures[f"{arch}_{key}"] = value
            for key in ("torch", "cpu_capability", "memory_format"):
                figures.setdefault(f"peer_{key}", ready[key])
            figures[f"{arch}_torchscript_max_rel_diff"] = ready["torchscript_max_rel_diff"]
            figures[f"{arch}_rounds"] = rounds or schedule[2]
            figures.update(arch_figures(arch, ready, params, results))
            for batch in batches:
                key = f"{arch}_infer_b{batch}"
                sys.stderr.write(f"peer_inference: {key} {figures[key + '_over_peer']}x the "
                                 f"peer ({figures[key + '_best']} against "
                                 f"{figures[key + '_peer_best']}); fp32 "
                                 f"{figures[key + '_fp32_over_peer']}x\n")
    figures["load_average_end"] = common.load_average()
    figures["targets"] = {"over_peer": TARGET_OVER_PEER}
    return common.emit("peer_inference", figures)


NO_PEER = peer.NO_PEER


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--archs", default=None,
                        help=f"comma-separated subset of {','.join(ARCHS)}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds per architecture and batch size (default 5)")
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes (default 1,64; --quick 1,4)")
    parser.add_argument("--calls", type=int, default=None,
                        help="calls per format and round at batch 1 (default: iresnet50 15, "
                             "mobilefacenet 30)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="threads of every runtime on both sides (default 2)")
    parser.add_argument("--peer_python", default=None,
                        help="the peer's Python, with torch (default: $PEER_PYTHON, else "
                             ".venv-peer/bin/python)")
    args = parser.parse_args(argv)
    if args.peer_python and peer.find_peer_python(args.peer_python) is None:
        parser.error(f"--peer_python {args.peer_python} is not an executable file")
    archs = tuple(args.archs.split(",")) if args.archs else None
    unknown = [arch for arch in archs or () if arch not in ARCHS]
    if unknown:
        parser.error(f"unknown architecture(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(ARCHS)}")
    run(quick=args.quick, workdir=args.workdir, archs=archs, rounds=args.rounds,
        threads=args.threads, peer_python=args.peer_python, calls=args.calls,
        batches=[int(b) for b in args.batches.split(",")] if args.batches else None)


if __name__ == "__main__":
    main()
