"""Partial FC: the Circle head's training step at r = 0.1 against r = 1 (every class).

1 M identities x 512-d: 2 GB of float32 proxies (and as much again of momentum). As in
``head_cost``, the backbone is left out: the embeddings are a trainable [batch, 512] variable,
so a step is the head's forward and backward pass, the weight decay of the proxies (all of them
at r = 1, the sampled rows at r < 1, as ``model_fn`` does) and the momentum update.

Each rate runs in a child process of its own, one after the other, so that its memory can be
measured apart (both at once do not fit in 24 GB at 1 M identities). A child reports the
seconds per step and the peak resident memory during its steps (Linux ``VmHWM``, reset before
the steps through ``/proc/self/clear_refs``), as well as the resident memory before them (the
proxies, their momentum and TensorFlow itself): their difference is the step's working memory.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from model import heads, optimization

EMBEDDING_SIZE = 512
BATCH = 64
RATES = (1.0, 0.1)
WEIGHT_DECAY = 5e-4


def _memory_kb(field):
    """``VmRSS`` / ``VmHWM`` of this process in kB (None off Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak():
    """Start VmHWM afresh (Linux >= 4.0); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _child(num_classes, rate, batch, warmup):
    """Serves ``run N`` lines on stdin with one JSON line each on stdout; ``quit`` ends."""
    graph = tf.Graph()
    with graph.as_default():
        embeddings, labels = common.random_head_batch(num_classes, batch, EMBEDDING_SIZE)
        head = heads.build_head("circle", num_classes=num_classes,
                                embedding_size=EMBEDDING_SIZE, partial_fc_rate=rate)
        output = head(embeddings, labels)
        loss = tf.reduce_mean(output.per_example_loss)
        proxies = [v for v in tf.trainable_variables() if "proxies" in v.op.name]
        rows = [] if output.sampled_rows is None else [output.sampled_rows]
        loss += optimization.weight_decay_loss(WEIGHT_DECAY, variables=proxies, rows=rows)
        train = tf.train.MomentumOptimizer(0.01, 0.9).minimize(loss)
        init = tf.global_variables_initializer()
    session = tf.Session(graph=graph, config=common.session_config())
    session.run(init)
    for _ in range(warmup):
        session.run(train)
    print(json.dumps({"ready": True, "num_sample": head.num_sample}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        steps = int(command[1])
        resident = _memory_kb("VmRSS")
        reset = _reset_peak()
        start = time.perf_counter()
        for _ in range(steps):
            session.run(train)
        seconds = (time.perf_counter() - start) / steps
        print(json.dumps({"seconds": seconds, "rss_kb": resident,
                          "peak_kb": _memory_kb("VmHWM") if reset else None}), flush=True)
    session.close()


class _Child:
    """One rate's child process."""

    def __init__(self, num_classes, rate, batch, warmup):
        command = [sys.executable, "-m", "benchmarks.partial_fc", "--child",
                   f"--num_classes={num_classes}", f"--rate={rate}", f"--batch={batch}",
                   f"--warmup={warmup}"]
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        universal_newlines=True, env=env, cwd=root)
        self.ready = self._reply()

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Partial FC benchmark child {self.process.args} stopped "
                               f"(exit status {self.process.wait()})")
        return json.loads(line)

    def run(self, steps):
        self.process.stdin.write(f"run {steps}\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def run(quick=False, workdir=None, num_classes=None, rates=RATES):
    """Measure and print; returns the JSON dict (``workdir`` is unused: no files). The ratios
    set ``rates[1]`` against ``rates[0]``."""
    del workdir
    num_classes = num_classes or (20000 if quick else 1000000)
    batch = 8 if quick else BATCH
    warmup, steps, rounds = (1, 2, 2) if quick else (1, 2, 3)
    # One child at a time: at 1 M identities the full head's step alone peaks near 15 GB
    # (several [D, C] temporaries besides the proxies and their momentum), and two children
    # side by side exceeded this 24 GB machine.
    ready, samples = {}, {}
    for rate in rates:
        child = _Child(num_classes, rate, batch, warmup)
        try:
            ready[rate] = child.ready
            samples[rate] = [child.run(steps) for _ in range(rounds)]
        finally:
            child.close()
    figures = {"num_classes": num_classes, "embedding_size": EMBEDDING_SIZE, "batch": batch,
               "proxy_gb": common.rounded(4 * num_classes * EMBEDDING_SIZE / 1e9, 2)}
    seconds, peaks, working = {}, {}, {}
    for rate in rates:
        name = f"r{rate:g}".replace(".", "")
        seconds[rate] = float(np.median([s["seconds"] for s in samples[rate]]))
        figures[f"{name}_num_sample"] = ready[rate]["num_sample"]
        figures[f"{name}_ms_per_step"] = common.rounded(1000 * seconds[rate], 1)
        measured = [s for s in samples[rate] if s["peak_kb"] is not None]
        if measured:
            peaks[rate] = max(s["peak_kb"] for s in measured)
            working[rate] = max(s["peak_kb"] - s["rss_kb"] for s in measured)
            figures[f"{name}_peak_rss_gb"] = common.rounded(peaks[rate] / 1e6, 2)
            figures[f"{name}_step_working_memory_gb"] = common.rounded(working[rate] / 1e6, 3)
    full, low = rates[0], rates[1]
    figures["time_ratio"] = common.ratio(seconds[low], seconds[full])
    if len(peaks) == len(rates):
        figures["peak_rss_ratio"] = common.ratio(peaks[low], peaks[full])
        figures["working_memory_ratio"] = common.ratio(working[low], working[full])
    figures["target_time_ratio"] = 0.25
    return common.emit("partial_fc", figures)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--num_classes", type=int, default=None,
                        help="identities (default 1,000,000; --quick: 20,000)")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES),
                        help="partial_fc_rate values; the ratios set the 2nd against the 1st")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.num_classes, args.rate, args.batch, args.warmup)
    else:
        run(quick=args.quick, workdir=args.workdir, num_classes=args.num_classes,
            rates=[float(r) for r in args.rates.split(",")])


if __name__ == "__main__":
    main()
