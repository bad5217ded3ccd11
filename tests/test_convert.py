"""ONNX and TFLite conversion (export/deploy_formats.py): parity with the SavedModel, and the
errors of its command line (export/convert.py).

The fast cases convert a freshly initialised ``tiny`` model (32x32) exported by this project's
serving receiver; the slow ones (real_data) convert a model trained here on real LFW-a faces and
measure parity, int8 cosines and the verification accuracy of every format on fold 10's pairs.
Without tf2onnx/onnxruntime (TF 1.15's stack) or TF 2's tf.lite the conversion tests skip.
"""

import os
import re
import sys

import numpy as np
import pytest

import cli
from benchmarks import deploy
from export import convert, deploy_formats, format_checks
from tests import _folder_fixtures as ff
from tests import real_lfw, test_embed_cli, tiny_model
from tests import records_helpers as rh

SIZE = 32
DIM = 16

needs_onnx = pytest.mark.skipif(not deploy_formats.onnx_available(),
                                reason="tf2onnx, onnx and onnxruntime are not installed")
needs_tflite = pytest.mark.skipif(not deploy_formats.tflite_available(),
                                  reason="TFLite conversion needs TensorFlow 2")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return deploy.initialised_saved_model(str(tmp_path_factory.mktemp("convert")), "tiny", SIZE,
                                          embedding_size=DIM)


@pytest.fixture(scope="module")
def faces():
    """40 distinct 32x32 images (float32 0..255), some grayscale as LFW-a."""
    images = [rh.class_image(label, index, SIZE, grayscale=index == 0)
              for label in range(8) for index in range(5)]
    images = [np.stack([i] * 3, axis=-1) if i.ndim == 2 else i for i in images]
    return np.stack(images).astype(np.float32)


@pytest.fixture(scope="module")
def reference(saved_model, faces):
    runner = format_checks.SavedModelRunner(saved_model)
    try:
        return runner(faces)
    finally:
        runner.close()


def test_model_image_size_is_read_from_the_graph(saved_model):
    assert deploy_formats.model_image_size(saved_model) == SIZE


def test_model_image_size_asks_for_the_flag_when_the_graph_does_not_tell(tmp_path):
    import tensorflow.compat.v1 as tf  # noqa: PLC0415

    path = str(tmp_path / "no_resize")
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        pixels = tf.placeholder(tf.float32, [None, None, None, 3], name="pixels")
        embedding = tf.nn.l2_normalize(tf.reduce_mean(pixels, axis=[1, 2]), axis=1)
        builder = tf.saved_model.builder.SavedModelBuilder(path)
        builder.add_meta_graph_and_variables(
            session, [tf.saved_model.tag_constants.SERVING], signature_def_map={
                "pixels:serving_default": tf.saved_model.signature_def_utils.predict_signature_def(
                    {"pixels": pixels}, {"embedding": embedding})})
        builder.save()
    with pytest.raises(deploy_formats.ConvertError, match="pass --image_size"):
        deploy_formats.model_image_size(path)


def test_resolve_model_takes_an_exporter_base(saved_model):
    assert deploy_formats.resolve_model(os.path.dirname(saved_model)) == saved_model


@needs_onnx
def test_onnx_has_a_dynamic_batch_and_matches_at_batch_1_and_32(saved_model, faces, reference,
                                                                 tmp_path):
    path = str(tmp_path / "face.onnx")
    info = deploy_formats.convert_onnx(saved_model, path)
    assert info["image_size"] == SIZE and info["embedding_size"] == DIM
    import onnx  # noqa: PLC0415 - optional dependency
    model = onnx.load(path)
    (model_input,), (model_output,) = model.graph.input, model.graph.output
    assert (model_input.name, model_output.name) == ("pixels", "embedding")
    dims = [d.dim_param or d.dim_value for d in model_input.type.tensor_type.shape.dim]
    assert dims == ["batch", SIZE, SIZE, 3]
    runner = format_checks.OnnxRunner(path)
    at_32 = format_checks.embed_in_batches(runner, faces, 32)
    at_1 = format_checks.embed_in_batches(runner, faces, 1)
    assert format_checks.parity(reference, at_32)["max_abs_diff"] <= 1e-5
    assert format_checks.parity(reference, at_1)["max_abs_diff"] <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(at_32, axis=1), 1.0, atol=1e-5)


