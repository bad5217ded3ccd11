"""Inference speed of the deployment formats against the SavedModel, on this CPU.

For each backbone (mobilefacenet and iresnet50 at 112x112; ``--quick``: tiny at 32x32) a freshly
initialised model is exported as a SavedModel with this project's serving receiver, then frozen
(export/freeze.py) and converted (export/deploy_formats.py) to ONNX, TFLite float32 and TFLite int8
(calibrated on generated face-like images: speed does not depend on what the faces are). Every
format embeds the same float32 RGB pixels at batch 1 and at batch 32, timed in alternating rounds
so that load from other jobs hits them alike: the SavedModel's pixels signature and the frozen
graph in a TF session, ONNX Runtime (CPU provider), and the TFLite interpreter (XNNPACK delegate by
default), converted at batch 1 and resized to 32 for a batch of 32. The conversions run in a child
process (:func:`build_formats_apart`: iresnet50's peak near 18 GB of memory). Every runtime
gets the same number of threads (``--threads``; default the CPUs of this process).

One JSON line per format: images/s at batch 1 and 32 for each backbone and the ratio to the
SavedModel's images/s in the same run.
"""

import argparse
import multiprocessing
import os

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from export import deploy_formats, exporters, format_checks, freeze, serving
from model import config as model_config
from model import heads
from model import model_fn as model_fn_lib

BACKBONES = (("mobilefacenet", 112), ("iresnet50", 112))
QUICK_BACKBONES = (("tiny", 32),)
BATCHES = (1, 32)
FORMATS = ("savedmodel", "frozen_graph", "onnx", "tflite_fp32", "tflite_int8")
CALIBRATION_IMAGES = 32


def initialised_saved_model(workdir, backbone, image_size, embedding_size=512, seed=0):
    """Export a freshly initialised ``backbone`` as this project's SavedModel; returns its path.

    The weights are the initialiser's (batch norm at its initial moving averages): enough for
    speed and for conversion parity, nothing for accuracy. Reused when already there.
    """
    model_dir = os.path.join(workdir, f"deploy_{backbone}_{image_size}")
    export_base = os.path.join(model_dir, "export")
    if os.path.isdir(export_base):
        try:
            return deploy_formats.resolve_model(export_base)
        except deploy_formats.ConvertError:
            pass
    backbone_config = model_config.BackboneConfig(backbone, embedding_size=embedding_size,
                                                  image_size=image_size)
    head = heads.build_head("softmax", num_classes=2, embedding_size=embedding_size)
    model_fn = model_fn_lib.model_fn_builder(backbone_config, head,
                                             model_config.OptimizationConfig())
    os.makedirs(model_dir, exist_ok=True)
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(seed)
        tf.train.get_or_create_global_step()
        images = tf.placeholder(tf.float32, [None, image_size, image_size, 3])
        model_fn({"image": images}, None, tf.estimator.ModeKeys.PREDICT)
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            tf.train.Saver().save(session, os.path.join(model_dir, "model.ckpt"), global_step=0)
    estimator = tf.estimator.Estimator(model_fn, model_dir)
    return exporters.export_checkpoint(estimator, export_base,
                                       serving.serving_input_receiver_fn_builder(image_size))


def build_formats(workdir, backbone, image_size, embedding_size=512):
    """``{format: path}`` of the SavedModel and its frozen, ONNX and TFLite conversions."""
    saved_model = initialised_saved_model(workdir, backbone, image_size, embedding_size)
    directory = os.path.join(workdir, f"deploy_{backbone}_{image_size}")
    paths = {"savedmodel": saved_model,
             "frozen_graph": os.path.join(directory, "frozen.pb"),
             "onnx": os.path.join(directory, "model.onnx"),
             "tflite_fp32": os.path.join(directory, "model.tflite"),
             "tflite_int8": os.path.join(directory, "model_int8.tflite")}
    if not os.path.isfile(paths["frozen_graph"]):
        freeze.freeze_saved_model(saved_model, paths["frozen_graph"], image_size)
    if not os.path.isfile(paths["onnx"]):
        deploy_formats.convert_onnx(saved_model, paths["onnx"], image_size)
    if not os.path.isfile(paths["tflite_fp32"]):
        deploy_formats.convert_tflite(saved_model, paths["tflite_fp32"], image_size)
    if not os.path.isfile(paths["tflite_int8"]):
        rng = np.random.RandomState(1)
        calibration = np.stack([common.face_like_pixels(rng, image_size)
                                for _ in range(CALIBRATION_IMAGES)]).astype(np.float32)
        deploy_formats.convert_tflite(saved_model, paths["tflite_int8"], image_size, "int8",
                               calibration)
    return paths


