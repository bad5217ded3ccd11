"""input_fn builders: pixels, labels, P×K batches, padded pair batches, worker sharding."""

import collections
import json
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data_tools import input_fns, preprocessing, schema
from data_tools.input_config import WorkerShard
from tests import records_helpers as rh


@pytest.fixture(scope="module")
def image_records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("images"))
    items = rh.write_image_records(directory, num_classes=4, per_class=6, size=32)
    return directory, items


@pytest.fixture(scope="module")
def pair_records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("pairs"))
    expected = rh.write_pair_records(directory, num_pairs=10, size=32)
    return directory, expected


def test_eval_pass_pixels_and_labels_match_pil_decode(image_records):
    directory, items = image_records
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, image_size=32, is_training=False)
        batches = rh.run_dataset(input_fn({"batch_size": 4}))
    images = np.concatenate([b[0]["image"] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    # Every record decodes to its PIL pixels (grayscale repeated over 3 channels), normalised.
    expected = {}
    for label, pixels in items:
        rgb = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels
        expected.setdefault(label, []).append((rgb.astype(np.float32) - 127.5) / 128.0)
    for image, label in zip(images, labels):
        assert any(np.array_equal(image, e) for e in expected[label])
    assert collections.Counter(labels.tolist()) == {0: 6, 1: 6, 2: 6, 3: 6}


def _training_images(directory, image_size, batches, **augmentation):
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, image_size=image_size, seed=1,
                                                    **augmentation)
        dataset = input_fn({"batch_size": 5})
        assert dataset.element_spec[0]["image"].shape.as_list() == [5, image_size,
                                                                    image_size, 3]
        assert dataset.element_spec[1].shape.as_list() == [5]
        return rh.run_dataset(dataset, max_batches=batches)  # repeats past one epoch


def _windows(image, side):
    """Every side x side window of an [H, W, C] image: [H - side + 1, W - side + 1, side, side,
    C] (a strided view)."""
    height, width, channels = image.shape
    strides = image.strides
    return np.lib.stride_tricks.as_strided(
        image, (height - side + 1, width - side + 1, side, side, channels),
        (strides[0], strides[1]) + strides, writeable=False)


def test_training_batches_are_static_augmented_and_resized(image_records):
    """Each training image is a record resized to 48 and then augmented: with the
    augmentation off every image is one of the resized records exactly; with a crop jitter and
    a brightness shift none is (nor its mirror image), yet each stays within the shift of a
    crop of its own record."""
    directory, _ = image_records
    with tf.Graph().as_default():
        plain_fn = input_fns.train_input_fn_builder(directory, image_size=48, is_training=False)
        plain = rh.run_dataset(plain_fn({"batch_size": 4}))
    references = {}
    for features, labels in plain:
        for image, label in zip(features["image"], labels):
            references.setdefault(int(label), []).append(image)

    off = _training_images(directory, 48, 6, random_flip=False)
    for features, labels in off:
        for image, label in zip(features["image"], labels):
            assert any(np.array_equal(image, r) for r in references[int(label)])

    delta = 10.0
    batches = _training_images(directory, 48, 8, random_crop=True, brightness_delta=delta)
    assert len(batches) == 8
    values = np.concatenate([b[0]["image"] for b in batches])
    assert values.min() >= -1.0 and values.max() <= 1.0
    pad = 8
    for features, labels in batches:
        for image, label in zip(features["image"], labels):
            candidates = references[int(label)]
            assert not any(np.array_equal(image, r) or np.array_equal(image, r[:, ::-1])
                           for r in candidates)
    for features, labels in batches[:2]:
        for image, label in zip(features["image"], labels):
            # The centre, away from the mirrored padding, is a window of the record (or of its
            # mirror image) at an offset within the padding, shifted by the brightness.
            centre = image[pad:-pad, pad:-pad]
            best = np.inf
            for source in references[int(label)]:
                for oriented in (source, source[:, ::-1]):
                    windows = _windows(np.ascontiguousarray(oriented), centre.shape[0])
                    residual = windows - centre
                    residual -= residual.mean(axis=(2, 3, 4), keepdims=True)
                    best = min(best, np.abs(residual).max(axis=(2, 3, 4)).min())
            # Up to the shift where clipping at 0 or 255 cut it.
            assert best <= delta / preprocessing.PIXEL_SCALE + 1e-4


@pytest.mark.parametrize("k", [2, 3])
def test_pk_batches_hold_runs_of_k_images_of_one_identity(image_records, k):
    directory, _ = image_records
    batch = 2 * k
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, image_size=32,
                                                    images_per_identity=k, seed=3)
        batches = rh.run_dataset(input_fn({"batch_size": batch}), max_batches=10)
    for _, labels in batches:
        runs = labels.reshape(-1, k)
        assert (runs == runs[:, :1]).all(), labels


