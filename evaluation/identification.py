"""1:N identification and retrieval metrics of embeddings of held-out identities, read from
image records: the library behind ``python -m export.identification``.

The protocol (README "Identification, IJB and a face gallery", :func:`gallery_probe_split`):
every identity with two or more images puts its first image (by file name) in the gallery and the
others in the probes (mated probes); every image of an identity with a single image is a
non-mated probe. :func:`evaluate` reports, from :mod:`evaluation.retrieval`: ``rank1``, ``rank5``
(closed set, mated probes), ``tpir@fpir=0.01``, ``tpir@fpir=0.1`` (open set) with their
thresholds, and Recall@K / R-precision / MAP@R of the whole set (leave one out).
:func:`read_image_records` gives the records' own encoded images, so faces are embedded cropped
exactly as for training.

The report (``report.json``, :func:`write_report`) keeps the thresholds (cosine), so ``python -m
export.gallery search --report=...`` can answer "unknown" at the same operating point.
"""

import os

import numpy as np

from data_tools import schema
from data_tools.fileio import write_metrics_json
from evaluation import retrieval

REPORT_JSON = "report.json"


class IdentificationError(ValueError):
    """Bad input (one line for the CLI)."""


def read_image_records(files):
    """``(encoded, identities, filenames)`` lists of every image record in ``files`` (in order).

    Parsed with the protobuf classes alone (no graph); TensorFlow is imported here.
    """
    import tensorflow.compat.v1 as tf  # noqa: PLC0415

    encoded, identities, filenames = [], [], []
    for path in files:
        for serialized in tf.io.tf_record_iterator(path):
            example = tf.train.Example.FromString(serialized)
            feature = example.features.feature
            if schema.ENCODED not in feature or schema.IDENTITY not in feature:
                raise IdentificationError(f"{path} holds records that are not image records "
                                          "(pair records?)")
            encoded.append(feature[schema.ENCODED].bytes_list.value[0])
            identities.append(feature[schema.IDENTITY].bytes_list.value[0].decode("utf-8"))
            filenames.append(feature[schema.FILENAME].bytes_list.value[0].decode("utf-8"))
    return encoded, identities, filenames


def record_files(records):
    """The shard files of a records directory (its manifest's list) or of a glob pattern."""
    import tensorflow.compat.v1 as tf  # noqa: PLC0415

    from data_tools import input_fns  # noqa: PLC0415

    try:
        pattern = input_fns.records_file_pattern(records)
    except ValueError as e:  # a damaged manifest
        raise IdentificationError(str(e)) from None
    files = list(pattern) if isinstance(pattern, (list, tuple)) else sorted(
        tf.io.gfile.glob(pattern))
    if not files:
        raise IdentificationError(f"no TFRecord files in {records}")
    return files


def gallery_probe_split(identities, filenames):
    """``(gallery_rows, probe_rows)``: the first image (by file name) of every identity with two
    or more images goes to the gallery, every other image to the probes."""
    by_identity = {}
    for row, (identity, filename) in enumerate(zip(identities, filenames)):
        by_identity.setdefault(identity, []).append((filename, row))
    gallery, probes = [], []
    for identity in sorted(by_identity):
        rows = [row for _, row in sorted(by_identity[identity])]
        if len(rows) >= 2:
            gallery.append(rows[0])
            probes.extend(rows[1:])
        else:
            probes.extend(rows)
    return np.array(gallery, np.int64), np.array(sorted(probes), np.int64)


def evaluate(embeddings, identities, filenames, ranks=(1, 5), fpirs=(0.01, 0.1),
             ks=(1, 5, 10)):
    """The protocol's figures for embeddings [N, D] of images with these identities/file names."""
    labels = np.array(identities)
    gallery, probes = gallery_probe_split(identities, filenames)
    if not gallery.size:
        raise IdentificationError("no identity has two images: there is no gallery")
    metrics = retrieval.identification_metrics(
        embeddings[gallery], labels[gallery], embeddings[probes], labels[probes], ranks=ranks,
        fpirs=fpirs)
    metrics.update(retrieval.retrieval_metrics(embeddings, labels, ks=ks))
    metrics["num_images"] = int(len(identities))
    metrics["num_identities"] = int(np.unique(labels).size)
    return metrics


def write_report(metrics, output_dir, extra=None):
    """``report.json`` (atomic) in ``output_dir``; returns its path. Non-finite values -> null."""
    os.makedirs(output_dir, exist_ok=True)
    return write_metrics_json(os.path.join(output_dir, REPORT_JSON), metrics, extra)