def build_formats_apart(workdir, backbone, image_size, embedding_size=512):
    """:func:`build_formats` in a child process (spawned: no TensorFlow state inherited), which
    gives all of its memory back when it exits; returns ``(paths, peak_rss_mb)`` where the peak
    is the child's resident set at its largest. Building iresnet50's five formats peaked at
    17.6 GB of resident memory (its ONNX conversion alone, tf2onnx, at 13.4 GB; TFLite's at
    3.1 GB): in the process that then timed the formats, the runners and the peer's process on
    top of what it kept went over a 24 GiB VM's memory (the OOM kill of round three)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_build_and_measure, (workdir, backbone, image_size, embedding_size))


def _build_and_measure(workdir, backbone, image_size, embedding_size):
    paths = build_formats(workdir, backbone, image_size, embedding_size)
    return paths, common.peak_rss_mb()


def _runner(name, path, threads):
    if name in ("savedmodel", "frozen_graph"):
        config = common.session_config()
        config.intra_op_parallelism_threads = threads
        config.inter_op_parallelism_threads = threads
        if name == "savedmodel":
            return format_checks.SavedModelRunner(path, config)
        return format_checks.FrozenGraphRunner(path, config)
    return format_checks.runner_for(path, threads)


def time_formats(paths, image_size, quick=False, threads=None, rounds=None, calls=None):
    """``{(format, batch): seconds per image}``, formats interleaved per batch size.

    Every runtime gets ``threads`` threads (default: the CPUs of this process). ``rounds``
    alternating rounds (default 3), each with ``calls`` calls at batch 1 (default 10) and one at
    batch 32.
    """
    threads = threads or common.cpu_count()
    rng = np.random.RandomState(0)
    pixels = np.stack([common.face_like_pixels(rng, image_size)
                       for _ in range(max(BATCHES))]).astype(np.float32)
    runners = {name: _runner(name, paths[name], threads) for name in FORMATS}
    seconds = {}
    try:
        for batch in BATCHES:
            images = pixels[:batch]
            per_round = 1 if batch > 1 else (calls or (2 if quick else 10))
            timed = {}
            for name, runner in runners.items():
                runner(images)  # warm-up: graph optimisation, allocation, delegate setup
                timed[name] = ((lambda r=runner, x=images: r(x)), per_round)
            for name, value in common.interleaved(timed, rounds or (2 if quick else 3)).items():
                seconds[(name, batch)] = value / batch
    finally:
        for runner in runners.values():
            runner.close()
    return seconds


def run(quick=False, workdir=None, backbones=None, threads=None, rounds=None, calls=None):
    """Measure and print one JSON line per format; returns their dicts."""
    backbones = backbones or (QUICK_BACKBONES if quick else BACKBONES)
    missing = [what for what, ok in (("tf2onnx/onnx/onnxruntime", deploy_formats.onnx_available()),
                                     ("tf.lite of TensorFlow 2", deploy_formats.tflite_available()))
               if not ok]
    if missing:
        return [common.emit("deploy", {"skipped": f"needs {' and '.join(missing)}"})]
    figures = {name: {"format": name, "threads": threads or common.cpu_count()}
               for name in FORMATS}
    with common.scratch_dir(workdir, "bench_deploy_") as scratch:
        for backbone, image_size in backbones:
            paths, _ = build_formats_apart(scratch, backbone, image_size,
                                           embedding_size=128 if quick else 512)
            seconds = time_formats(paths, image_size, quick, threads, rounds, calls)
            for name in FORMATS:
                for batch in BATCHES:
                    key = f"{backbone}_b{batch}"
                    figures[name][key + "_images_per_s"] = common.rounded(
                        1.0 / seconds[(name, batch)])
                    figures[name][key + "_over_savedmodel"] = common.ratio(
                        seconds[("savedmodel", batch)], seconds[(name, batch)])
    return [common.emit("deploy", figures[name]) for name in FORMATS]


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--backbones", default=None,
                        help="comma-separated backbone:size list, e.g. mobilefacenet:112")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every runtime (default: the CPUs of this process)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (3)")
    parser.add_argument("--calls", type=int, default=None,
                        help="calls at batch 1 per round (10)")
    args = parser.parse_args(argv)
    backbones = None
    if args.backbones:
        backbones = [(item.split(":")[0], int(item.split(":")[1]))
                     for item in args.backbones.split(",")]
    run(quick=args.quick, workdir=args.workdir, backbones=backbones, threads=args.threads,
        rounds=args.rounds, calls=args.calls)


if __name__ == "__main__":
    main()
