"""insightface ``.rec`` conversion: ``make_tfrecords --input_rec`` against a plain sequential
read of the same ``train.rec`` and against the folder converter on the same images.

The same generated 112x112 JPEGs are written once as identity folders and once as a header0
``train.rec``/``train.idx``. Figures (images/s, each the fastest of ``repeats`` rounds):

* ``sequential_read``: walking the ``.rec`` record after record (framing and IRHeader parsed):
  the I/O and parsing floor of the format;
* ``rec_convert_wN`` / ``folder_convert_wN``: the converters with N workers (every image decoded
  once in the check pass, then sharded, hashed and fsynced);
* ``write_pass``: the part that stays in one process (read by offset, sha256, ``tf.Example``,
  TFRecord write) and ``check_per_core``: one worker's check rate (framing + full JPEG decode).

The MS1MV2 projection (5.8 M images) takes the best measured rate on this machine, and
for 16 cores Amdahl's bound from the two parts: 1 / (1 / (16 x check_per_core) + 1 / write_pass).
"""

import hashlib
import os
import shutil
import time

import tensorflow.compat.v1 as tf

from benchmarks import common
from data_tools import conversion, image_files, schema
from data_tools.insightface import convert as insightface
from data_tools.insightface import recordio

MS1MV2_IMAGES = 5800000


def _write_rec(files, rec_dir):
    images = []
    for path in files:
        with open(path, "rb") as f:
            images.append((int(os.path.basename(os.path.dirname(path))[2:]), f.read()))
    os.makedirs(rec_dir, exist_ok=True)
    recordio.write_dataset(rec_dir, images, layout=recordio.HEADER0,
                           image_shape=(common.IMAGE_SIZE, common.IMAGE_SIZE))


def _sequential_read(rec):
    count = 0
    with recordio.RecordReader(rec) as reader:
        for _, payload in reader.scan():
            _, data = recordio.unpack(payload)
            count += bool(data)  # header0 and identity records hold no image
    return count


def _write_pass(rec_dir, out_path):
    """The single-process part of --input_rec, on every image record in index order."""
    index = recordio.read_index(os.path.join(rec_dir, insightface.IDX_NAME))
    count = 0
    with recordio.RecordReader(os.path.join(rec_dir, insightface.REC_NAME)) as reader, \
            tf.io.TFRecordWriter(out_path) as writer:
        offsets = dict(index)
        layout = recordio.detect_layout(index, lambda key: reader.read(offsets[key], key))
        for key in layout.image_keys:
            header, data = recordio.unpack(reader.read(offsets[key], key))
            hashlib.sha256(data).hexdigest()
            writer.write(schema.image_example(data, "jpeg", 112, 112, 3, 0, "0", "train.rec"))
            count += 1
    return count


def _check_pass(rec_dir):
    """One worker's check of every image record (framing, header, full decode)."""
    rec = os.path.join(rec_dir, insightface.REC_NAME)
    count = 0
    with recordio.RecordReader(rec) as reader:
        for _, payload in reader.scan():
            header, data = recordio.unpack(payload)
            if data:
                image_files.check_bytes(data)
                count += 1
    return count


def run(quick=False, workdir=None, worker_counts=(1, 2), repeats=None):
    """Measure and print; returns the JSON dict."""
    num_classes, per_class = (10, 10) if quick else (100, 40)
    repeats = repeats or (1 if quick else 2)
    with common.scratch_dir(workdir, "bench_insightface_") as scratch:
        folder = os.path.join(scratch, "insightface_faces")
        rec_dir = os.path.join(scratch, "insightface_rec")
        if not os.path.isdir(rec_dir):
            shutil.rmtree(folder, ignore_errors=True)
            common.write_jpeg_folder(folder, num_classes, per_class, seed=3)
            files = sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names)
            _write_rec(files, rec_dir)
        rec = os.path.join(rec_dir, insightface.REC_NAME)
        images = num_classes * per_class
        figures = {"images": images, "rec_bytes": os.path.getsize(rec), "repeats": repeats}

        def best(fn):
            seconds = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                count = fn()
                seconds = min(seconds, time.perf_counter() - start)
                if count != images:
                    raise RuntimeError(f"processed {count} of {images} images")
            return images / seconds

        figures["sequential_read_images_per_s"] = common.rounded(
            best(lambda: _sequential_read(rec)))
        out = os.path.join(scratch, "insightface_out")
        for workers in worker_counts:
            for kind in ("rec", "folder"):
                def convert(kind=kind, workers=workers):
                    shutil.rmtree(out, ignore_errors=True)
                    if kind == "rec":
                        summary = insightface.convert_rec(rec_dir, out, num_workers=workers,
                                                          progress=False)
                    else:
                        summary = conversion.convert_folder(folder, out, num_workers=workers,
                                                            progress=False)
                    return summary["num_images"]
                figures[f"{kind}_convert_images_per_s_w{workers}"] = common.rounded(best(convert))
            figures[f"rec_over_folder_w{workers}"] = common.ratio(
                figures[f"rec_convert_images_per_s_w{workers}"],
                figures[f"folder_convert_images_per_s_w{workers}"])
        shutil.rmtree(out, ignore_errors=True)
        last = worker_counts[-1]
        figures[f"rec_convert_over_sequential_read_w{last}"] = common.ratio(
            figures[f"rec_convert_images_per_s_w{last}"], figures["sequential_read_images_per_s"])
        os.makedirs(out, exist_ok=True)
        write_rate = best(lambda: _write_pass(rec_dir, os.path.join(out, "x.tfrecord")))
        check_rate = best(lambda: _check_pass(rec_dir))
        shutil.rmtree(out, ignore_errors=True)
        figures["write_pass_images_per_s"] = common.rounded(write_rate)
        figures["check_per_core_images_per_s"] = common.rounded(check_rate)
        here = max(figures[f"rec_convert_images_per_s_w{w}"] for w in worker_counts)
        amdahl_16 = 1.0 / (1.0 / (16 * check_rate) + 1.0 / write_rate)
        figures["ms1mv2_hours_this_machine"] = common.rounded(MS1MV2_IMAGES / here / 3600, 2)
        figures["ms1mv2_hours_16_cores_bound"] = common.rounded(
            MS1MV2_IMAGES / amdahl_16 / 3600, 2)
        return common.emit("insightface_rec", figures)


def main(argv=None):
    common.run_command_line(run, __doc__, argv, repeats_help="rounds per figure; each keeps its "
                            "fastest (default: 2, 1 with --quick)")


if __name__ == "__main__":
    main()