def test_pk_rejects_batch_not_multiple_of_k(image_records):
    directory, _ = image_records
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, images_per_identity=3)
        with pytest.raises(ValueError, match="multiple"):
            input_fn({"batch_size": 4})


def test_label_outside_num_classes_stops_input(image_records):
    directory, _ = image_records
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, image_size=32, num_classes=2,
                                                    is_training=False)
        with pytest.raises(tf.errors.InvalidArgumentError, match="label out of range"):
            rh.run_dataset(input_fn({"batch_size": 24}))


@pytest.mark.parametrize("batch_size", [3, 4, 10, 16])
def test_pairs_are_read_once_in_order_and_padding_weighs_zero(pair_records, batch_size):
    directory, expected = pair_records
    with tf.Graph().as_default():
        input_fn = input_fns.pairs_input_fn_builder(directory, image_size=32, flip_tta=True)
        dataset = input_fn({"batch_size": batch_size})
        assert dataset.element_spec[0]["image1"].shape.as_list() == [batch_size, 32, 32, 3]
        batches = rh.run_dataset(dataset)
    features = {k: np.concatenate([b[0][k] for b in batches]) for k in batches[0][0]}
    total = len(batches) * batch_size
    assert total == -(-10 // batch_size) * batch_size
    real = features["weight"] == 1.0
    assert real.sum() == 10
    np.testing.assert_array_equal(features["pair_index"][real], np.arange(10))
    assert (features["pair_index"][~real] == -1).all()
    assert (features["weight"][~real] == 0).all()
    for i, (a, b, same) in enumerate(expected):
        np.testing.assert_array_equal(features["image1"][i], (a - 127.5) / 128.0)
        np.testing.assert_array_equal(features["image2"][i], (b - 127.5) / 128.0)
        np.testing.assert_array_equal(features["image1_flip"][i], features["image1"][i][:, ::-1])
        assert features["issame"][i] == int(same)
    np.testing.assert_array_equal(batches[0][1], batches[0][0]["issame"])


def test_records_split_across_workers_without_overlap(image_records):
    directory, _ = image_records
    seen = []
    for index in range(2):
        with tf.Graph().as_default():
            input_fn = input_fns.train_input_fn_builder(directory, image_size=32,
                                                        is_training=False,
                                                        worker_shard=WorkerShard(index, 2))
            batches = rh.run_dataset(input_fn({"batch_size": 1}))
        seen.append({tuple(b[0]["image"].ravel()[:8]) for b in batches})
    assert len(seen[0]) == len(seen[1]) == 12
    assert not seen[0] & seen[1]


def test_predict_input_reads_image_files(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / (f"{i}.png")
        path.write_bytes(rh.encode(rh.class_image(i, 0, 40)))
        paths.append(str(path))
    with tf.Graph().as_default():
        batches = rh.run_dataset(input_fns.predict_input_fn_builder(paths, 32)(
            {"batch_size": 2}))
    assert [b["image"].shape for b in batches] == [(2, 32, 32, 3), (1, 32, 32, 3)]


def test_resize_passes_target_size_through_and_resizes_others():
    with tf.Graph().as_default(), tf.Session() as sess:
        same = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
        out_same, out_small = sess.run([preprocessing.resize(tf.constant(same), 4),
                                        preprocessing.resize(tf.constant(same), 2)])
    np.testing.assert_array_equal(out_same, same)
    # Half-pixel bilinear 4 -> 2 averages each 2x2 block.
    np.testing.assert_allclose(out_small, same.reshape(2, 2, 2, 2, 3).mean(axis=(1, 3)))


def _augmented_batches(directory, seed, num_parallel_calls):
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(
            directory, image_size=32, random_crop=True, brightness_delta=20.0, seed=seed,
            batch_size=6, num_parallel_calls=num_parallel_calls)
        return rh.run_dataset(input_fn(), max_batches=6)


def test_seeded_training_input_is_repeatable_whatever_the_parallelism(image_records):
    directory, _ = image_records
    first = _augmented_batches(directory, 7, num_parallel_calls=1)
    again = _augmented_batches(directory, 7, num_parallel_calls=4)
    other = _augmented_batches(directory, 8, num_parallel_calls=4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0]["image"], b[0]["image"])
        np.testing.assert_array_equal(a[1], b[1])
    assert any(not np.array_equal(a[0]["image"], c[0]["image"]) for a, c in zip(first, other))


def test_stateless_augmentation_flips_crops_and_shifts(image_records):
    """Across many seeds the flip happens about half the time, crops move, brightness shifts."""
    directory, _ = image_records
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = tf.placeholder(tf.string, [])
        key = tf.placeholder(tf.int64, [2])
        flipped = preprocessing.preprocess_for_train(encoded, 32, seed=key)
        cropped = preprocessing.preprocess_for_train(encoded, 32, random_flip=False,
                                                     random_crop=True, seed=key)
        plain = preprocessing.preprocess_for_eval(encoded, 32)
        data = rh.encode(rh.class_image(1, 3, 32))
        base = sess.run(plain, {encoded: data})
        flips = crops = 0
        for i in range(40):
            f, c = sess.run([flipped, cropped], {encoded: data, key: [3, i]})
            if np.array_equal(f, base[:, ::-1]):
                flips += 1
            else:
                np.testing.assert_array_equal(f, base)
            crops += not np.array_equal(c, base)
    assert 10 <= flips <= 30 and crops >= 30


@pytest.mark.parametrize("decoded_shape", [None, (32, 32)])
def test_flip_follows_its_stateless_draw(decoded_shape):
    """The flip (a reverse over an axis list of [1] or none, not a tf.cond; of the uint8 pixels
    when the decoded size is known to be the output size) mirrors exactly the images whose
    draw number 2 under their key, U(0, 1) stateless, is below 1/2."""
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = tf.placeholder(tf.string, [])
        key = tf.placeholder(tf.int64, [2])
        image = preprocessing.preprocess_for_train(encoded, 32, seed=key,
                                                   decoded_shape=decoded_shape)
        draw = tf.random.stateless_uniform([], seed=tf.stack([key[0], key[1] * 16 + 2]))
        data = rh.encode(rh.class_image(2, 1, 32))
        base = sess.run(preprocessing.preprocess_for_eval(encoded, 32), {encoded: data})
        assert not np.array_equal(base, base[:, ::-1])
        flips = 0
        for i in range(40):
            got, u = sess.run([image, draw], {encoded: data, key: [5, i]})
            np.testing.assert_array_equal(got, base[:, ::-1] if u < 0.5 else base)
            flips += u < 0.5
    assert 0 < flips < 40


@pytest.mark.parametrize("augmentation,known_shape", [
    ({"random_crop": True, "brightness_delta": 9.0, "contrast_delta": 0.2}, False),
    ({}, True), ({"brightness_delta": 9.0}, True)])
def test_each_image_is_augmented_under_the_key_of_its_place_in_the_stream(
        tmp_path, augmentation, known_shape):
    """The keys are made a batch of records at a time; image i of the stream (one file, a
    shuffle buffer of 1: the records in file order, repeated) is preprocess_for_train of
    record i mod N under the key (seed, i), past the end of an epoch too; with the manifest's
    record_shape too (no resize in the graph; the flip of the uint8 pixels)."""
    directory = str(tmp_path / "one_shard")
    rh.write_image_records(directory, num_classes=3, per_class=4, size=32, num_shards=1)
    if known_shape:
        directory = _records_with_shape(directory, tmp_path, (32, 32))
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, image_size=32, seed=11,
                                                    shuffle_buffer=1, batch_size=5,
                                                    **augmentation)
        batches = rh.run_dataset(input_fn(), max_batches=4)
    images = np.concatenate([features["image"] for features, _ in batches])
    (path,) = tf.io.gfile.glob(directory + "/*.tfrecord")
    serialized = list(tf.io.tf_record_iterator(path))
    assert len(images) == 20 > len(serialized) == 12
    with tf.Graph().as_default(), tf.Session() as sess:
        record = tf.placeholder(tf.string, [])
        key = tf.placeholder(tf.int64, [2])
        image = preprocessing.preprocess_for_train(
            schema.parse_image_record(record)["encoded"], 32, seed=key, **augmentation)
        for i, got in enumerate(images):
            want = sess.run(image, {record: serialized[i % len(serialized)], key: [11, i]})
            np.testing.assert_array_equal(got, want, err_msg=f"image {i}")


