"""Input pipeline throughput: the training input_fn against a bare JPEG decode loop.

Both read the same TFRecords with the same parallelism (tf.data AUTOTUNE) and batch 64; the bare
loop only parses the record and runs ``tf.io.decode_jpeg``, which is the decode limit: everything
the training input_fn adds (shuffle, resize, flip, normalise, float batches) is its overhead.
"""


import tensorflow.compat.v1 as tf

from benchmarks import common
from data_tools import input_fns, schema

BATCH = 64


def _decode_only_dataset(records, batch):
    files = input_fns.records_file_pattern(records)
    files = tf.io.gfile.glob(files) if isinstance(files, str) else files

    def decode(serialized):
        return tf.io.decode_jpeg(schema.parse_image_record(serialized)["encoded"], channels=3)

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
    warmup, batches, rounds = (1, 2, 1) if quick else (10, 60, 2)
    sessions = []
    with common.scratch_dir(workdir, "bench_input_") as scratch:
        try:
            records = common.make_train_records(scratch, num_classes, per_class)
            train = input_fns.train_input_fn_builder(records, batch_size=BATCH, seed=0,
                                                     shuffle_buffer=num_classes * per_class)
            seconds = {}
            pipelines = (("input_fn", lambda: train(params={})),
                         ("decode_jpeg", lambda: _decode_only_dataset(records, BATCH)))
            # One pipeline at a time: an idle tf.data pipeline keeps prefetching in the background,
            # which would steal cores from the one being timed and bank batches for its own turn.
            for _ in range(rounds):
                for name, dataset in pipelines:
                    session, fetch = dataset_runner(dataset)
                    sessions.append(session)
                    for _ in range(warmup):  # fill the shuffle buffer, let AUTOTUNE settle
                        fetch()
                    elapsed = common.per_call(fetch, batches)
                    seconds[name] = min(seconds.get(name, elapsed), elapsed)
                    session.close()
            cpus = common.cpu_count()
            pipeline = BATCH / seconds["input_fn"]
            decode = BATCH / seconds["decode_jpeg"]
            return common.emit("input_pipeline", {
                "images": num_classes * per_class, "batch": BATCH, "cpus": cpus,
                "input_fn_images_per_s": common.rounded(pipeline),
                "input_fn_images_per_s_per_core": common.rounded(pipeline / cpus),
                "decode_jpeg_images_per_s": common.rounded(decode),
                "input_fn_over_decode": common.ratio(pipeline, decode),
                "target_input_fn_over_decode": 0.8,
            })
        finally:
            for session in sessions:
                session.close()


def main(argv=None):
    common.run_command_line(run, __doc__, argv)


if __name__ == "__main__":
    main()