@needs_tflite
def test_tflite_float32_matches_and_float16_is_close(saved_model, faces, reference, tmp_path):
    fp32 = str(tmp_path / "face.tflite")
    fp16 = str(tmp_path / "face_fp16.tflite")
    deploy_formats.convert_tflite(saved_model, fp16, quantize="float16")
    info = deploy_formats.convert_tflite(saved_model, fp32)
    runner = format_checks.TFLiteRunner(fp32)
    details = runner._interpreter.get_input_details()[0]
    assert list(details["shape"]) == [1, SIZE, SIZE, 3] and details["dtype"] == np.float32
    # Every PReLU is one PRELU op (export.graph_rewrites), none left as NEG/RELU/MUL/SUB.
    assert info["prelu_fused"] > 0
    assert len(op_dtypes(runner._interpreter, "PRELU")) == info["prelu_fused"]
    assert not op_dtypes(runner._interpreter, "NEG")
    # The 40 faces in one invocation at batch 40 (resized), the same as 40 of one face.
    batched = runner(faces)
    assert runner.batched
    single = format_checks.TFLiteRunner(fp32, batched=False)(faces)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    assert format_checks.parity(reference, batched)["max_abs_diff"] <= 1e-5
    assert format_checks.parity(reference[:1], runner(faces[:1]))["max_abs_diff"] <= 1e-5
    half = format_checks.parity(reference, format_checks.TFLiteRunner(fp16)(faces))
    assert half["cosine_min"] > 0.999
    assert os.path.getsize(fp16) < 0.7 * os.path.getsize(fp32)


def delegated_partitions(interpreter):
    """How many parts of the graph the default delegate (XNNPACK) took: its DELEGATE nodes in
    the execution plan, after the model's own ops."""
    plan = interpreter._interpreter
    return [plan.NodeName(i) for i in range(plan.NumNodes())].count("DELEGATE")


def op_dtypes(interpreter, name):
    """[(input dtypes, output dtypes)] of every op called ``name`` in a TFLite interpreter."""
    def dtypes(indices):
        return [interpreter._get_tensor_details(i, 0)["dtype"] for i in indices if i >= 0]

    return [(dtypes(op["inputs"]), dtypes(op["outputs"]))
            for op in interpreter._get_ops_details() if op["op_name"] == name]


@needs_tflite
@pytest.mark.parametrize("float_ops", [deploy_formats.DEFAULT_INT8_FLOAT_OPS, (),
                                       ("L2_NORMALIZATION", "FULLY_CONNECTED", "PRELU")])
def test_tflite_int8_with_float_input_output_and_chosen_float_ops(saved_model, faces, reference,
                                                                  tmp_path, float_ops):
    records = str(tmp_path / "train")
    rh.write_image_records(records, num_classes=4, per_class=8, size=48)  # resized to 32
    calibration = deploy_formats.calibration_pixels(records, SIZE, count=20)
    assert calibration.shape == (20, SIZE, SIZE, 3) and calibration.max() > 1.0
    path = str(tmp_path / "face_int8.tflite")
    info = deploy_formats.convert_tflite(saved_model, path, quantize="int8",
                                         calibration=calibration, float_ops=float_ops)
    assert info["calibration_images"] == 20 and info["float_ops"] == list(float_ops)
    runner = format_checks.TFLiteRunner(path)
    interpreter = runner._interpreter
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    # Weights and activations are int8: every convolution runs on int8 tensors.
    convs = op_dtypes(interpreter, "CONV_2D")
    assert convs
    for inputs, outputs in convs:
        assert inputs[:2] == [np.int8, np.int8] and outputs == [np.int8]
    # The ops asked for run in float, the others in int8 (a full-integer model when none).
    for name in ("L2_NORMALIZATION", "FULLY_CONNECTED", "PRELU"):
        expected = np.float32 if name in float_ops else np.int8
        assert op_dtypes(interpreter, name)
        for found in op_dtypes(interpreter, name):
            assert found[0][0] == expected and found[1] == [expected], (name, found)
    # XNNPACK has no int8 PRELU: in int8, every PReLU cuts the delegated graph; in float (the
    # default) the graph is one or two delegated parts.
    partitions = delegated_partitions(interpreter)
    if "PRELU" in float_ops:
        assert partitions <= 2
    else:
        assert partitions > len(op_dtypes(interpreter, "PRELU")) > 0
    result = format_checks.parity(reference, runner(faces))
    assert result["cosine_mean"] > 0.9, result
    np.testing.assert_allclose(runner(faces), format_checks.TFLiteRunner(
        path, batched=False)(faces), atol=1e-6)


