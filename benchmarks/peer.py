"""Training speed against a PyTorch peer, both measured in the same invocation.

    make bench-peer        # builds .venv-peer (requirements-peer.txt), then runs this
    python -m benchmarks.peer [--backbones=iresnet50,mobilefacenet] [--bf16=auto|on|off]
                              [--rounds=N] [--peer_python=PATH] [--quick]

The peer is insightface's iresnet50 and MobileFaceNet written in PyTorch
(``benchmarks/peer_torch.py``), run by the Python of a separate environment (``--peer_python``,
else ``$PEER_PYTHON``, else ``.venv-peer/bin/python``): torch never enters this project's
``.venv``. Both sides train the same backbone (trainable parameter counts compared and printed),
the class-level Circle head over the same number of identities, momentum SGD with weight decay,
the same batch of 112x112 images held in memory, with as many threads as this process has cores.
This side is ``benchmarks.train_step``'s session loop over the ``model_fn``'s ``train_op``.

Both stay warm for the whole measurement, the peer as a subprocess waiting on a pipe, and take
turns: each round runs ``steps`` steps of one side and then of the other, the order flipping
every round (project-peer, peer-project, ...), so load from other jobs and any drift hit both
alike. ``<backbone>_<precision>_over_peer`` is the median over rounds of the paired ratio
project images/s / peer images/s; above 1 means this project trains faster. ``..._over_peer_rounds``
lists every round's ratio, ``..._over_peer_q1``/``_q3``/``_iqr``/``_min``/``_max`` their spread
(what other jobs' load did), ``..._round_load`` the 1-minute load average after each round, and
``..._over_peer_of_medians`` divides the two sides' median images/s. Rounds are short (one step
of each side) and many: a burst of load then spoils one round's ratio, which the median
discards, instead of a third of the measurement. The load average and the cores are printed at
start and end, with a warning when the load exceeds the cores.

bf16 runs by default only on CPUs with bf16 units (AVX512-BF16 or AMX): elsewhere both
frameworks emulate it in fp32 arithmetic, minutes per iresnet50 step, and the ratio says nothing
about the bf16 paths; the ratio is then null with the reason. ``--bf16=on`` measures it anyway
(one round), ``--bf16=off`` never.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks import common, train_step

BACKBONES = ("iresnet50", "mobilefacenet")
PRECISIONS = ("fp32", "bf16")
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_torch.py")
DEFAULT_PEER_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   ".venv-peer", "bin", "python")
BATCH, NUM_CLASSES = 64, 100
# (warm-up steps per side, steps per round, rounds) at batch 64 on 2 cores: iresnet50 takes
# 10-20 s a step in fp32, mobilefacenet 2-4 s.
# One step per round and many rounds (a round is one step of each side, back to back): under
# load, the paired ratio of two adjacent single steps scatters less than that of longer rounds.
STEPS = {"iresnet50": (1, 1, 9), "mobilefacenet": (2, 1, 11)}
# bf16 where the CPU has no bf16 units (--bf16=on): emulated, one round only.
EMULATED_BF16_STEPS = (1, 1, 1)
QUICK = {"backbones": ("mobilefacenet",), "batch": 4, "num_classes": 8, "steps": (1, 1, 2)}
TARGET_OVER_PEER = 1.2
NO_PEER = ("no peer environment: `make bench-peer` builds .venv-peer from requirements-peer.txt "
           "(or pass --peer_python / set PEER_PYTHON to a Python with torch)")


def find_peer_python(explicit=None):
    """The peer's interpreter: ``explicit``, else $PEER_PYTHON, else .venv-peer's; None if
    none of them is an executable file."""
    for candidate in (explicit, os.environ.get("PEER_PYTHON"), DEFAULT_PEER_PYTHON):
        if candidate:
            return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) \
                else None
    return None


def bf16_units_missing():
    """None when the CPU has bf16 units, else why bf16 is not measured by default."""
    flags = common.cpu_flags()
    if any(flag in flags for flag in common.BF16_FLAGS):
        return None
    return ("this CPU has no bf16 units (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo): "
            "TensorFlow and PyTorch both emulate bf16 through fp32 here, so a ratio would "
            "measure two emulations, not the bf16 kernels the targets are about; "
            "--bf16=on measures it anyway")


class PeerProcess:
    """The PyTorch peer as a subprocess: built and warmed up on start, then ``run(steps)``."""

    def __init__(self, command):
        self.command = command
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, bufsize=1)
        self.ready = self._receive()

    def _receive(self):
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the peer exited with code {code}: {' '.join(self.command)}")
        return json.loads(line)

    def run(self, steps):
        """Seconds per step of ``steps`` peer training steps (timed inside the peer)."""
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return self._receive()["seconds_per_step"]

    def close(self):
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def peer_command(peer_python, backbone, precision, batch, num_classes, warmup):
    return [peer_python, PEER_SCRIPT, f"--backbone={backbone}", f"--precision={precision}",
            f"--batch={batch}", f"--num_classes={num_classes}", f"--image_size={common.IMAGE_SIZE}",
            f"--threads={common.cpu_count()}", f"--warmup={warmup}"]


def measure(peer_python, backbone, precision, batch, num_classes, warmup, steps, rounds):
    """Both sides of one backbone and precision, alternating; returns a dict of figures."""
    command = peer_command(peer_python, backbone, precision, batch, num_classes, warmup)
    # The peer builds and warms up first, then waits on its pipe while this side does the same:
    # no two warm-ups share the cores.
    with PeerProcess(command) as peer, train_step.training_steps(
            backbone, precision,
            {"synthetic": lambda: train_step.synthetic_batches(batch, num_classes,
                                                               common.IMAGE_SIZE)},
            num_classes, warmup) as (fns, graph):
        step = fns["synthetic"]

        def project():
            return common.per_call(step, steps)

        samples = {"project": [], "peer": []}
        loads = []
        for index in range(rounds):
            order = ("project", "peer") if index % 2 == 0 else ("peer", "project")
            for side in order:
                samples[side].append(project() if side == "project" else peer.run(steps))
            load = common.load_average()
            loads.append(load[0] if load else None)
            sys.stderr.write(f"peer: {backbone} {precision} round {index + 1}/{rounds}: "
                             f"{samples['project'][-1]:.2f} s/step, peer "
                             f"{samples['peer'][-1]:.2f} s/step, ratio "
                             f"{samples['peer'][-1] / samples['project'][-1]:.3f}, load "
                             f"{loads[-1]}\n")
        params = train_step.trainable_params(graph)
    paired = [theirs / ours for ours, theirs in zip(samples["project"], samples["peer"])]
    return {"ready": peer.ready, "params_project": params,
            "params_peer": peer.ready["backbone_params"],
            "images_per_s": batch / float(np.median(samples["project"])),
            "peer_images_per_s": batch / float(np.median(samples["peer"])),
            "over_peer": float(np.median(paired)), "over_peer_rounds": paired,
            "spread": common.spread(paired), "round_load": loads}


def summary_line(key, stats):
    """``<key>: 1.234x the peer (median of 9 rounds; IQR 1.1-1.3, min 0.9, max 1.4)``."""
    return (f"peer: {key}: {stats['median']:.3f}x the peer (median of {stats['n']} rounds; "
            f"IQR {stats['q1']:.3f}-{stats['q3']:.3f}, min {stats['min']:.3f}, "
            f"max {stats['max']:.3f})")


def _warn_load(when, load):
    """Print (and return) the load warning of ``common.load_warning`` for ``when``, if any."""
    cores = common.cpu_count()
    sys.stderr.write(f"peer: load average at {when} {load} on {cores} cores\n")
    warning = common.load_warning(load, cores)
    if warning:
        warning = f"at {when}: {warning}"
        sys.stderr.write(f"peer: WARNING {warning}\n")
    return warning


def chosen_precisions(bf16, precisions=None):
    """``(precisions to measure, reason bf16 is not measured or None)``."""
    precisions = list(precisions or PRECISIONS)
    reason = None
    if "bf16" in precisions:
        if bf16 == "off":
            reason = "--bf16=off"
        elif "bf16" not in train_step.available_precisions():
            reason = "this TensorFlow has no bfloat16 CPU kernels"
        elif bf16 == "auto":
            reason = bf16_units_missing()
        if reason:
            precisions.remove("bf16")
    return precisions, reason


def run(quick=False, workdir=None, backbones=None, bf16="auto", rounds=None, peer_python=None,
        precisions=None):
    """Measure and print one JSON line; returns its dict. ``workdir`` is unused (the inputs are
    in memory); it keeps the signature of the other benchmarks."""
    del workdir
    backbones = list(backbones or (QUICK["backbones"] if quick else BACKBONES))
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown:
        raise ValueError(f"unknown backbone(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(BACKBONES)}")
    batch = QUICK["batch"] if quick else BATCH
    num_classes = QUICK["num_classes"] if quick else NUM_CLASSES
    unknown = [p for p in precisions or () if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(PRECISIONS)}")
    precisions, bf16_reason = chosen_precisions("off" if quick and bf16 == "auto" else bf16,
                                                precisions)
    machine = common.machine()
    figures = {"batch": batch, "image_size": common.IMAGE_SIZE, "num_classes": num_classes,
               "threads": common.cpu_count(), "cpu_model": machine["cpu_model"],
               "isa": machine["isa"], "tf": machine["tf"],
               "cpus": common.cpu_count(), "load_average_start": common.load_average()}
    start_warning = _warn_load("start", figures["load_average_start"])
    ratio_keys = [f"{b}_{p}_over_peer" for b in backbones for p in PRECISIONS]
    python = find_peer_python(peer_python)
    if python is None:
        figures.update({key: None for key in ratio_keys})
        figures["skipped"] = NO_PEER
        return common.emit("peer", figures)
    figures.update({"head": "circle (m 0.25, gamma 256, 512-d, proxies L2-normalised)",
                    "optimizer": "momentum SGD 0.9, weight decay 5e-4",
                    "input": "one in-memory batch, repeated",
                    "ratio": "median over rounds of project images/s / peer images/s, the "
                             "two alternating round by round"})
    for backbone in backbones:
        for precision in PRECISIONS:
            key = f"{backbone}_{precision}"
            if precision not in precisions:
                figures[f"{key}_over_peer"] = None
                continue
            if quick:
                warmup, steps, count = QUICK["steps"]
            elif precision == "bf16" and bf16_units_missing():
                warmup, steps, count = EMULATED_BF16_STEPS
            else:
                warmup, steps, count = STEPS[backbone]
            count = rounds or count
            result = measure(python, backbone, precision, batch, num_classes, warmup, steps,
                             count)
            figures.setdefault("torch", result["ready"]["torch"])
            figures.setdefault("peer_cpu_capability", result["ready"]["cpu_capability"])
            figures.setdefault("peer_memory_format", result["ready"]["memory_format"])
            figures[f"{backbone}_params_project"] = result["params_project"]
            figures[f"{backbone}_params_peer"] = result["params_peer"]
            figures[f"{backbone}_params_equal"] = (result["params_project"]
                                                   == result["params_peer"])
            figures[f"{key}_rounds"] = count
            figures[f"{key}_steps_per_round"] = steps
            figures[f"{key}_images_per_s"] = common.rounded(result["images_per_s"], 2)
            figures[f"{key}_peer_images_per_s"] = common.rounded(result["peer_images_per_s"], 2)
            figures[f"{key}_over_peer"] = round(result["over_peer"], 3)
            figures[f"{key}_over_peer_rounds"] = [round(r, 3) for r in result["over_peer_rounds"]]
            for name in ("q1", "q3", "iqr", "min", "max"):
                figures[f"{key}_over_peer_{name}"] = round(result["spread"][name], 3)
            figures[f"{key}_round_load"] = result["round_load"]
            figures[f"{key}_over_peer_of_medians"] = common.ratio(result["images_per_s"],
                                                                  result["peer_images_per_s"])
            sys.stderr.write(summary_line(key, result["spread"]) + "\n")
        if "fp32" in precisions and "bf16" in precisions:
            for side in ("", "peer_"):
                figures[f"{backbone}_{side}bf16_over_fp32"] = common.ratio(
                    figures[f"{backbone}_bf16_{side}images_per_s"],
                    figures[f"{backbone}_fp32_{side}images_per_s"])
    if bf16_reason:
        figures["bf16_not_measured"] = bf16_reason
    figures["load_average_end"] = common.load_average()
    warnings = [w for w in (start_warning, _warn_load("end", figures["load_average_end"])) if w]
    if warnings:
        figures["load_warning"] = warnings
    figures["targets"] = {"over_peer": TARGET_OVER_PEER}
    return common.emit("peer", figures)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--backbones", default=None,
                        help=f"comma-separated subset of {','.join(BACKBONES)}")
    parser.add_argument("--precisions", default=None,
                        help=f"comma-separated subset of {','.join(PRECISIONS)} (default: both)")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="auto: only on CPUs with bf16 units (AVX512-BF16, AMX)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds per backbone and precision (default: "
                             f"{STEPS['iresnet50'][2]} for iresnet50, "
                             f"{STEPS['mobilefacenet'][2]} for mobilefacenet; 1 for emulated "
                             "bf16)")
    parser.add_argument("--peer_python", default=None,
                        help="the peer's Python, with torch (default: $PEER_PYTHON, else "
                             ".venv-peer/bin/python)")
    args = parser.parse_args(argv)
    if args.peer_python and find_peer_python(args.peer_python) is None:
        parser.error(f"--peer_python {args.peer_python} is not an executable file")
    run(quick=args.quick, workdir=args.workdir,
        backbones=tuple(args.backbones.split(",")) if args.backbones else None,
        bf16=args.bf16, rounds=args.rounds, peer_python=args.peer_python,
        precisions=tuple(args.precisions.split(",")) if args.precisions else None)


if __name__ == "__main__":
    main()
