"""Small face-folder trees for the converter tests, generated with PIL and numpy.

Images are random noise (so every pixel matters when comparing decodes), 32x32 by default,
named the LFW way: ``<identity>/<identity>_%04d.<ext>``.
"""

import os
import subprocess
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from data_tools import conversion, schema

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "data_tools", "make_tfrecords.py")

# extension -> (PIL format, save kwargs); WebP is saved lossless so that a pixel comparison
# with the array it came from is exact.
SAVE_ARGS = {
    "jpg": ("JPEG", {"quality": 90}),
    "jpeg": ("JPEG", {"quality": 95}),
    "png": ("PNG", {}),
    "pgm": ("PPM", {}),
    "ppm": ("PPM", {}),
    "bmp": ("BMP", {}),
    "tif": ("TIFF", {}),
    "webp": ("WEBP", {"lossless": True}),
}


def identity_name(i):
    return f"Person_{chr(ord('A') + i)}"


def image_relpath(identity, index, ext):
    return f"{identity}/{identity}_{index:04d}.{ext}"


def random_pixels(rng, size=32, gray=False, height=None):
    shape = (height or size, size) if gray else (height or size, size, 3)
    return rng.randint(0, 256, size=shape).astype(np.uint8)


def save_image(path, pixels, ext):
    """Save ``pixels`` (HxW gray or HxWx3 RGB) as ``ext``; returns the file's bytes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pil_format, kwargs = SAVE_ARGS[ext]
    Image.fromarray(pixels).save(path, format=pil_format, **kwargs)
    with open(path, "rb") as f:
        return f.read()


def make_face_tree(root, counts, exts=("jpg",), gray_every=0, size=32, seed=0):
    """Write identity folders under ``root``.

    ``counts`` is a list: identity i gets ``counts[i]`` images. Image j of identity i uses
    ``exts[(i + j) % len(exts)]``; with ``gray_every=k`` every k-th image is grayscale.
    Returns ``{relpath: pixels as written}``.
    """
    rng = np.random.RandomState(seed)
    written = {}
    n = 0
    for i, count in enumerate(counts):
        identity = identity_name(i)
        for j in range(1, count + 1):
            ext = exts[(i + j) % len(exts)]
            gray = gray_every > 0 and n % gray_every == 0
            if ext == "pgm":
                gray = True
            elif ext in ("ppm", "webp"):  # WebP has no grayscale mode
                gray = False
            pixels = random_pixels(rng, size, gray=gray)
            relpath = image_relpath(identity, j, ext)
            save_image(os.path.join(root, relpath), pixels, ext)
            written[relpath] = pixels
            n += 1
    return written


def pil_rgb(path):
    """Reference decode: PIL, converted to RGB as every reader produces it."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _decode_exact(encoded, image_format):
    # INTEGER_ACCURATE is libjpeg's default DCT, the one PIL uses: the decodes agree exactly.
    return tf.cond(tf.equal(image_format, "jpeg"),
                   lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
                   lambda: tf.io.decode_png(encoded, channels=3))


def read_records(paths, kind="images", with_pixels=True):
    """Every record of ``paths`` (in file order) parsed with the schema in a tf.data graph.

    Image records come back as dicts with numpy/python values plus ``pixels`` (uint8 RGB,
    unless ``with_pixels`` is false); pair records as ``{index, fold, issame, image1, image2}``
    with such dicts for the images.
    """
    parse = schema.parse_image_record if kind == "images" else schema.parse_pair_record

    def add_pixels(image):
        image = dict(image)
        image["pixels"] = _decode_exact(image["encoded"], image["format"])
        return image

    def decode(record):
        if kind == "images":
            return add_pixels(record)
        record = dict(record)
        record["image1"] = add_pixels(record["image1"])
        record["image2"] = add_pixels(record["image2"])
        return record

    records = []
    with tf.Graph().as_default():
        dataset = tf.data.TFRecordDataset(list(paths)).map(parse)
        # Without pixels every field is a scalar: batches make the session calls few.
        dataset = dataset.map(decode) if with_pixels else dataset.batch(1024)
        next_value = tf.data.make_one_shot_iterator(dataset).get_next()
        with tf.Session() as session:
            while True:
                try:
                    value = session.run(next_value)
                except tf.errors.OutOfRangeError:
                    break
                if with_pixels:
                    records.append(_to_python(value))
                else:
                    records.extend(_unbatch(value))
    return records


def _unbatch(batch):
    if isinstance(batch, dict):
        columns = {k: _unbatch(v) for k, v in batch.items()}
        size = len(next(iter(columns.values())))
        return [{k: columns[k][i] for k in columns} for i in range(size)]
    return [_to_python(v) for v in batch]


def _to_python(value):
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def read_dir_bytes(directory):
    """``{filename: bytes}`` of the regular files directly in ``directory``."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = f.read()
    return out


def script_env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # The script must find the package by itself (its sys.path insertion), not through ours.
    env.pop("PYTHONPATH", None)
    return env


def run_script(args, **kwargs):
    """Run ``python data_tools/make_tfrecords.py ARGS`` from the repo root; returns the result."""
    return subprocess.run([sys.executable, SCRIPT] + list(args), cwd=REPO_ROOT,
                          env=script_env(), capture_output=True, text=True, timeout=300,
                          check=False, **kwargs)


def run_estimator_main(*args, timeout=900):
    """Run ``python estimator_main.py ARGS`` from the repo root (TensorFlow's C++ log quiet);
    asserts it succeeds (the end of its stderr otherwise) and returns its stdout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "estimator_main.py")]
                          + list(args), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def convert_quietly(input_dir, output_dir, **kwargs):
    """convert_folder with one worker and no progress bar (test defaults)."""
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    return conversion.convert_folder(str(input_dir), str(output_dir), **kwargs)


def shard_files(directory):
    """The .tfrecord files of a records directory, sorted."""
    return sorted(os.path.join(str(directory), f) for f in os.listdir(str(directory))
                  if f.endswith(".tfrecord"))
