"""Eval spec, SavedModel, frozen graph and embed CLI on one tiny trained model."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf
from PIL import Image

import cli
from data_tools import image_files, input_fns
from evaluation import verification
from evaluation import verification_metric as eval_metrics
from export import embed, embedder, exporters, freeze, serving
from runtime import estimator_factory
from tests import model_helpers
from tests import records_helpers as rh

SIZE = 32
NUM_PAIRS = 10
N_FOLDS = 2
# What a conversion with --image_size=SIZE records (the fixture's records are SIZE square).
TRANSFORM = {"crop_box": None, "image_size": SIZE, "resampling": "lanczos"}
# Ops that make a graph not flat (ATC, TF 1.15 consumers): control flow and Python callbacks.
NOT_FLAT = {"If", "StatelessIf", "While", "StatelessWhile", "Switch", "Merge", "Enter", "Exit",
            "NextIteration", "LoopCond", "PyFunc", "PyFuncStateless", "EagerPyFunc",
            "PartitionedCall", "StatefulPartitionedCall"}


def build_model_fn(metrics_fn=None, eval_flip=True):
    return model_helpers.build_model_fn(
        backbone="tiny", head="circle", num_classes=4, embedding_size=16, learning_rate=0.05,
        total_steps=20, gamma=32.0, eval_flip=eval_flip, eval_metrics_fn=metrics_fn,
        log_every_n_steps=1000)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained 20 steps, its pair records and the pairs' pixels."""
    root = tmp_path_factory.mktemp("export")
    images = str(root / "images")
    rh.write_image_records(images, num_classes=4, per_class=8, size=SIZE)
    pairs = str(root / "pairs")
    expected = rh.write_pair_records(pairs, num_pairs=NUM_PAIRS, size=SIZE, n_folds=N_FOLDS)
    model_dir = str(root / "model")
    metrics_fn = eval_metrics.verification_metrics_fn_builder(NUM_PAIRS, n_folds=N_FOLDS)
    estimator = estimator_factory.build_estimator(build_model_fn(metrics_fn), model_dir,
                                                  tf_random_seed=0)
    estimator.train(input_fns.train_input_fn_builder(images, image_size=SIZE, batch_size=8,
                                                     seed=0), max_steps=20)
    return {"estimator": estimator, "pairs": pairs, "expected": expected,
            "model_dir": model_dir, "root": root}


def offline_embeddings(estimator, pixels, flip):
    """PREDICT embeddings of 0..255 images, with flip TTA done outside the graph."""
    normalised = (np.asarray(pixels, np.float32) - 127.5) / 128.0

    def predict(batch):
        input_fn = lambda: tf.data.Dataset.from_tensor_slices({"image": batch}).batch(4)  # noqa: E731
        return np.stack([p["embedding"] for p in estimator.predict(input_fn)])

    embeddings = predict(normalised)
    if flip:
        embeddings = embeddings + predict(normalised[:, :, ::-1])
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings


@pytest.mark.parametrize("flip", [True, False])
def test_eval_metrics_equal_offline_evaluate(trained, flip):
    estimator = trained["estimator"]
    if not flip:
        metrics_fn = eval_metrics.verification_metrics_fn_builder(NUM_PAIRS, n_folds=N_FOLDS)
        estimator = tf.estimator.Estimator(build_model_fn(metrics_fn, eval_flip=False),
                                           trained["model_dir"])
    result = estimator.evaluate(input_fns.pairs_input_fn_builder(
        trained["pairs"], image_size=SIZE, flip_tta=flip, batch_size=4))
    a = offline_embeddings(estimator, [e[0] for e in trained["expected"]], flip)
    b = offline_embeddings(estimator, [e[1] for e in trained["expected"]], flip)
    issame = np.array([e[2] for e in trained["expected"]])
    offline = verification.evaluate(a, b, issame, n_folds=N_FOLDS)
    online = eval_metrics.metrics_from_eval_result(result)
    for key in ("accuracy", "accuracy_std", "threshold", "val", "far", "auc", "eer"):
        assert online[key] == pytest.approx(offline[key], abs=1e-6), key
    assert online["flip"] is flip  # the report says which embeddings its threshold is for
    np.testing.assert_allclose(online["fold_accuracy"], offline["fold_accuracy"], atol=1e-6)
    np.testing.assert_allclose(online["tpr"], offline["tpr"], atol=1e-6)


