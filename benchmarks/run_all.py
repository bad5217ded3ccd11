"""Run the benchmark suite (``make bench``): one JSON line per benchmark on stdout (``deploy``:
one per deployment format).

    python -m benchmarks.run_all [--only=name[,name]] [--quick] [--workdir=DIR]

The benchmarks share one scratch directory, so the generated JPEGs and TFRecords are made once.
``--quick`` runs every benchmark at toy sizes in seconds (the smoke test); its figures mean little.
``peer`` (PyTorch, ``make bench-peer``) is a group: the training comparison (``benchmarks.peer``)
and the inference one (``benchmarks.peer_inference``); each prints a "skipped" line unless the
peer's environment exists.
"""

import argparse
import collections
import os
import sys
import time

from benchmarks import (
    common,
    conversion,
    degradations,
    deploy,
    evaluation,
    head_cost,
    identification,
    input_pipeline,
    insightface_rec,
    partial_fc,
    peer,
    peer_inference,
    precision_curve,
    train_step,
)

BENCHMARKS = collections.OrderedDict([
    ("conversion", conversion.run),
    ("insightface_rec", insightface_rec.run),
    ("input_pipeline", input_pipeline.run),
    ("degradations", degradations.run),
    ("train_step", train_step.run),
    ("precision_curve", precision_curve.run),
    ("head_cost", head_cost.run),
    ("partial_fc", partial_fc.run),
    ("evaluation", evaluation.run),
    ("identification", identification.run),
    ("deploy", deploy.run),
    ("peer", peer.run),
    ("peer_inference", peer_inference.run),
])
# Names that stand for several benchmarks: ``--only=peer`` (``make bench-peer``) runs both
# comparisons with PyTorch.
GROUPS = {"peer": ("peer", "peer_inference")}


def parse_only(value):
    """``'a,b'`` -> ``['a', 'b']``, checked against the suite, groups expanded (each name
    once, in the order given); empty means all of it."""
    if not value:
        return list(BENCHMARKS)
    names = []
    for name in (name.strip() for name in value.split(",") if name.strip()):
        for member in GROUPS.get(name, (name,)):
            if member not in names:
                names.append(member)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                                         f"{', '.join(BENCHMARKS)}")
    return names


def run(names=None, quick=False, workdir=None):
    """Run the named benchmarks in suite order; returns their JSON dicts."""
    names = names or list(BENCHMARKS)
    results = []
    with common.scratch_dir(workdir, "bench_") as scratch:
        os.makedirs(scratch, exist_ok=True)
        common.emit("machine", common.machine())
        for name in names:
            start = time.perf_counter()
            result = BENCHMARKS[name](quick=quick, workdir=scratch)
            sys.stderr.write(f"{name}: {time.perf_counter() - start:.0f} s\n")
            # A benchmark prints one JSON line, or one per variant (deploy: per format).
            results.extend(result if isinstance(result, list) else [result])
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=parse_only, default=None,
                        help=f"comma-separated subset of: {', '.join(BENCHMARKS)} (peer: peer and "
                             "peer_inference)")
    common.add_common_args(parser)
    args = parser.parse_args(argv)
    run(args.only, quick=args.quick, workdir=args.workdir)


if __name__ == "__main__":
    main()
