"""An insightface verification ``.bin`` from an LFW-format pairs file and its images: the
library behind ``python -m data_tools.insightface.make_bin`` (:func:`make_bin`).

Images go through the converter's transform (``crop_box``, then ``image_size``; without either,
JPEG/PNG files are stored byte for byte), so ``make_tfrecords.py --from_bin`` of the result gives
the same pair records' images as ``make_tfrecords.py --pairs`` with the same options. Pair i's
images are at positions 2i and 2i+1, in pairs-file order, so insightface's
``KFold(10, shuffle=False)`` sees the file's folds. A missing or unreadable image is an error.
"""

import os

from data_tools import image_files
from data_tools import pairs as pairs_lib
from data_tools.insightface import bin_format
from data_tools.shard_writer import Workers


class MakeBinError(ValueError):
    """Bad input or options; the CLI prints it as one line and exits 1."""


def _check_task(task):
    index, path, image_size, crop_box = task
    try:
        info = image_files.check_image(path, image_size, crop_box)
        return index, image_files.encode_image(path, info, image_size, crop_box), None
    except image_files.ImageError as e:
        return index, None, str(e)


def make_bin(pairs_path, image_dir, output, image_size=None, crop_box=None, num_workers=1,
             protocol=4):
    """Write ``output`` (a ``.bin``) from ``pairs_path`` and the images under ``image_dir``.

    Returns ``{"num_pairs", "num_images", "bytes"}``. Raises :class:`MakeBinError`,
    ``pairs.PairsFormatError`` or ``pairs.MissingPairImagesError`` on bad input.
    """
    try:
        box = image_files.parse_crop_box(crop_box)
    except ValueError as e:
        raise MakeBinError(f"--crop_box: {e}") from None
    if image_size is not None and image_size < 1:
        raise MakeBinError(f"--image_size must be a positive integer, got {image_size}")
    if not os.path.isfile(pairs_path):
        raise MakeBinError(f"--pairs {pairs_path} does not exist")
    if not os.path.isdir(image_dir):
        raise MakeBinError(f"--image_dir {image_dir} is not a directory")
    pairs_file = pairs_lib.read_pairs(pairs_path)
    relpath_pairs, _, _ = pairs_lib.resolve_pairs(pairs_file, image_dir)
    unique = sorted(set(path for two in relpath_pairs for path in two))
    encoded, bad = {}, []
    tasks = [(i, os.path.join(image_dir, path), image_size, box) for i, path in enumerate(unique)]
    with Workers(num_workers or os.cpu_count() or 1) as workers:
        for i, image, reason in workers.imap(_check_task, tasks):
            if reason is not None:
                bad.append(f"{unique[i]}: {reason}")
            else:
                encoded[unique[i]] = image.encoded
    if bad:
        raise MakeBinError(f"{len(bad)} image(s) named by the pairs file cannot be used: "
                           f"{'; '.join(bad[:5])}")
    bins = [encoded[path] for two in relpath_pairs for path in two]
    issame = [pair.issame for pair in pairs_file.pairs]
    size = bin_format.write_bin(output, bins, issame, protocol=protocol)
    return {"num_pairs": len(issame), "num_images": len(unique), "bytes": size}