def test_padding_and_batch_size_do_not_change_the_metrics(trained):
    results = []
    for batch in (3, 5, 10, 16):  # padding of 2, 0, 0 and 6 pairs
        results.append(trained["estimator"].evaluate(input_fns.pairs_input_fn_builder(
            trained["pairs"], image_size=SIZE, batch_size=batch)))
    for result in results[1:]:
        for key in ("lfw/accuracy", "lfw/auc", "lfw/eer", "lfw/threshold"):
            assert result[key] == pytest.approx(results[0][key], abs=1e-6), key


def test_metric_refuses_an_eval_set_with_missing_pairs(trained):
    metrics_fn = eval_metrics.verification_metrics_fn_builder(NUM_PAIRS + 2, n_folds=N_FOLDS)
    estimator = tf.estimator.Estimator(build_model_fn(metrics_fn), trained["model_dir"])
    with pytest.raises(Exception, match="saw 10 of 12 pairs"):
        estimator.evaluate(input_fns.pairs_input_fn_builder(trained["pairs"], image_size=SIZE,
                                                            batch_size=5))


def test_metric_names_pair_indices_past_the_set(trained):
    # Pair records whose indices run past num_pairs (an older converter's --allow_missing_pairs
    # kept pairs-file positions) get the cause and the remedy, not a scatter index error.
    metrics_fn = eval_metrics.verification_metrics_fn_builder(NUM_PAIRS - 2, n_folds=N_FOLDS)
    estimator = tf.estimator.Estimator(build_model_fn(metrics_fn), trained["model_dir"])
    with pytest.raises(Exception, match="2 eval pair.s. have an index outside the 8 pairs.*"
                                        "convert them again"):
        estimator.evaluate(input_fns.pairs_input_fn_builder(trained["pairs"], image_size=SIZE,
                                                            batch_size=5))


@pytest.fixture(scope="module")
def saved_model(trained):
    base = str(trained["root"] / "saved")
    path = exporters.export_checkpoint(trained["estimator"], base,
                                       serving.serving_input_receiver_fn_builder(SIZE))
    return path


def run_signature(saved_model, pixels, fetch=None):
    """The pixels signature's embedding of float pixels (and ``fetch``, a tensor name)."""
    with tf.Graph().as_default() as graph, tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, ["serve"], saved_model)
        alt = meta.signature_def[serving.PIXELS_SIGNATURE]
        fetches = [alt.outputs["embedding"].name] + ([fetch] if fetch else [])
        out = sess.run(fetches, {alt.inputs["pixels"].name: np.asarray(pixels, np.float32)})
        del graph
    return out if fetch else out[0]


def pil_resize(pixels, size, transform=False):
    """The converter's pixels: Lanczos (``transform``: centre square first) to ``size``."""
    images = [Image.fromarray(np.asarray(p, np.uint8)) for p in pixels]
    if transform:
        images = [image_files.transform_image(image, size) for image in images]
    else:
        images = [image.resize((size, size), Image.LANCZOS) for image in images]
    return np.stack([np.asarray(image, np.float32) for image in images])


def test_saved_model_signatures_agree_with_predict(trained, saved_model):
    pixels = np.stack([e[0] for e in trained["expected"]]).astype(np.uint8)
    expected = offline_embeddings(trained["estimator"], pixels, flip=False)
    blobs = [rh.encode(p) for p in pixels]
    with tf.Graph().as_default(), tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, ["serve"], saved_model)
        assert set(meta.signature_def) >= {"serving_default", serving.PIXELS_SIGNATURE}
        default = meta.signature_def["serving_default"]
        by_bytes = sess.run(default.outputs["embedding"].name,
                            {default.inputs["image_bytes"].name: blobs})
        alt = meta.signature_def[serving.PIXELS_SIGNATURE]
        by_pixels = sess.run(alt.outputs["embedding"].name,
                             {alt.inputs["pixels"].name: pixels.astype(np.float32)})
    np.testing.assert_allclose(by_bytes, expected, atol=1e-5)
    np.testing.assert_allclose(by_pixels, expected, atol=1e-5)


