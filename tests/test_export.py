"""Eval spec, SavedModel, frozen graph and embed CLI on one tiny trained model."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from data_tools import cli, input_fns
from export import embed, eval_metrics, exporters, freeze, serving, verification
from model import estimator_factory
from tests import model_helpers
from tests import records_helpers as rh

SIZE = 32
NUM_PAIRS = 10
N_FOLDS = 2


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


@pytest.fixture(scope="module")
def saved_model(trained):
    base = str(trained["root"] / "saved")
    path = exporters.export_checkpoint(trained["estimator"], base,
                                       serving.serving_input_receiver_fn_builder(SIZE))
    return path


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
        # Any size is accepted: a 2x upscaled copy resizes back to about the same face.
        big = np.repeat(np.repeat(pixels, 2, axis=1), 2, axis=2).astype(np.float32)
        by_big = sess.run(alt.outputs["embedding"].name, {alt.inputs["pixels"].name: big})
    np.testing.assert_allclose(by_bytes, expected, atol=1e-5)
    np.testing.assert_allclose(by_pixels, expected, atol=1e-5)
    assert np.min(np.sum(by_big * expected, axis=1)) > 0.9


@pytest.mark.skipif(not tf2.__version__.startswith("2."), reason="TF 2 loader")
def test_saved_model_loads_in_tf2(trained, saved_model):
    pixels = np.stack([e[1] for e in trained["expected"]]).astype(np.float32)
    loaded = tf2.saved_model.load(saved_model)
    assert set(loaded.signatures) >= {"serving_default", serving.PIXELS_SIGNATURE}
    out = loaded.signatures[serving.PIXELS_SIGNATURE](pixels=tf2.constant(pixels))
    expected = offline_embeddings(trained["estimator"], pixels, flip=False)
    np.testing.assert_allclose(out["embedding"].numpy(), expected, atol=1e-5)


def test_frozen_graph_equals_saved_model_and_has_inference_batch_norm(trained, saved_model):
    path = freeze.freeze_saved_model(saved_model, str(trained["root"] / "frozen.pb"),
                                     image_size=SIZE)
    graph, inputs, outputs = freeze.load_frozen_graph(path)
    pixels = np.stack([e[0] for e in trained["expected"]]).astype(np.float32)
    with tf.Session(graph=graph) as sess:
        frozen = sess.run(outputs, {inputs: pixels})
    expected = offline_embeddings(trained["estimator"], pixels, flip=False)
    np.testing.assert_allclose(frozen, expected, atol=1e-5)
    ops = graph.get_operations()
    assert not [op for op in ops if op.type in ("VariableV2", "VarHandleOp", "DecodeJpeg",
                                                "DecodePng", "DecodeImage")]
    batch_norms = [op for op in ops if op.type.startswith("FusedBatchNorm")]
    assert batch_norms and not any(op.get_attr("is_training") for op in batch_norms)


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
    code = cli.run_main(embed.define_flags, embed.main,
                        ["embed", "--model", saved_model, first[0], second[0]])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"{threshold:.2f}" in printed or str(threshold) in printed
    assert "same" in printed.lower() or "different" in printed.lower()
