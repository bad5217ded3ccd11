"""ONNX and TFLite exports of a SavedModel, with parity and accuracy checks on real faces
(command line; the library is ``export.deploy_formats``).

    python -m export.convert --model=DIR --onnx=face.onnx
    python -m export.convert --model=DIR --tflite=face.tflite [--quantize=float16]
    python -m export.convert --model=DIR --tflite=face_int8.tflite --quantize=int8 \\
        --calibration_records=records/train
    python -m export.convert --model=DIR --check_records=records/pairs \\
        --check_files=face.onnx,face.tflite,face_int8.tflite

``--model`` is a SavedModel directory or an exporter's base directory (the newest timestamped
SavedModel is used), as for ``export.embed``. Both formats are converted from the SavedModel's
float signature (``pixels:serving_default``) with its variables frozen, the JPEG decoding cut
away (export/freeze.py) and the input fixed to the model's size S x S (read from the graph's
resize, or ``--image_size``):

* ONNX (tf2onnx): input ``pixels`` float32 [batch, S, S, 3], RGB 0..255, dynamic batch; output
  ``embedding`` float32 [batch, D], L2-normalised. Normalisation is inside the model.
* TFLite (the TF1-style converter: the dynamic-shape signature does not convert with the TF2
  one): input float32 [1, S, S, 3], RGB 0..255; output float32 [1, D], L2-normalised.
  ``--quantize=float16`` stores the weights in float16; ``--quantize=int8`` is integer
  quantisation (int8 weights and activations, float input and output), calibrated on
  ``--num_calibration_images`` faces of the training records; the ops in ``--int8_float_ops``
  (the final L2 normalisation by default; empty for full-integer) stay in float.

``--check_records`` (pair records of make_tfrecords.py ``--pairs``) embeds every pair with the
SavedModel and with each written or listed file, and prints the largest absolute difference of
the embeddings, their cosine to the SavedModel's (mean and min) and the verification accuracy of
each format (flip test-time augmentation, as the evaluation). Every model gets the same S x S
pixels, resized outside the models with the training code's resize.

Needs TensorFlow 2 for TFLite (``tf.lite``) and ``tf2onnx`` + ``onnx`` for ONNX; ``onnxruntime``
runs the ONNX checks. All are imported only when used; without them the command stops with one
line saying what to install.
"""

import sys

import cli

cli.quiet_tensorflow()  # before TensorFlow is imported

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from export.deploy_formats import (  # noqa: E402
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_INT8_FLOAT_OPS,
    DEFAULT_OPSET,
    ONNX_INPUT,
    QUANTIZE_MODES,
    ConvertError,
    calibration_pixels,
    convert_onnx,
    convert_tflite,
    model_image_size,
    resolve_model,
)
from export.format_checks import check_formats, check_records_transform  # noqa: E402


