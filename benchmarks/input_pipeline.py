"""Input pipeline throughput: the training input_fn against a bare JPEG decode loop.

Both read the same TFRecords with the same parallelism (tf.data AUTOTUNE) and batch 64; the bare
loop only parses the record and runs ``tf.io.decode_jpeg``, which is the decode limit: everything
the training input_fn adds (shuffle, resize, flip, normalise, float batches) is its overhead.
``decode_jpeg_float32`` is the same loop ending in the input_fn's output, float32 batches of the
same size: the like-for-like denominator (a network takes floats; uint8 batches are a quarter of
the bytes to batch and copy).

Besides images/s (wall clock) every pipeline's CPU time per image is measured (the process's
user + system time over the timed batches, all threads): on a machine shared with other jobs the
wall clock says how much of the CPU the pipeline got, the CPU time what it costs, and the
``*_cpu`` ratios (bare loop's CPU per image / the input_fn's) stay put under load.
"""

import time

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from data_tools import input_fns, schema

BATCH = 64


def _decode_only_dataset(records, batch, dtype=tf.uint8):
    files = input_fns.records_file_pattern(records)
    files = tf.io.gfile.glob(files) if isinstance(files, str) else files

    def decode(serialized):
        image = tf.io.decode_jpeg(schema.parse_image_record(serialized)["encoded"], channels=3)
        return tf.cast(image, dtype)

    dataset = tf.data.TFRecordDataset(files).repeat()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.experimental.AUTOTUNE)
    return dataset.batch(batch, drop_remainder=True).prefetch(tf.data.experimental.AUTOTUNE)


def dataset_runner(dataset):
    """A session and a callable fetching one batch from a one-shot iterator of ``dataset``."""
    graph = tf.Graph()
    with graph.as_default():
        batch = tf.data.make_one_shot_iterator(dataset()).get_next()
        # Fetch a scalar so the timing is the pipeline's, not copying the batch out to numpy.
        first = tf.nest.flatten(batch)[0]
        fetch = tf.reduce_sum(tf.cast(first[:, 0, 0, 0], tf.float32))
    session = tf.Session(graph=graph, config=common.session_config())
    return session, lambda: session.run(fetch)


def run(quick=False, workdir=None):
    """Measure and print; returns the JSON dict."""
    num_classes, per_class = (8, 16) if quick else (100, 30)
    warmup, batches, rounds = (1, 2, 1) if quick else (10, 40, 3)
    sessions = []
    with common.scratch_dir(workdir, "bench_input_") as scratch:
        try:
            records = common.make_train_records(scratch, num_classes, per_class)
            # As training builds it (training/builders.py): with the label range check.
            train = input_fns.train_input_fn_builder(records, batch_size=BATCH, seed=0,
                                                     shuffle_buffer=num_classes * per_class,
                                                     num_classes=num_classes)
            seconds, cpu_seconds = {}, {}
            pipelines = (("input_fn", lambda: train(params={})),
                         ("decode_jpeg", lambda: _decode_only_dataset(records, BATCH)),
                         ("decode_jpeg_float32",
                          lambda: _decode_only_dataset(records, BATCH, tf.float32)))
            # One pipeline at a time: an idle tf.data pipeline keeps prefetching in the background,
            # which would steal cores from the one being timed and bank batches for its own turn.
            # The order alternates round by round, so a burst of load hits every pipeline alike.
            for round_index in range(rounds):
                for name, dataset in pipelines[::1 if round_index % 2 == 0 else -1]:
                    session, fetch = dataset_runner(dataset)
                    sessions.append(session)
                    for _ in range(warmup):  # fill the shuffle buffer, let AUTOTUNE settle
                        fetch()
                    cpu_start = time.process_time()
                    elapsed = common.per_call(fetch, batches)
                    cpu = (time.process_time() - cpu_start) / batches
                    seconds[name] = min(seconds.get(name, elapsed), elapsed)
                    cpu_seconds.setdefault(name, []).append(cpu)
                    session.close()
            cpus = common.cpu_count()
            rate = {name: BATCH / value for name, value in seconds.items()}
            cpu_per_image = {name: float(np.median(values)) / BATCH
                             for name, values in cpu_seconds.items()}
            return common.emit("input_pipeline", {
                "images": num_classes * per_class, "batch": BATCH, "cpus": cpus,
                "load_average": common.load_average(),
                "input_fn_images_per_s": common.rounded(rate["input_fn"]),
                "input_fn_images_per_s_per_core": common.rounded(rate["input_fn"] / cpus),
                "decode_jpeg_images_per_s": common.rounded(rate["decode_jpeg"]),
                "decode_jpeg_float32_images_per_s": common.rounded(rate["decode_jpeg_float32"]),
                "input_fn_cpu_us_per_image": common.rounded(1e6 * cpu_per_image["input_fn"]),
                "decode_jpeg_cpu_us_per_image": common.rounded(1e6 * cpu_per_image["decode_jpeg"]),
                "decode_jpeg_float32_cpu_us_per_image": common.rounded(
                    1e6 * cpu_per_image["decode_jpeg_float32"]),
                "input_fn_over_decode": common.ratio(rate["input_fn"], rate["decode_jpeg"]),
                "input_fn_over_decode_float32": common.ratio(rate["input_fn"],
                                                             rate["decode_jpeg_float32"]),
                "input_fn_over_decode_cpu": common.ratio(cpu_per_image["decode_jpeg"],
                                                         cpu_per_image["input_fn"]),
                "input_fn_over_decode_float32_cpu": common.ratio(
                    cpu_per_image["decode_jpeg_float32"], cpu_per_image["input_fn"]),
                "target_input_fn_over_decode": 0.8,
            })
        finally:
            for session in sessions:
                session.close()


def main(argv=None):
    common.run_command_line(run, __doc__, argv)


if __name__ == "__main__":
    main()