@pytest.mark.parametrize("count", [None, 5])
def test_augmentation_draws_are_tf_stateless_uniform(count):
    """Each draw is tf.random.stateless_uniform under the key (seed[0], seed[1] * 16 + draw),
    whatever op computes it."""
    with tf.Graph().as_default(), tf.Session() as sess:
        seed = tf.constant([7, 1234], tf.int64)
        shape = [] if count is None else [count]
        for draw in (0, 2, 9):
            got = preprocessing._RandomDraws(seed).uniforms(draw, count)  # noqa: SLF001
            want = tf.random.stateless_uniform(shape, seed=tf.constant([7, 1234 * 16 + draw],
                                                                       tf.int64))
            got, want = sess.run([got, want])
            assert got.shape == tuple(shape)
            np.testing.assert_array_equal(got, want)


def _records_with_shape(directory, tmp_path, shape):
    """A copy of the records whose manifest says every image is ``shape`` (H, W)."""
    copy = tmp_path / f"records_{shape[0]}x{shape[1]}"
    shutil.copytree(directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["transform"] = {"crop_box": None, "image_size": None, "resampling": None,
                             "record_shape": list(shape)}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return str(copy)


def _cond_ops(graph):
    """Conditionals of the graph but TF 1.15's decode_image (a format-sniffing tf.cond)."""
    return [op for op in graph.get_operations() if op.type in ("If", "StatelessIf", "Switch")
            and not op.name.startswith("decode_image/")]


@pytest.mark.parametrize("augmentation", [
    {}, {"random_crop": True, "brightness_delta": 9.0, "contrast_delta": 0.2},
    {"min_crop_scale": 0.8}])
@pytest.mark.parametrize("image_size", [32, 40])
def test_known_record_shape_spares_the_conditional_resize_not_a_pixel(image_records, tmp_path,
                                                                       image_size, augmentation):
    """With the manifest's record_shape the decoded images get a static shape, so the resize to
    the same size is left out when the graph is built (no tf.cond), and the flip alone mirrors
    the uint8 pixels; the batches, augmented and seeded, are the same as without it, whether a
    resize is due (40) or not (32)."""
    directory, _ = image_records
    known = _records_with_shape(directory, tmp_path, (32, 32))
    assert input_fns.records_image_shape(known) == (32, 32)
    assert input_fns.records_image_shape(directory) is None
    batches = {}
    for name, records in (("unknown", directory), ("known", known)):
        with tf.Graph().as_default():
            input_fn = input_fns.train_input_fn_builder(
                records, image_size=image_size, seed=3, batch_size=6, **augmentation)
            batches[name] = rh.run_dataset(input_fn(), max_batches=5)
    for a, b in zip(batches["unknown"], batches["known"]):
        np.testing.assert_array_equal(a[0]["image"], b[0]["image"])
        np.testing.assert_array_equal(a[1], b[1])
    with tf.Graph().as_default() as graph:
        encoded = tf.placeholder(tf.string, [])
        preprocessing.preprocess_for_train(encoded, 32, seed=tf.constant([1, 2], tf.int64),
                                           decoded_shape=(32, 32))
        assert not _cond_ops(graph)
    with tf.Graph().as_default() as graph:  # the test can see the conditional
        preprocessing.preprocess_for_train(tf.placeholder(tf.string, []), 32,
                                           seed=tf.constant([1, 2], tf.int64))
        assert _cond_ops(graph)


def test_a_record_of_another_shape_than_the_manifest_says_stops_the_input(image_records,
                                                                          tmp_path):
    directory, _ = image_records
    wrong = _records_with_shape(directory, tmp_path, (30, 30))
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(wrong, image_size=32, seed=1, batch_size=4)
        with pytest.raises(tf.errors.InvalidArgumentError, match="30"):
            rh.run_dataset(input_fn(), max_batches=1)


# What the environment says where a process stands, contradicting every shard below: the
# input_fn must read the shard it is given (runtime.cluster reads the environment, not it).
CONTRADICTING_ENVIRONMENT = {
    "RANK_SIZE": "5", "RANK_ID": "4",
    "TF_CONFIG": '{"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3", "h:4"]}, '
                 '"task": {"type": "worker", "index": 2}}'}


@pytest.mark.parametrize("rank_size,per_rank", [(2, 12), (3, 8)])
def test_each_shard_reads_its_own_part(image_records, monkeypatch, rank_size, per_rank):
    """Each worker (an Ascend rank, a TF_CONFIG task) reads the part of the records its
    ``WorkerShard`` names over several epochs of training input: the parts are disjoint and
    together all of them, whatever the environment says. Two shards take one of the two files
    each; three shards, more than the files, take a third of the records each."""
    directory, _ = image_records
    for name, value in CONTRADICTING_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    seen = []
    for rank in range(rank_size):
        with tf.Graph().as_default():
            input_fn = input_fns.train_input_fn_builder(
                directory, image_size=32, random_flip=False, seed=rank,
                worker_shard=WorkerShard(rank, rank_size))
            dataset = input_fn({"batch_size": 4}, config=tf.estimator.RunConfig())
            batches = rh.run_dataset(dataset, max_batches=3 * per_rank // 4)  # three epochs
        records = collections.Counter(
            (int(label), image.tobytes()) for features, labels in batches
            for image, label in zip(features["image"], labels))
        # Every record of the rank's part, each once per epoch.
        assert len(records) == per_rank and set(records.values()) == {3}, rank
        seen.append(set(records))
    for i in range(rank_size):
        for j in range(i + 1, rank_size):
            assert not seen[i] & seen[j], (i, j)
    assert len(set().union(*seen)) == 24


def test_without_a_shard_every_record_is_read_whatever_the_environment(image_records,
                                                                        monkeypatch):
    directory, items = image_records
    for name, value in CONTRADICTING_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    with tf.Graph().as_default():
        input_fn = input_fns.train_input_fn_builder(directory, image_size=32, is_training=False)
        batches = rh.run_dataset(input_fn({"batch_size": 4}, config=tf.estimator.RunConfig()))
    assert sum(len(labels) for _, labels in batches) == len(items) == 24


def test_scale_crop_and_contrast_augmentation(image_records):
    """Scale crops zoom into the face (a box inside the image, resized), contrast scales the
    deviation from the mean; both are off at their defaults and stateless when seeded."""
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = tf.placeholder(tf.string, [])
        key = tf.placeholder(tf.int64, [2])
        zoomed = preprocessing.preprocess_for_train(encoded, 16, random_flip=False,
                                                    min_crop_scale=0.5, seed=key)
        contrasted = preprocessing.preprocess_for_train(encoded, 16, random_flip=False,
                                                        contrast_delta=0.5, seed=key)
        default = preprocessing.preprocess_for_train(encoded, 16, random_flip=False, seed=key)
        plain = preprocessing.preprocess_for_eval(encoded, 16)
        # A horizontal ramp 0..255 over 64 columns: a box's crop is a ramp over a sub-range.
        ramp = np.tile(np.linspace(0, 255, 64)[None, :, None], (64, 1, 3)).round().astype(np.uint8)
        data = rh.encode(ramp, "png")
        base = sess.run(plain, {encoded: data})
        np.testing.assert_array_equal(sess.run(default, {encoded: data, key: [1, 0]}), base)
        spans, factors = [], []
        for i in range(30):
            z, c = sess.run([zoomed, contrasted], {encoded: data, key: [1, i]})
            again = sess.run(zoomed, {encoded: data, key: [1, i]})
            np.testing.assert_array_equal(z, again)
            row = z[8, :, 0] * preprocessing.PIXEL_SCALE + preprocessing.PIXEL_MEAN
            assert np.all(np.diff(row) >= -1e-3)  # still a rising ramp: no flip, no wrap
            spans.append((row[-1] - row[0]) / 255.0)
            centred = base - base.mean()
            factors.append(float(np.sum((c - c.mean()) * centred) / np.sum(centred ** 2)))
    # The box width is side / sqrt(ratio) with side in [0.5, 1], ratio within 1.1, and
    # crop_and_resize samples the box from edge pixel to edge pixel: the ramp spans that
    # fraction of its range (up to the uint8 rounding of the ramp).
    assert min(spans) >= 0.5 / np.sqrt(1.1) - 0.01 and max(spans) <= 1.0 + 0.01
    assert max(spans) - min(spans) > 0.2
    assert 0.5 - 1e-3 <= min(factors) and max(factors) <= 1.5 + 1e-3
    assert max(factors) - min(factors) > 0.3


def test_tf1_pipelines_run_without_the_racy_autotuning_model(image_records, pair_records):
    """TF 1.15's autotuning model crashes (segmentation fault in Model::RemoveNode) when a
    parallel interleave drops a finished file on a worker thread: every pipeline turns it off on
    TF 1 and keeps it on TF 2, where it is fixed and makes the input faster."""
    tf1 = int(tf.__version__.split(".")[0]) < 2
    with tf.Graph().as_default():
        datasets = [
            input_fns.train_input_fn_builder(image_records[0], image_size=16)({"batch_size": 4}),
            input_fns.train_input_fn_builder(image_records[0], image_size=16, is_training=False,
                                             batch_size=4)(),
            input_fns.pairs_input_fn_builder(pair_records[0], image_size=16, batch_size=4)(),
            input_fns.image_pairs_input_fn_builder(image_records[0], image_size=16,
                                                   batch_size=4)(params={}),
            input_fns.predict_input_fn_builder(["a.png"], image_size=16, batch_size=2)(),
        ]
        for dataset in datasets:
            options = dataset.options()
            if tf1:
                assert options.experimental_optimization.autotune is False
            else:
                assert options.autotune.enabled is not False


def test_normalize_is_the_insightface_mapping_bit_for_bit():
    """(x - 127.5) / 128, computed as a multiply by 1/128: the same float32 for every byte value
    and for the fractional pixels a resize or an augmentation makes."""
    values = np.concatenate([np.arange(256, dtype=np.float32),
                             np.random.default_rng(0).uniform(0, 255, 10000).astype(np.float32)])
    with tf.Graph().as_default(), tf.Session() as sess:
        got = sess.run(preprocessing.normalize(tf.constant(values)))
    want = (values - np.float32(127.5)) / np.float32(128.0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