def test_saved_model_signatures_return_the_embedding_norm(trained, saved_model):
    """Both signatures return ``embedding_norm``, PREDICT's, next to ``embedding`` (issue 26
    item 4); the frozen graph carries it as a node of that name."""
    pixels = np.stack([e[0] for e in trained["expected"]]).astype(np.uint8)
    normalised = (pixels.astype(np.float32) - 127.5) / 128.0
    input_fn = lambda: tf.data.Dataset.from_tensor_slices({"image": normalised}).batch(4)  # noqa: E731
    expected = np.array([p["embedding_norm"] for p in trained["estimator"].predict(input_fn)])
    with tf.Graph().as_default(), tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, ["serve"], saved_model)
        got = {}
        for key, feed in (("serving_default", [rh.encode(p) for p in pixels]),
                          (serving.PIXELS_SIGNATURE, pixels.astype(np.float32))):
            signature = meta.signature_def[key]
            assert set(signature.outputs) == {"embedding", "embedding_norm"}, key
            got[key] = sess.run(signature.outputs["embedding_norm"].name,
                                {list(signature.inputs.values())[0].name: feed})
    for key, norms in got.items():
        np.testing.assert_allclose(norms, expected, rtol=1e-5, err_msg=key)
    frozen = freeze.freeze_saved_model(saved_model, str(trained["root"] / "frozen_norm.pb"),
                                       image_size=SIZE)
    graph, inputs, _ = freeze.load_frozen_graph(frozen)
    with tf.Session(graph=graph) as sess:
        norms = sess.run(graph.get_tensor_by_name(freeze.NORM_NODE + ":0"),
                         {inputs: pixels.astype(np.float32)})
    np.testing.assert_allclose(norms, expected, rtol=1e-5)


def test_saved_model_resizes_other_sizes_as_the_converter(trained, saved_model):
    """Any size is accepted and resized with the converter's (PIL's) Lanczos filter,
    antialiased: a 2x upscaled copy gives the network PIL's downscale of it to a fraction of a
    grey level, and its embedding."""
    pixels = np.stack([e[0] for e in trained["expected"]]).astype(np.uint8)
    big = np.repeat(np.repeat(pixels, 2, axis=1), 2, axis=2)
    converted = pil_resize(big, SIZE)
    by_big, network_input = run_signature(saved_model, big, serving.MODEL_INPUT + ":0")
    difference = np.abs(network_input * 128.0 + 127.5 - converted)
    # PIL rounds to 8 bits, this input is not rounded: half a level apart at most, plus filters.
    assert difference.mean() < 0.5 and difference.max() < 1.5, (difference.mean(),
                                                                  difference.max())
    expected = offline_embeddings(trained["estimator"], converted, flip=False)
    assert np.min(np.sum(by_big * expected, axis=1)) > 0.9999


@pytest.fixture(scope="module")
def transform_model(trained):
    """A SavedModel exported with the conversion transform of SIZE-square records."""
    return exporters.export_checkpoint(
        trained["estimator"], str(trained["root"] / "saved_transform"),
        serving.serving_input_receiver_fn_builder(SIZE, transform=TRANSFORM),
        transform=TRANSFORM)


def test_saved_model_with_a_transform_converts_like_the_converter(trained, transform_model):
    """Records' size known: a larger, non-square face gets the converter's centre square and
    Lanczos resize (rounded to 8-bit levels, as PIL writes them); records' size: unchanged."""
    pixels = np.stack([e[0] for e in trained["expected"]]).astype(np.uint8)
    tall = np.repeat(np.repeat(pixels, 2, axis=1), 2, axis=2)
    tall = np.concatenate([tall[:, :5], tall, tall[:, -9:]], axis=1)  # 78 x 64: not square
    converted = pil_resize(tall, SIZE, transform=True)
    by_tall, network_input = run_signature(transform_model, tall, serving.MODEL_INPUT + ":0")
    difference = np.abs(network_input * 128.0 + 127.5 - converted)
    assert difference.mean() < 0.3 and difference.max() <= 2, (difference.mean(),
                                                                 difference.max())
    expected = offline_embeddings(trained["estimator"], converted, flip=False)
    assert np.min(np.sum(by_tall * expected, axis=1)) > 0.9999
    same = run_signature(transform_model, pixels)
    np.testing.assert_allclose(same, offline_embeddings(trained["estimator"], pixels, False),
                               atol=1e-5)
    assert exporters.read_export_transform(transform_model) == TRANSFORM


