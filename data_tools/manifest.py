"""``manifest.json`` of a records directory: reading, writing and verifying shards.

The converter writes the manifest last, so its presence means the conversion finished. Keys:

* ``kind``: ``"images"`` (training shards) or ``"pairs"`` (verification pairs);
* images: ``num_images``, ``num_classes``, ``dropped_classes`` (identities below
  ``--min_images_per_class``), ``dropped_images`` (their images);
* pairs: ``num_pairs``, ``num_folds``, ``pairs_per_fold`` (n: matched pairs per fold, and as
  many mismatched, as in the pairs.txt header; None for a ``.bin`` whose pairs do not split so),
  ``fold_sizes`` (pairs kept per fold),
  ``missing_pairs`` (pairs left out by ``--allow_missing_pairs``), ``num_images`` (distinct);
* ``shards``: ``[{"file", "records", "bytes", "sha256"}]`` in order;
* ``skipped``: ``[{"path", "reason"}]`` for every input file that did not become a record;
* ``formats``: records per stored format and how many were re-encoded;
* ``options`` (everything that determines the bytes), ``tool_version``, ``schema_version``;
* ``transform``: how the pixels were converted, ``{"crop_box", "image_size", "resampling",
  "record_shape"}`` (see :func:`conversion_transform`); what a client must do to a raw photo to
  send the model what its evaluation records hold, and the records' ``[height, width]`` (None
  when their sizes differ).

There are no timestamps: the same input and options give the same manifest, byte for byte.
No TensorFlow here: tools that only inspect a records directory stay light.
"""

import json
import os

from data_tools import fileio
from data_tools import transform as transform_lib

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"


class ManifestError(ValueError):
    """A records directory without a usable manifest, or whose shards do not match it."""


def dumps(manifest):
    """Canonical JSON text of a manifest (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def write_manifest(records_dir, manifest):
    """Atomically write ``manifest`` (a dict) as ``records_dir/manifest.json``."""
    fileio.atomic_write_text(os.path.join(records_dir, MANIFEST_NAME), dumps(manifest))


def read_manifest(records_dir):
    """The manifest of ``records_dir`` as a dict.

    Raises :class:`ManifestError` when it is absent (the directory was never converted or the
    conversion did not finish: the manifest is written last) or not valid JSON.
    """
    path = os.path.join(records_dir, MANIFEST_NAME)
    if "://" in path:  # gs://, s3://, obs://: only TensorFlow's file system reaches them
        import tensorflow.compat.v1 as tf  # noqa: PLC0415  (local paths stay TF-free)

        exists, opener = tf.io.gfile.exists, tf.io.gfile.GFile
    else:
        exists, opener = os.path.isfile, lambda name: open(name, encoding="utf-8")
    if not exists(path):
        raise ManifestError(f"{MANIFEST_NAME} not found: {records_dir} is not a finished "
                            "conversion (run data_tools/make_tfrecords.py, or re-run it to finish)")
    try:
        with opener(path) as f:
            manifest = json.load(f)
    except ValueError as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or "shards" not in manifest or "kind" not in manifest:
        raise ManifestError(f"{path} lacks the 'kind' and 'shards' keys")
    return manifest


def conversion_transform(manifest):
    """The conversion transform of a manifest as JSON (``data_tools.transform.Transform``'s
    ``to_dict``: ``{"crop_box", "image_size", "resampling", "record_shape"}``, plus ``"align":
    true`` for aligned faces), for params.json and the exports; None for a manifest of another
    tool.

    Manifests written before the ``transform`` key existed give the same dict from their
    ``options`` (the converter always resized with Lanczos).
    """
    options = manifest.get("options")
    known = isinstance(manifest.get("transform"), dict) or (
        isinstance(options, dict) and ({"crop_box", "image_size"} <= set(options)
                                       or isinstance(options.get("align"), dict)))
    if not known:
        return None
    return (transform_lib.Transform.from_manifest(manifest) or transform_lib.Transform()).to_dict()


def shard_paths(records_dir):
    """Paths of the shards listed in the manifest, in manifest order."""
    return [os.path.join(records_dir, shard["file"])
            for shard in read_manifest(records_dir)["shards"]]


def verify_shards(records_dir):
    """Check every shard's size and sha256 against the manifest; returns the shard paths.

    Raises :class:`ManifestError` naming the first shard that is missing, has another size, or
    another sha256 (a copy cut short, a disk error, a file replaced by hand). Manifests written
    by other tools may leave out ``bytes`` and ``sha256``: those shards are checked for
    existence only.
    """
    paths = []
    for shard in read_manifest(records_dir)["shards"]:
        path = os.path.join(records_dir, shard["file"])
        if not os.path.isfile(path):
            raise ManifestError(f"shard {path} listed in the manifest is missing")
        size = os.path.getsize(path)
        if shard.get("bytes") is not None and size != shard["bytes"]:
            raise ManifestError(f"shard {path} has {size} bytes, the manifest says "
                                f"{shard['bytes']}")
        if shard.get("sha256") and fileio.sha256_file(path) != shard["sha256"]:
            raise ManifestError(f"shard {path} does not match its sha256 in the manifest")
        paths.append(path)
    return paths


def num_classes(records_dir):
    """Number of identities (classes) of an images records directory."""
    manifest = read_manifest(records_dir)
    if manifest["kind"] != "images":
        raise ManifestError(f"{records_dir} holds {manifest['kind']} records, which have no "
                            "classes")
    return int(manifest["num_classes"])


def read_labels(records_dir):
    """Identity names of an images records directory: element i is the name of label i."""
    path = os.path.join(records_dir, LABELS_NAME)
    if not os.path.isfile(path):
        raise ManifestError(f"{LABELS_NAME} not found in {records_dir}")
    with open(path, encoding="utf-8", newline="\n") as f:
        text = f.read()
    if not text:
        return []
    # Only "\n" separates labels: str.splitlines() would also split on \x1c, \u2028, ...
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