def format_rows(rows):
    """The Markdown table of :func:`check_formats`."""
    lines = ["| format | accuracy ± std | AUC | max abs diff | cosine mean | cosine min |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if "max_abs_diff" in row:
            diff = f"{row['max_abs_diff']:.2e}"
            if "max_abs_diff_batch1" in row:
                diff = f"{row['max_abs_diff']:.2e} (batch 1: {row['max_abs_diff_batch1']:.2e})"
            cosines = f"{row['cosine_mean']:.6f} | {row['cosine_min']:.6f}"
        else:
            diff, cosines = "reference", "— | —"
        lines.append(f"| {row['name']} | {row['accuracy']:.4f} ± {row['accuracy_std']:.4f} | "
                     f"{row['auc']:.4f} | {diff} | {cosines} |")
    return "\n".join(lines)


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "onnx" in flag_values:
        return
    flag_groups.define_model_path(flag_values)
    flags.DEFINE_string("onnx", None, "Write the ONNX model here (dynamic batch).",
                        flag_values=flag_values)
    flags.DEFINE_string("tflite", None, "Write the TFLite model here (batch 1).",
                        flag_values=flag_values)
    flags.DEFINE_enum("quantize", "none", QUANTIZE_MODES, "TFLite quantisation: none (float32), "
                      "float16 (weights), int8 (full integer, needs --calibration_records).",
                      flag_values=flag_values)
    flags.DEFINE_string("calibration_records", None, "Training records (make_tfrecords.py) the "
                        "int8 calibration faces are drawn from.", flag_values=flag_values)
    flags.DEFINE_integer("num_calibration_images", DEFAULT_CALIBRATION_IMAGES, "Faces in the "
                         "int8 representative set.", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_list("int8_float_ops", list(DEFAULT_INT8_FLOAT_OPS), "TFLite ops that stay "
                      "in float in an int8 model (e.g. L2_NORMALIZATION, FULLY_CONNECTED); "
                      "empty (--int8_float_ops=) for a full-integer model.",
                      flag_values=flag_values)
    flag_groups.define_image_size(flag_values, "the model's input S. Default: read from the "
                                  "model's graph.")
    flags.DEFINE_integer("opset", DEFAULT_OPSET, "ONNX opset.", lower_bound=9,
                         flag_values=flag_values)
    flags.DEFINE_string("check_records", None, "Pair records (make_tfrecords.py --pairs): "
                        "print parity and verification accuracy of the SavedModel and of every "
                        "written or --check_files model on their faces.",
                        flag_values=flag_values)
    flags.DEFINE_list("check_files", [], "Converted models (.onnx, .tflite, .pb) to check with "
                      "--check_records besides those written now.", flag_values=flag_values)
    flag_groups.define_allow_transform_mismatch(flag_values, "Check on --check_records")
    flags.DEFINE_integer("threads", None, "Threads of ONNX Runtime and TFLite in the checks "
                         "(default: theirs).", lower_bound=1, flag_values=flag_values)


def _check_usage(fv):
    if not fv.model:
        raise ConvertError("--model is required")
    if not (fv.onnx or fv.tflite or fv.check_records):
        raise ConvertError("nothing to do: give --onnx, --tflite and/or --check_records")
    if fv.quantize != "none" and not fv.tflite:
        raise ConvertError("--quantize applies to --tflite")
    if fv.quantize == "int8" and not fv.calibration_records:
        raise ConvertError("--quantize=int8 needs --calibration_records (training records the "
                           "representative faces are drawn from)")
    if fv.int8_float_ops != list(DEFAULT_INT8_FLOAT_OPS) and fv.quantize != "int8":
        raise ConvertError("--int8_float_ops applies to --quantize=int8")
    if fv.calibration_records and fv.quantize != "int8":
        raise ConvertError("--calibration_records applies to --quantize=int8")
    if fv.check_files and not fv.check_records:
        raise ConvertError("--check_files needs --check_records")


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: 0 on success, 1 with a one-line message on bad input."""
    if len(argv) > 1:
        print(f"convert: error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        return 1
    fv = flag_values
    try:
        _check_usage(fv)
        saved_model_dir = resolve_model(fv.model)
        print(f"model: {saved_model_dir}", file=sys.stderr)
        image_size = fv.image_size or model_image_size(saved_model_dir)
        written = []
        if fv.onnx:
            info = convert_onnx(saved_model_dir, fv.onnx, image_size, opset=fv.opset)
            print(f"ONNX: {info['path']} (input {ONNX_INPUT} [batch, {image_size}, {image_size}, "
                  f"3] float32 RGB 0..255, opset {info['opset']}, {info['bytes'] / 1e6:.1f} MB)")
            written.append(fv.onnx)
        if fv.tflite:
            calibration = None
            if fv.quantize == "int8":
                calibration = calibration_pixels(fv.calibration_records, image_size,
                                                 fv.num_calibration_images)
            info = convert_tflite(saved_model_dir, fv.tflite, image_size, fv.quantize,
                                  calibration, float_ops=fv.int8_float_ops)
            calibrated = (f", {info['calibration_images']} calibration faces, float ops: "
                          f"{', '.join(info['float_ops']) or 'none'}"
                          if "calibration_images" in info else "")
            print(f"TFLite: {info['path']} (input [1, {image_size}, {image_size}, 3] float32 RGB "
                  f"0..255, quantize {fv.quantize}{calibrated}, {info['bytes'] / 1e6:.1f} MB)")
            for note in info.get("notes", ()):
                print(f"note: {note}", file=sys.stderr)
            written.append(fv.tflite)
        if fv.check_records:
            check_records_transform(saved_model_dir, fv.check_records,
                                    fv.allow_transform_mismatch)
            files = written + [path for path in fv.check_files if path not in written]
            rows = check_formats(saved_model_dir, files, fv.check_records, image_size,
                                 threads=fv.threads, show_progress=True)
            print(f"{rows[0]['pairs']} pairs, flip TTA, {image_size}x{image_size} pixels for every "
                  "format")
            print(format_rows(rows))
    except ConvertError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 1
    return 0


def run():
    """Console entry point (``circle-convert``, ``python -m export.convert``)."""
    tf.get_logger().setLevel("ERROR")
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