@pytest.mark.skipif(not tf2.__version__.startswith("2."), reason="TF 2 loader")
def test_saved_model_loads_in_tf2(trained, saved_model):
    pixels = np.stack([e[1] for e in trained["expected"]]).astype(np.float32)
    loaded = tf2.saved_model.load(saved_model)
    assert set(loaded.signatures) >= {"serving_default", serving.PIXELS_SIGNATURE}
    out = loaded.signatures[serving.PIXELS_SIGNATURE](pixels=tf2.constant(pixels))
    expected = offline_embeddings(trained["estimator"], pixels, flip=False)
    np.testing.assert_allclose(out["embedding"].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("model", ["saved_model", "transform_model"])
@pytest.mark.parametrize("input_size", [SIZE, 2 * SIZE])
def test_frozen_graph_equals_saved_model_and_is_flat(trained, model, input_size, request):
    """A static input size gives a flat graph (no If/While/Switch/Merge, no py_func, no
    function library), with batch norm in inference mode, computing what the SavedModel does."""
    saved = request.getfixturevalue(model)
    frozen = str(trained["root"] / f"frozen_{model}_{input_size}.pb")
    path = freeze.freeze_saved_model(saved, frozen, image_size=input_size)
    graph, inputs, outputs = freeze.load_frozen_graph(path)
    pixels = np.stack([e[0] for e in trained["expected"]]).astype(np.uint8)
    if input_size != SIZE:
        pixels = np.repeat(np.repeat(pixels, 2, axis=1), 2, axis=2)
    with tf.Session(graph=graph) as sess:
        frozen = sess.run(outputs, {inputs: pixels.astype(np.float32)})
    np.testing.assert_allclose(frozen, run_signature(saved, pixels), atol=1e-5)
    if input_size == SIZE:
        expected = offline_embeddings(trained["estimator"], pixels, flip=False)
        np.testing.assert_allclose(frozen, expected, atol=1e-5)
    ops = graph.get_operations()
    assert not [op for op in ops if op.type in ("VariableV2", "VarHandleOp", "DecodeJpeg",
                                                "DecodePng", "DecodeImage")]
    assert not {op.type for op in ops} & NOT_FLAT
    graph_def = tf.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    assert not graph_def.library.function
    resizes = [op for op in ops if op.type.startswith(("Resize", "ScaleAndTranslate"))]
    assert bool(resizes) == (input_size != SIZE)
    batch_norms = [op for op in ops if op.type.startswith("FusedBatchNorm")]
    assert batch_norms and not any(op.get_attr("is_training") for op in batch_norms)


def test_exporters_store_the_conversion_transform(trained, saved_model, tmp_path):
    result = trained["estimator"].evaluate(input_fns.pairs_input_fn_builder(
        trained["pairs"], image_size=SIZE, batch_size=4))
    receiver = serving.serving_input_receiver_fn_builder(SIZE, transform=TRANSFORM)
    checkpoint = tf.train.latest_checkpoint(trained["model_dir"])
    paths = {}
    for exporter in exporters.build_exporters(receiver, transform=TRANSFORM):
        path = exporter.export(trained["estimator"], str(tmp_path / exporter.name), checkpoint,
                               result, False)
        paths[exporter.name] = path.decode() if isinstance(path, bytes) else path
    assert sorted(paths) == ["best", "latest"]
    for name, path in paths.items():
        assert exporters.read_export_transform(path) == TRANSFORM, name
    assert os.path.isfile(os.path.join(paths["best"], "assets.extra", "report.json"))
    # Without a transform nothing is written: embed then has no default to apply.
    assert exporters.read_export_transform(saved_model) is None


def test_embed_cli_verifies_two_images_with_the_exported_threshold(trained, saved_model, tmp_path,
                                                                   capsys):
    result = trained["estimator"].evaluate(input_fns.pairs_input_fn_builder(
        trained["pairs"], image_size=SIZE, batch_size=4))
    exporters.write_export_report(saved_model, result)
    with open(os.path.join(saved_model, "assets.extra", "report.json")) as f:
        threshold = json.load(f)["threshold"]
    first, second = [], []
    for i, (a, b, _) in enumerate(trained["expected"][:2]):
        for pixels, out in ((a, first), (b, second)):
            path = tmp_path / (f"{i}_{len(out)}.png")
            path.write_bytes(rh.encode(pixels))
            out.append(str(path))
    with embedder.load_saved_model(saved_model) as model:
        embeddings = model.embed_files(first + second, flip=True)
    decisions = set()
    for one, two, (a, b) in ((first[0], first[0], (0, 0)), (first[0], second[0], (0, 2)),
                             (first[1], second[1], (1, 3))):
        code = cli.run_main(embed.define_flags, embed.main,
                            ["embed", "--model", saved_model, one, two])
        printed = capsys.readouterr().out
        assert code == 0
        report_path = os.path.join(saved_model, "assets.extra", "report.json")
        assert f"threshold: {threshold:.6f} (from {report_path}" in printed
        _, distance = embedder.compare(embeddings[a], embeddings[b])
        decision = "same person" if distance < threshold else "different people"
        assert f"decision: {decision} (squared L2 distance {distance:.6f}" in printed
        decisions.add(decision)
    # An image and itself: distance 0, below any threshold the report can hold.
    assert "same person" in decisions
