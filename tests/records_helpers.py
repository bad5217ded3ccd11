"""Small TFRecord sets written straight through the schema, for tests of the readers and model.

They do not go through make_tfrecords.py, so reader tests do not depend on the converter.
"""

import io
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from data_tools import schema


def encode(pixels, image_format="png"):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG" if image_format == "png" else "JPEG",
                                 quality=95)
    return buffer.getvalue()


def class_image(label, index, size=32, grayscale=False):
    """An image whose colour says its class and whose noise says its index (deterministic)."""
    rng = np.random.RandomState(1000 * label + index)
    base = np.array([(37 * label) % 256, (91 * label) % 256, (151 * label) % 256], np.float32)
    pixels = base + rng.uniform(-20, 20, size=(size, size, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if grayscale:
        pixels = pixels[..., 0]
    return pixels


def write_image_records(directory, num_classes=4, per_class=5, size=32, num_shards=2,
                        image_format="png", teacher_dim=0):
    """Write image records + manifest.json + labels.txt; returns the list of (label, pixels).

    ``teacher_dim``: also a random ``teacher/embedding`` per image and the manifest's teacher.
    """
    rng = np.random.RandomState(0)
    os.makedirs(directory, exist_ok=True)
    items = []
    for label in range(num_classes):
        for index in range(per_class):
            items.append((label, index, class_image(label, index, size, grayscale=index == 0)))
    shards = []
    for shard in range(num_shards):
        name = f"train-{shard:05d}-of-{num_shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            count = 0
            for label, index, pixels in items[shard::num_shards]:
                channels = 1 if pixels.ndim == 2 else 3
                teacher = rng.randn(teacher_dim).astype(np.float32) if teacher_dim else None
                writer.write(schema.image_example(
                    encode(pixels, image_format), image_format, size, size, channels, label,
                    f"id{label:02d}", f"id{label:02d}/{index}.png", teacher_embedding=teacher))
                count += 1
        shards.append({"file": name, "records": count})
    with open(os.path.join(directory, "labels.txt"), "w") as f:
        f.write("".join(f"id{i:02d}\n" for i in range(num_classes)))
    manifest = {"kind": "images", "num_images": len(items), "num_classes": num_classes,
                "shards": shards}
    if teacher_dim:
        manifest["teacher"] = {"name": "random", "dim": teacher_dim}
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return [(label, pixels) for label, _, pixels in items]


def write_pair_records(directory, num_pairs=10, size=32, n_folds=2, folds=None):
    """Pair records: even positions matched (same class), odd mismatched. ``folds``: each
    pair's stored fold (default: ``n_folds`` contiguous blocks)."""
    os.makedirs(directory, exist_ok=True)
    name = "pairs-00000-of-00001.tfrecord"
    expected = []
    with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
        for i in range(num_pairs):
            same = i % 2 == 0
            a = class_image(i % 5, 1, size)
            b = class_image(i % 5 if same else (i + 1) % 5, 2, size)
            images = []
            for tag, pixels in (("a", a), ("b", b)):
                images.append({"encoded": encode(pixels), "format": "png", "height": size,
                               "width": size, "channels": 3, "identity": "id",
                               "filename": f"{tag}{i}.png"})
            fold = i * n_folds // num_pairs if folds is None else int(folds[i])
            writer.write(schema.pair_example(i, fold, same, *images))
            expected.append((a, b, same))
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump({"kind": "pairs", "num_pairs": num_pairs, "num_folds": n_folds,
                   "shards": [{"file": name, "records": num_pairs}]}, f)
    return expected


def run_dataset(dataset, max_batches=100):
    """Materialise up to ``max_batches`` elements of a dataset in graph mode.

    The dataset is cut with ``take`` and read to its end, so an endless training stream stops
    its background threads before the session closes. (The TF 1.15 segmentation fault CI met
    here was tf.data's autotuning model, which ``input_fns`` turns off on TF 1; this only keeps
    the helper from leaving running pipelines behind.)
    """
    element = tf.data.make_one_shot_iterator(dataset.take(max_batches)).get_next()
    out = []
    with tf.Session() as sess:
        while True:
            try:
                out.append(sess.run(element))
            except tf.errors.OutOfRangeError:
                break
    return out
