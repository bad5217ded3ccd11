"""Conversion throughput: make_tfrecords' convert_folder against a plain copy of the same files.

The copy is the I/O limit of the machine for these files (read and write), measured with the
same number of workers right before each conversion; the ratio says how much of it the converter
keeps after validating every image (one full decode each) and writing sharded records with
checksums. Copy and conversion alternate ``repeats`` times and each keeps its fastest run, the
one least disturbed by other jobs on a shared machine (a single copy varies by 4x there).
"""

import os
import shutil
import time
from multiprocessing.pool import ThreadPool

from benchmarks import common
from data_tools import conversion


def _copy_tree(files, source_root, target_root, workers):
    """Copy every file as ``cp -r`` would (no fsync: the strictest reference for the converter,
    which also fsyncs each finished shard)."""

    def copy(path):
        target = os.path.join(target_root, os.path.relpath(path, source_root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)

    if workers == 1:
        for path in files:
            copy(path)
    else:
        pool = ThreadPool(workers)
        try:
            pool.map(copy, files, chunksize=64)
        finally:
            pool.close()
            pool.join()


def run(quick=False, workdir=None, worker_counts=(1, 2), repeats=None):
    """Measure and print; returns the JSON dict."""
    num_classes, per_class = (10, 10) if quick else (100, 40)
    repeats = repeats or (1 if quick else 3)
    with common.scratch_dir(workdir, "bench_conversion_") as scratch:
        source = os.path.join(scratch, "conversion_faces")
        if not os.path.isdir(source):
            common.write_jpeg_folder(source, num_classes, per_class, seed=1)
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(source) for f in names)
        total_bytes = sum(os.path.getsize(f) for f in files)
        figures = {"images": len(files), "mean_jpeg_bytes": int(total_bytes / len(files)),
                   "repeats": repeats}
        for workers in worker_counts:
            copy_dir = os.path.join(scratch, f"copy_{workers}")
            out_dir = os.path.join(scratch, f"records_{workers}")
            copy_seconds = convert_seconds = float("inf")
            for _ in range(repeats):
                shutil.rmtree(copy_dir, ignore_errors=True)
                shutil.rmtree(out_dir, ignore_errors=True)
                start = time.perf_counter()
                _copy_tree(files, source, copy_dir, workers)
                copy_seconds = min(copy_seconds, time.perf_counter() - start)
                start = time.perf_counter()
                summary = conversion.convert_folder(source, out_dir, num_workers=workers,
                                                    progress=False)
                convert_seconds = min(convert_seconds, time.perf_counter() - start)
                if summary["num_images"] != len(files):
                    raise RuntimeError(f"converted {summary['num_images']} of {len(files)} images")
            copy_rate = len(files) / copy_seconds
            convert_rate = len(files) / convert_seconds
            figures[f"convert_images_per_s_w{workers}"] = common.rounded(convert_rate)
            figures[f"copy_images_per_s_w{workers}"] = common.rounded(copy_rate)
            figures[f"convert_over_copy_w{workers}"] = common.ratio(convert_rate, copy_rate)
            shutil.rmtree(copy_dir, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)
        if len(worker_counts) > 1:
            first, last = worker_counts[0], worker_counts[-1]
            figures[f"convert_scaling_w{last}_over_w{first}"] = common.ratio(
                figures[f"convert_images_per_s_w{last}"],
                figures[f"convert_images_per_s_w{first}"])
        figures["target_convert_over_copy"] = 0.5
        return common.emit("conversion", figures)


def main(argv=None):
    common.run_command_line(run, __doc__, argv, repeats_help="copy/convert rounds per worker "
                            "count; each keeps its fastest (default: 3, 1 with --quick)")


if __name__ == "__main__":
    main()
