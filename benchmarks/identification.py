"""1:N identification throughput: probes per second against 100k and 1M gallery entries.

``evaluation.retrieval.identification_metrics`` on random 512-d float32 embeddings (one gallery
entry per identity, half of the probes mated): the whole call, i.e. the gallery's L2
normalisation (once per call) plus the chunked probe x gallery products, ranks and thresholds.
``gallery_normalise_s`` is that one-off part alone, so ``probes_per_s`` at another probe count
can be estimated. ``peak_rss_mb`` is the process's peak resident memory afterwards: the gallery
itself (2 GB at 1M) plus its normalised copy plus one chunk of scores. ``cpu_seconds`` (all
threads) next to ``seconds`` (wall) tells how much of the time went to other jobs.
"""

import time

import numpy as np

from benchmarks import common
from evaluation import retrieval

DIM = 512
SIZES = ((100000, 2000), (1000000, 200))  # (gallery entries, probes)
QUICK_SIZES = ((2000, 100), (10000, 50))


def run(quick=False, workdir=None, sizes=None):
    """Measure and print; returns the JSON dict (``workdir`` is unused: no files)."""
    del workdir
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    figures = {"dim": DIM, "chunk_mb": retrieval.CHUNK_BYTES >> 20}
    rng = np.random.default_rng(0)
    for entries, num_probes in sizes:
        gallery = rng.standard_normal((entries, DIM), dtype=np.float32)
        labels = np.arange(entries)
        mated = num_probes // 2
        probes = np.concatenate([
            gallery[:mated] + 0.5 * rng.standard_normal((mated, DIM), dtype=np.float32),
            rng.standard_normal((num_probes - mated, DIM), dtype=np.float32)])
        probe_labels = np.concatenate([labels[:mated], entries + np.arange(num_probes - mated)])
        start = time.perf_counter()
        retrieval.l2_normalize(gallery)
        normalise = time.perf_counter() - start
        start, cpu_start = time.perf_counter(), time.process_time()
        result = retrieval.identification_metrics(gallery, labels, probes, probe_labels)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        name = f"{entries // 1000}k"
        figures[f"probes_{name}"] = num_probes
        figures[f"probes_per_s_{name}"] = common.rounded(num_probes / seconds, 1)
        figures[f"seconds_{name}"] = common.rounded(seconds, 2)
        # CPU seconds of every thread: on a shared machine, wall time / CPU time shows the wait.
        figures[f"cpu_seconds_{name}"] = common.rounded(cpu_seconds, 2)
        figures[f"gallery_normalise_s_{name}"] = common.rounded(normalise, 2)
        figures[f"rank1_{name}"] = result["rank1"]
        del gallery, probes
    figures["peak_rss_mb"] = common.peak_rss_mb()
    return common.emit("identification", figures)


def main(argv=None):
    common.run_command_line(run, __doc__, argv)


if __name__ == "__main__":
    main()