def test_parity_figures():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [0.6, 0.8]])
    result = format_checks.parity(a, b)
    assert result["max_abs_diff"] == pytest.approx(0.6)
    assert result["cosine_min"] == pytest.approx(0.8)
    assert result["cosine_mean"] == pytest.approx(0.9)


# --- command line -------------------------------------------------------------------------------

def run_cli(args):
    return cli.run_main(convert.define_flags, convert.main, ["convert"] + list(args))


def one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("convert: error:")]
    assert len(err) == 1
    return err[0]


@pytest.mark.parametrize("args, message", [
    ([], "--model is required"),
    (["--model=x"], "nothing to do"),
    (["--model=x", "--onnx=a.onnx", "--quantize=int8"], "--quantize applies to --tflite"),
    (["--model=x", "--tflite=a.tflite", "--quantize=int8"], "needs --calibration_records"),
    (["--model=x", "--tflite=a.tflite", "--calibration_records=r"], "applies to --quantize=int8"),
    (["--model=x", "--tflite=a.tflite", "--int8_float_ops="], "applies to --quantize=int8"),
    (["--model=x", "--onnx=a.onnx", "--check_files=b.onnx"], "needs --check_records"),
])
def test_cli_refuses_flags_that_do_not_fit(args, message, capsys):
    assert run_cli(args) == 1
    assert message in one_error_line(capsys)


def test_cli_names_a_missing_model(tmp_path, capsys):
    assert run_cli([f"--model={tmp_path / 'nope'}", "--onnx=a.onnx"]) == 1
    assert "does not exist" in one_error_line(capsys)


def test_cli_refuses_a_saved_model_without_the_pixels_signature(tmp_path, capsys):
    path = str(tmp_path / "bytes_only")
    tiny_model.build_saved_model(path, test_embed_cli.PROJECTION)
    assert run_cli([f"--model={path}", f"--onnx={tmp_path / 'a.onnx'}"]) == 1
    assert "pixels:serving_default" in one_error_line(capsys)


