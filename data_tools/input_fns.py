"""tf.data input_fn builders for the estimator: training images, verification pairs, prediction.

Each builder binds everything it needs (records, image size, augmentation, batch size) and
returns an ``input_fn``, the shape of BERT's ``file_based_input_fn_builder``; a builder given no
batch size reads ``params['batch_size']`` at call time, as TPU-style estimators pass it.

The training pipeline follows the order tensorflow/tpu's ``imagenet_input.py`` settled on: list
files -> shard per worker -> shuffle files -> interleave -> shuffle records -> parallel map ->
batch(drop_remainder) -> prefetch. Batches always have a static shape (Ascend needs it).

Sharding gives every worker an equal share of the records, not of the files: synchronous
workers take the same number of steps, so a worker holding fewer records would cycle through
them faster and show its images more often (10 files on 4 workers by whole files: 3, 3, 2 and 2
files, exposure 0.83 / 0.83 / 1.25 / 1.25 per image). With the manifest's record counts each
worker reads a contiguous range of the records in file order (whole files, and at most a part
of a file at each end, ``skip`` / ``take``), within one record of N / workers. Records given
without a manifest (a glob pattern, a list of files) are counted first, once per worker (one
read of the data at start; taking every n-th record of every file instead would read all of it
on every worker in every epoch, and is not equal either: 10 records per file on 4 workers are
3, 3, 2 and 2).
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf

from data_tools import manifest as manifest_lib
from data_tools import preprocessing, schema, teachers
from data_tools.input_config import WorkerShard
from data_tools.shard_writer import progress_bar

AUTOTUNE = tf.data.experimental.AUTOTUNE
# TF 1.15's autotuning model races when a parallel interleave destroys a finished file's
# iterator on a worker thread (Model::RemoveNode unhooks a list node another thread changed): a
# segmentation fault once every few epochs of a repeated pipeline, in training as in tests. TF 2
# fixed the model; on TF 1 the pipelines run without it, at the fixed parallelism AUTOTUNE then
# means (as many calls as the runner has threads).
_AUTOTUNE_MODEL = int(tf.__version__.split(".")[0]) >= 2


def _list_files(file_pattern):
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise ValueError(f"no TFRecord files match {file_pattern!r}")
    return files


def pipeline_shard(worker_shard=None, input_context=None):
    """The ``WorkerShard`` this input pipeline reads.

    A distribution strategy that runs several input pipelines passes ``input_context`` and its
    split wins (it must match how the strategy feeds its replicas); otherwise the shard the
    builder was given (``runtime.cluster.worker_shard``: a TF_CONFIG cluster, the Ascend rank),
    else all the records. Every worker then reads a distinct, equal share of the records
    (:func:`worker_spans`), so no example is read twice per epoch and all are read equally often.
    """
    if input_context is not None and input_context.num_input_pipelines > 1:
        return WorkerShard(input_context.input_pipeline_id, input_context.num_input_pipelines)
    return worker_shard or WorkerShard()


def _manifest_of(records):
    """The manifest of a records directory, or None (a glob pattern, a bare directory)."""
    if isinstance(records, (list, tuple)) or not tf.io.gfile.isdir(records):
        return None
    if not tf.io.gfile.exists(os.path.join(records, manifest_lib.MANIFEST_NAME)):
        return None
    return manifest_lib.read_manifest(records)


def records_teacher_dim(records):
    """The dimension of the teacher embeddings the records hold (their manifest's ``teacher``
    entry), or 0 (no teacher, or no manifest to say)."""
    manifest = _manifest_of(records)
    teacher = (manifest or {}).get("teacher") or {}
    return int(teacher.get("dim") or 0)


def records_teacher_flipped(records):
    """Whether the records also hold the teacher's vectors of the mirrored images
    (``make_tfrecords.py --teacher_flip``: the manifest's ``teacher.flipped``)."""
    teacher = (_manifest_of(records) or {}).get("teacher") or {}
    return bool(teacher.get("dim") and teacher.get("flipped"))


def records_image_shape(records):
    """``(height, width)`` all the records' images share, from their manifest's conversion
    transform (``record_shape``), or None (sizes vary, or no manifest says)."""
    manifest = _manifest_of(records)
    transform = manifest_lib.conversion_transform(manifest) if manifest else None
    shape = (transform or {}).get("record_shape")
    return tuple(int(side) for side in shape) if shape else None


def records_teacher_mean(records):
    """The mean of the teacher embeddings the records hold, a list of floats: the manifest's
    ``teacher.mean`` (written by the converter), else one pass over the records (made before
    the converter recorded it). None when the records hold no teacher."""
    manifest = _manifest_of(records)
    teacher = (manifest or {}).get("teacher") or {}
    if not teacher.get("dim"):
        return None
    if teacher.get("mean") is not None:
        return [float(value) for value in teacher["mean"]]
    total, count = np.zeros(int(teacher["dim"]), np.float64), 0
    with progress_bar(int(manifest.get("num_images") or 0) or None,
                      "teacher mean (records made before the manifest kept it)", True) as bar:
        for path in records_file_pattern(records):
            for serialized in tf.io.tf_record_iterator(path):
                example = tf.train.Example.FromString(serialized)
                total += example.features.feature[schema.TEACHER_EMBEDDING].float_list.value
                count += 1
                bar.update(1)
    return teachers.json_vector(total / max(count, 1))


def records_file_pattern(records_dir_or_pattern):
    """Accept a records directory (holding manifest.json) or a glob pattern."""
    manifest = _manifest_of(records_dir_or_pattern)
    if manifest is not None:
        return [os.path.join(records_dir_or_pattern, s["file"]) for s in manifest["shards"]]
    if tf.io.gfile.isdir(records_dir_or_pattern):
        return os.path.join(records_dir_or_pattern, "*.tfrecord")
    return records_dir_or_pattern


def _files(records):
    pattern = records_file_pattern(records)
    if isinstance(pattern, (list, tuple)):
        if not pattern:
            raise ValueError(f"the manifest of {records!r} lists no shards")
        return list(pattern)
    return _list_files(pattern)


def _record_counts(records, files):
    """Records of each file (in ``files`` order): the manifest's, else counted by reading."""
    manifest = _manifest_of(records)
    if manifest is not None:
        counts = {os.path.join(records, shard["file"]): shard.get("records")
                  for shard in manifest["shards"]}
        values = [counts.get(path) for path in files]
        if all(isinstance(value, int) for value in values):
            return values
    return [count_records([path]) for path in files]


def worker_spans(files, counts, num_shards, shard_index):
    """This worker's part of the records as ``(files, skips, takes)`` spans.

    Worker ``k`` of ``n`` reads records ``k*N//n`` up to ``(k+1)*N//n`` of the files'
    concatenation (``counts``: records per file, N in all): every worker gets ``N // n`` or
    ``N // n + 1`` records, and the parts are disjoint and cover all. One worker: every file
    whole (``counts`` may be None; ``takes`` -1, all). Raises ValueError when there are fewer
    records than workers.
    """
    if num_shards <= 1:
        return list(files), [0] * len(files), [-1] * len(files)
    total = sum(counts)
    if total < num_shards:
        raise ValueError(f"{total} training records cannot be shared by {num_shards} workers")
    start, end = total * shard_index // num_shards, total * (shard_index + 1) // num_shards
    spans, offset = ([], [], []), 0
    for path, count in zip(files, counts):
        low, high = max(start, offset), min(end, offset + count)
        if low < high:
            for column, value in zip(spans, (path, low - offset, high - low)):
                column.append(value)
        offset += count
    return spans


def train_input_fn_builder(records, image_size=preprocessing.DEFAULT_IMAGE_SIZE,
                           random_flip=True, random_crop=False, brightness_delta=0.0,
                           min_crop_scale=1.0, contrast_delta=0.0, shuffle_buffer=10000,
                           images_per_identity=None, seed=None, degradations=None,
                           is_training=True, num_classes=None, batch_size=None,
                           cycle_length=8, num_parallel_calls=AUTOTUNE, teacher_dim=None,
                           worker_shard=None, teacher_flipped=None):
    """Builder of the training ``input_fn`` over image records.

    Args:
      records: a records directory (with manifest.json), a glob pattern or a list of files.
      image_size: side of the square network input.
      random_flip, random_crop, brightness_delta, min_crop_scale, contrast_delta: augmentation,
        see
        ``preprocessing.preprocess_for_train``.
      shuffle_buffer: records held for shuffling.
      images_per_identity: K of P×K sampling: each batch holds batch_size / K identities with K
        images each (pair-level losses need positives in the batch). None: plain shuffling.
      seed: makes shuffling and augmentation repeatable.
      degradations: a ``degradations.Degradations`` (low resolution, blur, JPEG, gamma, shading)
        for training images; None: none. Never applied when ``is_training`` is False.
      is_training: False gives a single ordered pass without augmentation (EVAL on labelled
        records), still with full static batches.
      teacher_dim: the dimension of the records' teacher embeddings (``make_tfrecords.py
        --teacher``); None: the manifest's ``teacher`` entry when there is one; 0: not read.
      teacher_flipped: whether the records hold the teacher's vectors of the mirrored images
        (``make_tfrecords.py --teacher_flip``), the target of an image the input flips (mirror-
        consistent distillation); None: the manifest says.
      worker_shard: the ``WorkerShard`` of the records this process reads
        (``runtime.cluster.worker_shard``); None: all of them. A distribution strategy's own
        split (``input_context``) takes its place (:func:`pipeline_shard`).
    Returns:
      ``input_fn(params, config=None, input_context=None)`` yielding
      ``({'image': float32 [B, S, S, 3]}, labels int32 [B])``, plus the feature
      ``teacher_embedding`` float32 [B, teacher_dim] when the records hold a teacher.
    """
    if teacher_dim is None:
        teacher_dim = records_teacher_dim(records)
    if teacher_flipped is None:
        teacher_flipped = bool(teacher_dim) and records_teacher_flipped(records)
    # Only a training input that flips needs the mirrored targets.
    flipped_targets = bool(teacher_dim and teacher_flipped and is_training and random_flip)
    # Known image sizes spare every image the conditional resize (docs/PERFORMANCE.md).
    decoded_shape = records_image_shape(records)

    def input_fn(params=None, config=None, input_context=None):
        batch = _batch_size(batch_size, params)
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(batch)
        if images_per_identity and batch % images_per_identity:
            raise ValueError(f"batch size {batch} is not a multiple of images_per_identity "
                             f"{images_per_identity}")
        files = _files(records)
        del config  # where this process stands is the bound worker_shard, not the RunConfig
        shard = pipeline_shard(worker_shard, input_context)
        # An equal share of the records for every worker (see the module docstring).
        # Spans of files, not records after the interleave: the split stays exact whatever
        # order the files come in (an unseeded shuffle differs per worker).
        files, skips, takes = worker_spans(
            files, _record_counts(records, files) if shard.count > 1 else None, shard.count,
            shard.index)

        def read(filename, skip, take):
            return tf.data.TFRecordDataset(filename).skip(skip).take(take)

        dataset = tf.data.Dataset.from_tensor_slices(
            (files, tf.constant(skips, tf.int64), tf.constant(takes, tf.int64)))
        if is_training:
            dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        # Parallel reads only where a read waits on a network (gs://, hdfs://, s3://): a local
        # file's buffered reads take microseconds, and the parallel interleave's hand-off
        # between threads cost about 30 us of CPU per record (docs/PERFORMANCE.md, round three).
        remote = any("://" in str(path) for path in files)
        dataset = dataset.interleave(
            read, cycle_length=min(cycle_length, len(files)) if is_training else 1,
            num_parallel_calls=AUTOTUNE if is_training and remote else None)

        if images_per_identity and is_training:
            dataset = _pk_sample(dataset, batch, images_per_identity, shuffle_buffer, seed)
        elif is_training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()

        keyed = is_training and seed is not None

        def parse(batch_index, serialized):
            # One parse_example over a batch of records instead of one parse_single_example
            # per record, and the label check once per batch (docs/PERFORMANCE.md, round three).
            record = schema.parse_image_record(serialized, teacher_dim=teacher_dim,
                                               teacher_flipped=flipped_targets)
            label = record["label"]
            if num_classes is not None:
                in_range = tf.logical_and(label >= 0, label < num_classes)
                check = tf.debugging.Assert(tf.reduce_all(in_range), [
                    f"label out of range [0, {num_classes}):",
                    tf.boolean_mask(label, tf.logical_not(in_range)), "in record of",
                    tf.boolean_mask(record["filename"], tf.logical_not(in_range))])
                with tf.control_dependencies([check]):
                    label = tf.identity(label)
            parsed = {"encoded": record["encoded"], "label": label}
            if teacher_dim:
                parsed["teacher_embedding"] = record["teacher_embedding"]
            if flipped_targets:
                parsed["teacher_embedding_flipped"] = record["teacher_embedding_flipped"]
            if keyed:
                # Augmentation keyed on (seed, position in the stream): repeatable runs. The
                # keys of a batch of records at once (only a finite stream's last batch can be
                # short, so batch number x batch + place is the position), not an enumerate
                # and two ops per image.
                position = batch_index * batch + tf.cast(tf.range(tf.size(serialized)), tf.int64)
                parsed["key"] = tf.stack(
                    [tf.fill(tf.shape(position), tf.constant(seed, tf.int64)), position], axis=1)
            return parsed

        def preprocess(record):
            teacher = record.get("teacher_embedding")
            if is_training:
                image = preprocessing.preprocess_for_train(
                    record["encoded"], image_size, random_flip=random_flip,
                    random_crop=random_crop, brightness_delta=brightness_delta,
                    min_crop_scale=min_crop_scale, contrast_delta=contrast_delta,
                    seed=record.get("key"),
                    degradations=degradations, with_flip=flipped_targets,
                    decoded_shape=decoded_shape)
                if flipped_targets:
                    # A mirrored face's target is the teacher's vector of the mirrored source.
                    image, flipped = image
                    teacher = tf.where(tf.fill([teacher_dim], flipped),
                                       record["teacher_embedding_flipped"], teacher)
            else:
                image = preprocessing.preprocess_for_eval(record["encoded"], image_size)
            features = {"image": image}
            if teacher_dim:
                features["teacher_embedding"] = teacher
            return features, record["label"]

        dataset = dataset.batch(batch).apply(tf.data.experimental.enumerate_dataset())
        dataset = dataset.map(parse, num_parallel_calls=num_parallel_calls)
        dataset = dataset.apply(tf.data.experimental.unbatch())
        dataset = dataset.map(preprocess, num_parallel_calls=num_parallel_calls)
        dataset = dataset.batch(batch, drop_remainder=True)
        return _finish(dataset)

    return input_fn


def _finish(dataset):
    """The last stage of every pipeline: prefetch, and on TF 1 no autotuning model."""
    dataset = dataset.prefetch(AUTOTUNE)
    if not _AUTOTUNE_MODEL:
        options = tf.data.Options()
        options.experimental_optimization.autotune = False
        dataset = dataset.with_options(options)
    return dataset


def _batch_size(bound, params):
    if bound:
        return bound
    if not params or "batch_size" not in params:
        raise ValueError("no batch size: bind batch_size in the builder or pass "
                         "params['batch_size']")
    return params["batch_size"]


def _pk_sample(dataset, batch_size, images_per_identity, shuffle_buffer, seed):
    """P×K sampling: each batch is P runs of K records, each run one identity.

    Records are grouped by label with ``group_by_window`` over a shuffled, repeated stream: a
    window is emitted once K images of one identity have arrived (an identity with fewer than K
    images fills its window on the next pass, so small identities repeat images). Windows are
    shuffled, so a batch mixes P runs; with many identities two runs of the same identity in one
    batch are rare, and harmless to pair-level losses (they only add positives).
    """
    k = images_per_identity
    labelled = dataset.shuffle(shuffle_buffer, seed=seed).repeat().map(
        lambda s: (schema.parse_image_record(s)["label"], s))

    def reduce_window(_label, window):
        return window.batch(k)

    groups = labelled.apply(tf.data.experimental.group_by_window(
        key_func=lambda label, _s: tf.cast(label, tf.int64),
        reduce_func=reduce_window, window_size=k))
    groups = groups.filter(lambda labels, _s: tf.equal(tf.shape(labels)[0], k))
    groups = groups.shuffle(max(batch_size // k * 8, 64), seed=seed)
    return groups.flat_map(
        lambda _labels, serialized: tf.data.Dataset.from_tensor_slices(serialized))


def count_records(files):
    """Number of records in TFRecord files, by reading them (for record sets without a manifest)."""
    total = 0
    for path in files:
        for _ in tf.io.tf_record_iterator(path):
            total += 1
    return total


def num_pairs_in(records):
    """Number of pair records: the manifest says; without one, count them."""
    manifest = _manifest_of(records)
    if manifest is not None:
        return int(manifest["num_pairs"])
    return count_records(_files(records))


def _padded_pairs_dataset(records, total, batch, image_size, num_parallel_calls):
    """The parsed pair records of one set, one pass in file order, padded to whole batches with
    weight-0 copies of its first pair (``pair_index`` -1)."""
    files = _files(records)
    padding = -(-total // batch) * batch - total

    def parse(serialized):
        record = schema.parse_pair_record(serialized)
        features = {
            "image1": preprocessing.preprocess_for_eval(record["image1"]["encoded"],
                                                        image_size),
            "image2": preprocessing.preprocess_for_eval(record["image2"]["encoded"],
                                                        image_size),
            "issame": record["issame"],
            "fold": record["fold"],
            "pair_index": record["index"],
            "weight": tf.constant(1.0, tf.float32),
        }
        return features

    def as_padding(features):
        features = dict(features)
        features["pair_index"] = tf.constant(-1, tf.int32)
        features["weight"] = tf.constant(0.0, tf.float32)
        return features

    dataset = tf.data.TFRecordDataset(files)
    dataset = dataset.map(parse, num_parallel_calls=num_parallel_calls)
    if padding:
        pad = tf.data.TFRecordDataset(files[:1]).take(1).map(parse).map(as_padding)
        dataset = dataset.concatenate(pad.repeat(padding))
    return dataset


def _batched_pairs(dataset, batch, flip_tta):
    def add_flips(features):
        if flip_tta:
            features["image1_flip"] = preprocessing.flip_left_right(features["image1"])
            features["image2_flip"] = preprocessing.flip_left_right(features["image2"])
        return features, features["issame"]

    return _finish(dataset.batch(batch, drop_remainder=True).map(add_flips))


def pairs_input_fn_builder(records, image_size=preprocessing.DEFAULT_IMAGE_SIZE, flip_tta=True,
                           num_pairs=None, batch_size=None, num_parallel_calls=AUTOTUNE):
    """Builder of the verification ``input_fn`` over pair records (one ordered pass).

    Every pair is read exactly once, in file order. The last batch is padded to full size with
    copies of a real pair whose ``weight`` is 0 and ``pair_index`` -1, so shapes stay static (NPU)
    and no pair is dropped.

    Features: ``image1, image2`` float32 [B, S, S, 3] (and ``image1_flip, image2_flip`` with
    ``flip_tta``), ``issame`` int32 [B], ``fold`` int32 [B], ``pair_index`` int32 [B],
    ``weight`` float32 [B]. Labels: ``issame``.
    """

    def input_fn(params=None, config=None, input_context=None):
        del config, input_context  # evaluation runs in one process over all pairs
        batch = _batch_size(batch_size, params)
        total = num_pairs if num_pairs is not None else num_pairs_in(records)
        if total <= 0:
            raise ValueError(f"no pair records in {records!r}")
        dataset = _padded_pairs_dataset(records, total, batch, image_size, num_parallel_calls)
        return _batched_pairs(dataset, batch, flip_tta)

    return input_fn


def pair_sets_input_fn_builder(sets, image_size=preprocessing.DEFAULT_IMAGE_SIZE, flip_tta=True,
                               batch_size=None, num_parallel_calls=AUTOTUNE):
    """Several verification sets in one ordered pass: each set as :func:`pairs_input_fn_builder`
    reads it (padded to whole batches of its own), one after the other.

    ``sets``: a list of ``(records, num_pairs)`` (``num_pairs`` None: from the manifest). The
    features are those of :func:`pairs_input_fn_builder` plus ``set_index`` int32 [B], the
    position of the pair's set in ``sets``; ``pair_index`` stays the index within its set. A
    batch never mixes sets, so each set's batches are exactly the ones its own input_fn yields.
    """
    sets = list(sets)
    if not sets:
        raise ValueError("no verification sets")

    def input_fn(params=None, config=None, input_context=None):
        del config, input_context  # evaluation runs in one process over all pairs
        batch = _batch_size(batch_size, params)
        dataset = None
        for set_index, (records, num_pairs) in enumerate(sets):
            total = num_pairs if num_pairs is not None else num_pairs_in(records)
            if total <= 0:
                raise ValueError(f"no pair records in {records!r}")
            part = _padded_pairs_dataset(records, total, batch, image_size, num_parallel_calls)
            part = part.map(_with_set_index(set_index))
            dataset = part if dataset is None else dataset.concatenate(part)
        return _batched_pairs(dataset, batch, flip_tta)

    return input_fn


def _with_set_index(set_index):
    def add(features):
        features = dict(features)
        features["set_index"] = tf.constant(set_index, tf.int32)
        return features

    return add


def predict_input_fn_builder(image_paths, image_size=preprocessing.DEFAULT_IMAGE_SIZE,
                             batch_size=None):
    """Builder of a PREDICT ``input_fn`` over a list of image files (JPEG/PNG)."""
    paths = list(image_paths)
    if not paths:
        raise ValueError("no images to predict")

    def input_fn(params=None):
        dataset = tf.data.Dataset.from_tensor_slices(paths)
        dataset = dataset.map(
            lambda path: {"image": preprocessing.preprocess_for_eval(tf.io.read_file(path),
                                                                     image_size)},
            num_parallel_calls=AUTOTUNE)
        return _finish(dataset.batch(_batch_size(batch_size, params)))

    return input_fn


def image_record_labels(records):
    """Labels (int) of the image records, in the order :func:`image_pairs_input_fn_builder` reads
    them (file order, then record order); read in Python, for the retrieval EVAL metric."""
    labels = []
    for path in _files(records):
        for serialized in tf.io.tf_record_iterator(path):
            example = tf.train.Example.FromString(serialized)
            labels.append(int(example.features.feature[schema.LABEL].int64_list.value[0]))
    return labels


def image_pairs_input_fn_builder(records, image_size=preprocessing.DEFAULT_IMAGE_SIZE,
                                 flip_tta=True, num_images=None, batch_size=None,
                                 num_parallel_calls=AUTOTUNE):
    """Image records presented in the verification pair layout, for a retrieval EVAL.

    The model's EVAL on pair features (``image1``, ``image2``, ...) embeds both images of a pair
    and hands them to the injected metric; here pair ``i`` holds records ``2i`` and ``2i + 1``
    in file order (an odd last record is paired with itself), so every record is embedded once
    with the verification code path and the metric finds record ``2i`` / ``2i + 1`` by
    ``pair_index``. ``issame`` says whether the two labels agree (the model's monitoring
    cosines), ``fold`` is 0; the last batch is padded with weight-0 pairs of index -1.
    """

    def input_fn(params=None, config=None, input_context=None):
        del config, input_context  # evaluation runs in one process over all records
        batch = _batch_size(batch_size, params)
        files = _files(records)
        total = num_images if num_images is not None else count_records(files)
        if total <= 0:
            raise ValueError(f"no image records in {records!r}")
        num_pairs = -(-total // 2)
        num_batches = -(-num_pairs // batch)
        padding = num_batches * batch - num_pairs

        def parse(serialized):
            record = schema.parse_image_record(serialized)
            return preprocessing.preprocess_for_eval(record["encoded"], image_size), \
                record["label"]

        dataset = tf.data.TFRecordDataset(files)
        if total % 2:
            dataset = dataset.concatenate(tf.data.TFRecordDataset(files).skip(total - 1))
        dataset = dataset.map(parse, num_parallel_calls=num_parallel_calls).batch(2)

        def as_pair(index, pair):
            images, labels = pair
            return {
                "image1": images[0],
                "image2": images[1],
                "issame": tf.cast(tf.equal(labels[0], labels[1]), tf.int32),
                "fold": tf.constant(0, tf.int32),
                "pair_index": tf.cast(index, tf.int32),
                "weight": tf.constant(1.0, tf.float32),
            }

        dataset = dataset.apply(tf.data.experimental.enumerate_dataset()).map(as_pair)
        if padding:
            def as_padding(features):
                features = dict(features)
                features["pair_index"] = tf.constant(-1, tf.int32)
                features["weight"] = tf.constant(0.0, tf.float32)
                return features

            dataset = dataset.concatenate(dataset.take(1).map(as_padding).repeat(padding))

        def add_flips(features):
            if flip_tta:
                features["image1_flip"] = preprocessing.flip_left_right(features["image1"])
                features["image2_flip"] = preprocessing.flip_left_right(features["image2"])
            return features, features["issame"]

        dataset = dataset.batch(batch, drop_remainder=True).map(add_flips)
        return _finish(dataset)

    return input_fn