def test_cli_says_what_to_install_without_tf2onnx(saved_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx raises ImportError
    assert run_cli([f"--model={saved_model}", f"--onnx={tmp_path / 'a.onnx'}"]) == 1
    assert "pip install tf2onnx==1.17.0" in one_error_line(capsys)
    assert not os.path.exists(str(tmp_path / "a.onnx"))


@needs_tflite
def test_cli_refuses_records_that_are_not_image_records(saved_model, tmp_path, capsys):
    pairs = str(tmp_path / "pairs")
    rh.write_pair_records(pairs, size=SIZE)
    assert run_cli([f"--model={saved_model}", f"--tflite={tmp_path / 'a.tflite'}",
                    "--quantize=int8", f"--calibration_records={pairs}"]) == 1
    assert "not image records" in one_error_line(capsys)


@needs_onnx
@needs_tflite
def test_cli_converts_and_checks_every_format_on_pair_records(saved_model, tmp_path, capfd):
    pairs = str(tmp_path / "pairs")
    rh.write_pair_records(pairs, num_pairs=20, size=SIZE, n_folds=2)
    onnx_path, tflite_path = str(tmp_path / "f.onnx"), str(tmp_path / "f.tflite")
    base = os.path.dirname(saved_model)  # an exporter base directory
    assert run_cli([f"--model={base}", f"--onnx={onnx_path}", f"--tflite={tflite_path}",
                    f"--check_records={pairs}"]) == 0
    out, err = capfd.readouterr()
    assert "20 pairs, flip TTA, 32x32 pixels" in out
    # Progress while each format embeds; the converter's op summary explained in one line.
    assert "check SavedModel" in err and "check f.tflite" in err
    assert "Summary on the non-converted ops" not in err and "XNNPACK" not in err
    assert re.search(r"^note: the TFLite converter's \"\d+ of \d+ ops non-converted\" are ", err,
                     re.M), err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["format", "SavedModel", "f.onnx",
                                                           "f.tflite"]
    rows_data = format_checks.check_formats(saved_model, [onnx_path, tflite_path], pairs)
    reference = rows_data[0]
    for row in rows_data[1:]:
        assert row["max_abs_diff"] <= 1e-5
        assert row["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-9)
    assert rows_data[1]["max_abs_diff_batch1"] <= 1e-5


# --- real faces (slow) --------------------------------------------------------------------------

REAL_MODEL_ENV = "CONVERT_REAL_MODEL"


@pytest.fixture(scope="module")
def real_setup(real_lfw_dir, tmp_path_factory):
    """Fold-10 pair records and training records of LFW-a (the holdout recipe's split), and a
    model: $CONVERT_REAL_MODEL when set (a SavedModel trained elsewhere, for the README's
    figures; the 112x112 face crops are resized to its input size), else ``tiny`` trained here
    briefly."""
    from data_tools import conversion, holdout_split  # noqa: PLC0415

    root = tmp_path_factory.mktemp("convert_real")
    lfw = real_lfw_dir
    split = str(root / "fold10")
    holdout_split.make_split(lfw, real_lfw.PAIRS, [10], split, 2, 10)
    crop = dict(crop_box="70,60,180,190", image_size=112, progress=False)
    conversion.convert_pairs(os.path.join(split, "pairs.txt"), lfw, str(root / "pairs"), **crop)
    conversion.convert_folder(os.path.join(split, "train"), str(root / "train"), **crop)
    model = os.environ.get(REAL_MODEL_ENV)
    if not model:
        model_dir = str(root / "model")
        for args in (["--mode=train", f"--train_records={root / 'train'}",
                      "--batch_size=32", "--train_steps=150", "--gamma=64",
                      "--learning_rate=0.05"], ["--mode=export"]):
            ff.run_estimator_main("--backbone=tiny", "--image_size=64", "--embedding_size=128",
                                  f"--model_dir={model_dir}", "--noprogress", "--verbosity=-1",
                                  *args, timeout=1200)
        model = os.path.join(model_dir, "export", "manual")
    return {"root": root, "model": deploy_formats.resolve_model(model),
            "pairs": str(root / "pairs"), "train": str(root / "train")}


@pytest.mark.slow
@pytest.mark.real_data
@real_lfw.skip_without_data
@needs_onnx
@needs_tflite
def test_real_faces_parity_int8_cosine_and_accuracy_per_format(real_setup):
    root, model = real_setup["root"], real_setup["model"]
    paths = {"onnx": str(root / "face.onnx"), "fp32": str(root / "face.tflite"),
             "fp16": str(root / "face_fp16.tflite"), "int8": str(root / "face_int8.tflite")}
    assert run_cli([f"--model={model}", f"--onnx={paths['onnx']}",
                    f"--tflite={paths['fp32']}"]) == 0
    assert run_cli([f"--model={model}", f"--tflite={paths['fp16']}",
                    "--quantize=float16"]) == 0
    assert run_cli([f"--model={model}", f"--tflite={paths['int8']}", "--quantize=int8",
                    f"--calibration_records={real_setup['train']}"]) == 0
    checked = format_checks.check_formats(
        model, [paths["onnx"], paths["fp32"], paths["fp16"], paths["int8"]], real_setup["pairs"])
    sys.stderr.write("\n" + convert.format_rows(checked) + "\n")  # pytest -s shows the table
    rows = {row["name"]: row for row in checked}
    saved = rows["SavedModel"]
    assert saved["pairs"] == 600
    onnx_row, fp32, fp16, int8 = (rows[os.path.basename(paths[k])]
                                  for k in ("onnx", "fp32", "fp16", "int8"))
    assert onnx_row["max_abs_diff"] <= 1e-5 and onnx_row["max_abs_diff_batch1"] <= 1e-5
    assert fp32["max_abs_diff"] <= 1e-5
    for row in (onnx_row, fp32):
        assert row["accuracy"] == pytest.approx(saved["accuracy"], abs=1e-9)
    assert fp16["cosine_min"] > 0.999
    assert int8["cosine_mean"] > 0.95
    # The target (int8 loses at most 0.5 points) is checked on a trained model only; the
    # briefly trained tiny model is there for the plumbing.
    if os.environ.get(REAL_MODEL_ENV):
        assert saved["accuracy"] - int8["accuracy"] <= 0.005
