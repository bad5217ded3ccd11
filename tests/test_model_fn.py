"""model_fn per estimator mode, training per head, resume, precision, NaN guard, schedules."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data_tools import input_fns
from model import heads, model_fn, optimization
from runtime import estimator_factory
from tests import model_helpers
from tests import records_helpers as rh

SIZE = 32
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    rh.write_image_records(directory, num_classes=NUM_CLASSES, per_class=8, size=SIZE)
    pairs = str(tmp_path_factory.mktemp("pairs"))
    rh.write_pair_records(pairs, num_pairs=10, size=SIZE)
    return directory, pairs


def builder(head="circle", **overrides):
    settings = dict(backbone="tiny", head=head, num_classes=NUM_CLASSES, embedding_size=16,
                    learning_rate=0.05, total_steps=100, warmup_steps=0, gamma=32.0,
                    log_every_n_steps=1000)
    settings.update(overrides)
    return model_helpers.build_model_fn(**settings)


def image_batch(batch=8):
    rng = np.random.RandomState(0)
    images = tf.constant(rng.uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32))
    labels = tf.constant(np.arange(batch) % NUM_CLASSES, tf.int32)
    return {"image": images}, labels


@pytest.mark.parametrize("mode", ["train", "eval", "infer"])
def test_spec_shapes_and_dtypes_per_mode(mode):
    with tf.Graph().as_default():
        features, labels = image_batch()
        spec = builder()(features, labels if mode != "infer" else None, mode)
        if mode == "infer":
            embedding = spec.predictions["embedding"]
            assert embedding.shape.as_list() == [8, 16] and embedding.dtype == tf.float32
            assert "serving_default" in spec.export_outputs
        else:
            assert spec.loss.shape.ndims == 0 and spec.loss.dtype == tf.float32
        if mode == "train":
            assert spec.train_op is not None
            assert tf.train.get_global_step() is not None
        if mode == "eval":
            assert {"similarity/positive", "similarity/negative",
                    "classification/accuracy"} <= set(spec.eval_metric_ops)


def test_predict_embeddings_are_unit_norm_and_batch_independent():
    """Batch norm in inference mode: an example's embedding ignores the rest of the batch."""
    with tf.Graph().as_default():
        rng = np.random.RandomState(1)
        images = tf.placeholder(tf.float32, [None, SIZE, SIZE, 3])
        spec = builder()({"image": images}, None, tf.estimator.ModeKeys.PREDICT)
        data = rng.uniform(-1, 1, (6, SIZE, SIZE, 3)).astype(np.float32)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            full = sess.run(spec.predictions["embedding"], {images: data})
            part = sess.run(spec.predictions["embedding"], {images: data[:2]})
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(full[:2], part, atol=1e-5)


def test_predict_embedding_norm_is_the_norm_before_normalisation():
    """``embedding_norm`` (issue 26 item 4) is the norm of the backbone's output, which the
    embedding is the direction of; both are in the serving export outputs."""
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, SIZE, SIZE, 3])
        spec = builder()({"image": images}, None, tf.estimator.ModeKeys.PREDICT)
        # The backbone again on the same variables (AUTO_REUSE), in inference mode.
        raw = model_fn.embed(images, "tiny", False, 16)
        data = np.random.RandomState(2).uniform(-1, 1, (5, SIZE, SIZE, 3)).astype(np.float32)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            embedding, norm, backbone = sess.run(
                [spec.predictions["embedding"], spec.predictions["embedding_norm"], raw],
                {images: data})
        outputs = spec.export_outputs["serving_default"].outputs
    assert set(outputs) == {"embedding", "embedding_norm"}
    assert norm.shape == (5,)
    np.testing.assert_allclose(norm, np.linalg.norm(backbone, axis=1), rtol=1e-5)
    np.testing.assert_allclose(embedding * norm[:, None], backbone, rtol=1e-4, atol=1e-5)
    assert np.ptp(norm) > 0  # per image, not one number


def test_weight_decay_covers_kernels_and_proxies_only():
    with tf.Graph().as_default():
        features, labels = image_batch()
        builder()(features, labels, tf.estimator.ModeKeys.TRAIN)
        decayed = {v.op.name.split("/")[-1] for v in tf.trainable_variables()
                   if optimization.is_decayed(v)}
        kept = {v.op.name.split("/")[-1] for v in tf.trainable_variables()
                if not optimization.is_decayed(v)}
    assert decayed == {"kernel", "proxies"}
    assert kept and kept <= {"gamma", "beta", "alpha", "bias"}


def test_weight_decay_loss_value_and_gradient():
    """wd · ½‖w‖² over kernels and proxies (partitioned ones too), nothing else; its gradient is
    wd · w on those variables (SGD weight decay as in MXNet/PyTorch) and none on the rest."""
    rng = np.random.RandomState(3)
    values = {"net/conv/kernel": rng.randn(3, 3, 2, 4), "net/conv/bias": rng.randn(4),
              "net/bn/gamma": rng.randn(4), "net/bn/beta": rng.randn(4),
              "net/prelu/alpha": rng.randn(4), "head/proxies": rng.randn(4, 6)}
    weight_decay = 5e-4
    with tf.Graph().as_default(), tf.Session() as sess:
        variables = {}
        for name, value in values.items():
            scope, leaf = name.rsplit("/", 1)
            with tf.variable_scope(scope):
                variables[name] = tf.get_variable(leaf, initializer=value.astype(np.float32))
        with tf.variable_scope("split"):
            split = tf.get_variable("proxies", [4, 6], tf.float32,
                                    tf.random_normal_initializer(seed=1),
                                    partitioner=tf.fixed_size_partitioner(2, axis=1))
        loss = optimization.weight_decay_loss(weight_decay)
        wrt = list(variables.values()) + list(split)
        gradients = tf.gradients(loss, wrt)
        sess.run(tf.global_variables_initializer())
        got_loss, current = sess.run([loss, wrt])
        got_gradients = [None if g is None else sess.run(g) for g in gradients]
        assert sess.run(optimization.weight_decay_loss(0.0)) == 0.0
    parts = current[len(values):]
    assert len(parts) == 2 and all(p.shape == (4, 3) for p in parts)
    decayed = [values["net/conv/kernel"], values["head/proxies"]] + parts
    expected = weight_decay * sum(0.5 * np.sum(np.square(v.astype(np.float64))) for v in decayed)
    np.testing.assert_allclose(got_loss, expected, rtol=1e-6)
    for variable, value, gradient in zip(wrt, current, got_gradients):
        if variable.op.name.split("/")[-1] in ("kernel", "proxies") or "/proxies/part_" in (
                variable.op.name):
            np.testing.assert_allclose(gradient, weight_decay * value, rtol=1e-6)
        else:
            assert gradient is None, variable.op.name


@pytest.mark.parametrize("schedule,steps,expected", [
    ("piecewise", [0, 4, 9, 10, 49, 50, 69, 70, 89, 90, 99],
     [0.02, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001]),
    ("cosine", [10, 55, 100], [0.1, 0.05, 0.0]),
    ("constant", [0, 4, 5, 99], [0.02, 0.1, 0.1, 0.1]),
])
def test_learning_rate_schedules(schedule, steps, expected):
    warmup = 10 if schedule == "cosine" else 5
    with tf.Graph().as_default(), tf.Session() as sess:
        step = tf.placeholder(tf.int64, [])
        lr = optimization.learning_rate_schedule(step, 0.1, 100, warmup_steps=warmup,
                                                 schedule=schedule)
        values = [sess.run(lr, {step: s}) for s in steps]
    if schedule == "piecewise":
        expected = [0.1 * (s + 1) / warmup if s < warmup else e for s, e in zip(steps, expected)]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)


def train_estimator(model_dir, records, head="circle", steps=30, batch=16, precision="fp32",
                    images_per_identity=None, **overrides):
    estimator = estimator_factory.build_estimator(
        builder(head, total_steps=steps, precision=precision, **overrides), str(model_dir),
        precision=precision, save_checkpoints_steps=steps, tf_random_seed=0)
    input_fn = input_fns.train_input_fn_builder(records, image_size=SIZE, batch_size=batch,
                                                images_per_identity=images_per_identity, seed=0)
    return estimator, input_fn


def labelled_eval_loss(estimator, records, batch=16):
    input_fn = input_fns.train_input_fn_builder(records, image_size=SIZE, batch_size=batch,
                                                is_training=False)
    return estimator.evaluate(input_fn)["loss"]


# The project's heads (circle, circle_pair) train in make test; the others, whose losses test_heads
# checks against numpy, train in make test-slow (about 20 s each on 2 cores).
@pytest.mark.parametrize("head", [h if h.startswith("circle") and h != "circle_combined"
                                  else pytest.param(h, marks=pytest.mark.slow)
                                  for h in sorted(heads.HEADS)])
def test_a_few_steps_lower_the_loss_for_every_head(tmp_path, records, head):
    directory, _ = records
    pair_level = heads.HEADS[head].needs_pk_batches
    # In-batch pairs give a noisier signal on this toy set: a larger step shows the trend.
    estimator, input_fn = train_estimator(tmp_path, directory, head=head, steps=40,
                                          images_per_identity=4 if pair_level else None,
                                          learning_rate=0.1 if pair_level else 0.05)
    estimator.train(input_fn, max_steps=1)
    before = labelled_eval_loss(estimator, directory)
    estimator.train(input_fn, max_steps=40)
    after = labelled_eval_loss(estimator, directory)
    assert np.isfinite(after) and after < 0.9 * before, (head, before, after)


PFC_CLASSES = 32


@pytest.fixture(scope="module")
def many_class_records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records32"))
    rh.write_image_records(directory, num_classes=PFC_CLASSES, per_class=4, size=SIZE)
    return directory


@pytest.mark.parametrize("partitions", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_partial_fc_training_lowers_the_full_loss(tmp_path, many_class_records, partitions):
    """Trained on samples of 16 of 32 classes, evaluated (EVAL mode) against all 32. (At this
    toy size the full head's loss falls to about 0.81x in these 60 steps, Partial FC's to
    0.80x; with 8 of 32 classes, the batch's own, the trend is too weak to test.)"""
    estimator, input_fn = train_estimator(tmp_path, many_class_records, steps=60, batch=8,
                                          num_classes=PFC_CLASSES, partial_fc_rate=0.5,
                                          proxy_partitions=partitions, learning_rate=0.1)
    estimator.train(input_fn, max_steps=1)
    before = labelled_eval_loss(estimator, many_class_records, batch=8)
    estimator.train(input_fn, max_steps=60)
    after = labelled_eval_loss(estimator, many_class_records, batch=8)
    assert np.isfinite(after) and after < 0.9 * before, (before, after)
    shapes = dict(tf.train.list_variables(str(tmp_path)))
    assert shapes["head/class_proxies"] == [PFC_CLASSES, 16]
    assert shapes["head/class_proxies/Momentum"] == [PFC_CLASSES, 16]
    assert "head/proxies" not in shapes


def test_partial_fc_train_op_updates_the_sampled_rows_only():
    """One momentum step of the model_fn's train_op (weight decay included) changes exactly
    the num_sample rows of the class-major proxies; the full matrix is not decayed."""
    with tf.Graph().as_default():
        features, labels = image_batch()
        tf.set_random_seed(0)
        spec = builder(num_classes=PFC_CLASSES, partial_fc_rate=0.25, proxy_partitions=2,
                       weight_decay=0.1)(features, labels, tf.estimator.ModeKeys.TRAIN)
        parts = [v for v in tf.trainable_variables() if "class_proxies" in v.op.name]
        assert len(parts) == 2 and not any(optimization.is_decayed(p) for p in parts)
        assert all(isinstance(g, tf.IndexedSlices) for g in tf.gradients(spec.loss, parts))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = np.vstack(sess.run(parts))
            sess.run(spec.train_op)
            after = np.vstack(sess.run(parts))
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert len(changed) == 8 and set(np.arange(8) % NUM_CLASSES) <= set(changed)


# make test-slow: tests/test_estimator_main.py resumes a run end to end in make test.
@pytest.mark.slow
def test_second_run_resumes_from_the_checkpoint(tmp_path, records):
    directory, _ = records
    estimator, input_fn = train_estimator(tmp_path, directory, steps=10)
    estimator.train(input_fn, max_steps=10)
    assert estimator.get_variable_value("global_step") == 10
    estimator, input_fn = train_estimator(tmp_path, directory, steps=15)
    estimator.train(input_fn, max_steps=15)
    assert estimator.get_variable_value("global_step") == 15
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-15")


@pytest.mark.skipif(not estimator_factory.bfloat16_supported(), reason="needs TF 2.x (oneDNN)")
def test_bf16_builds_and_trains_on_cpu(tmp_path, records):
    directory, _ = records
    estimator, input_fn = train_estimator(tmp_path, directory, steps=20, precision="bf16")
    estimator.train(input_fn, max_steps=20)
    assert estimator.get_variable_value("global_step") == 20
    for name in estimator.get_variable_names():
        value = estimator.get_variable_value(name)
        assert value.dtype != np.dtype("O") and np.all(np.isfinite(value)), name
    # The optimizer state and proxies stay float32.
    assert estimator.get_variable_value("head/proxies").dtype == np.float32
    # Batch norm trained on batch statistics: its moving averages moved off their initial 0 / 1
    # (a bf16 graph once normalised with the frozen ones and never updated them).
    means = [n for n in estimator.get_variable_names() if n.endswith("/moving_mean")]
    assert means and all(np.any(estimator.get_variable_value(n) != 0.0) for n in means)
    variances = [n[:-len("mean")] + "variance" for n in means]
    assert all(np.any(estimator.get_variable_value(n) != 1.0) for n in variances)


def test_bf16_runs_the_backbone_in_bfloat16_and_the_head_in_float32():
    with tf.Graph().as_default() as graph:
        features, labels = image_batch()
        builder(precision="bf16")(features, labels, tf.estimator.ModeKeys.TRAIN)
        convolutions = [op for op in graph.get_operations() if op.type == "Conv2D"]
        head_ops = [op for op in graph.get_operations() if op.name.startswith("head/")
                    and op.outputs and op.outputs[0].dtype.is_floating]
        variables = tf.global_variables()
    assert convolutions and all(op.get_attr("T") == tf.bfloat16 for op in convolutions)
    assert head_ops and all(op.outputs[0].dtype.base_dtype == tf.float32 for op in head_ops)
    assert all(v.dtype.base_dtype == tf.float32 for v in variables if v.dtype.is_floating)



@pytest.mark.parametrize("mode", [tf.estimator.ModeKeys.EVAL, tf.estimator.ModeKeys.PREDICT])
def test_bf16_runs_evaluate_and_serve_in_float32(mode):
    # The served graph is the evaluated one, and converts to TFLite (which refuses bfloat16).
    with tf.Graph().as_default() as graph:
        features, labels = image_batch()
        builder(precision="bf16")(features, labels, mode)
        dtypes = {op.outputs[0].dtype.base_dtype for op in graph.get_operations() if op.outputs}
        convolutions = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert convolutions and all(op.get_attr("T") == tf.float32 for op in convolutions)
    assert tf.bfloat16 not in dtypes

# make test-slow: tests/test_estimator_main.py checks a NaN loss end to end in make test.
@pytest.mark.slow
def test_nan_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path, records):
    directory, _ = records
    estimator, input_fn = train_estimator(tmp_path, directory, steps=5)
    estimator.train(input_fn, max_steps=5)

    def poisoned_input_fn():
        return input_fn().map(lambda features, labels: (
            {"image": features["image"] * np.nan}, labels))

    estimator, _ = train_estimator(tmp_path, directory, steps=10)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        estimator.train(poisoned_input_fn, max_steps=10)
    assert model_fn.NON_FINITE_LOSS_MESSAGE in info.value.message
    assert "[5]" in info.value.message  # the step that failed
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-5")


_VARIABLE_WRITES = ("Assign", "AssignAdd", "AssignSub", "AssignVariableOp",
                    "AssignAddVariableOp", "AssignSubVariableOp", "ScatterAdd", "ScatterSub",
                    "ScatterUpdate", "ResourceScatterAdd", "ResourceScatterSub",
                    "ResourceScatterUpdate")


def _ancestors(op):
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _nan_guard_graph():
    """The TRAIN spec on a fed batch, its variables split into what the optimizer updates
    (trainable variables, their slots, the global step) and the batch-norm statistics."""
    images = tf.placeholder(tf.float32, [8, SIZE, SIZE, 3])
    labels = tf.constant(np.arange(8) % NUM_CLASSES, tf.int32)
    spec = builder()({"image": images}, labels, tf.estimator.ModeKeys.TRAIN)
    statistics = set(tf.get_collection(tf.GraphKeys.MOVING_AVERAGE_VARIABLES))
    optimized = [v for v in tf.global_variables() if v not in statistics]
    return images, spec, optimized, sorted(statistics, key=lambda v: v.op.name)


def _variables_after_a_poisoned_step(which):
    with tf.Graph().as_default():
        images, spec, optimized, statistics = _nan_guard_graph()
        variables = optimized if which == "optimized" else statistics
        good = np.random.RandomState(0).uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # Two good steps first: the momentum slots are non-zero, so even an update with a
            # zero gradient would move the weights.
            for _ in range(2):
                sess.run(spec.train_op, {images: good})
            before = sess.run(variables)
            with pytest.raises(tf.errors.InvalidArgumentError) as info:
                sess.run(spec.train_op, {images: good * np.nan})
            after = sess.run(variables)
    return variables, before, after, info.value.message


@pytest.mark.parametrize("which", ["optimized", "statistics"])
def test_nan_loss_stops_before_the_update_in_the_session(which):
    """The train op on a poisoned batch, in the session that ran it: the error names the step
    and no variable of the session has changed (weights, momentum slots, global step, and the
    batch-norm moving statistics)."""
    variables, before, after, message = _variables_after_a_poisoned_step(which)
    assert model_fn.NON_FINITE_LOSS_MESSAGE in message and "[2]" in message
    assert any(v.op.name == "global_step" for v in variables) == (which == "optimized")
    changed = [v.op.name for v, b, a in zip(variables, before, after)
               if not np.array_equal(a, b)]
    assert changed == []


@pytest.mark.parametrize("which", ["optimized", "statistics"])
def test_every_variable_write_of_the_train_op_waits_for_the_finite_loss_guard(which):
    """Structural form of the guarantee, independent of op scheduling: every op of the train
    step that writes a variable has the guard among its (data or control) ancestors. A guard
    merely grouped with the update (``tf.group(minimize, guard)``) fails this."""
    with tf.Graph().as_default() as graph:
        _, spec, optimized, statistics = _nan_guard_graph()
        # The assertion itself: an Assert op (TF 1.15, inside a cond) or an If (TF 2).
        guards = [op for op in graph.get_operations() if "finite_loss_guard" in op.name
                  and op.type in ("Assert", "If", "StatelessIf")]
        assert len(guards) == 1
        guard = guards[0]
        variables = optimized if which == "optimized" else statistics
        targets = {v.op.name for v in variables}
        writes = [op for op in _ancestors(spec.train_op) | {spec.train_op}
                  if op.type in _VARIABLE_WRITES or op.type.startswith(("Apply", "ResourceApply"))]
        written = {}
        for op in writes:
            # The variables an op writes come in as resource handles (TF 2) or refs (TF 1.15):
            # the first input of an assignment, the variable and its slots for an Apply op.
            for tensor in op.inputs:
                if tensor.dtype != tf.resource and not tensor.dtype._is_ref_dtype:
                    continue
                target = tensor.op
                while target.type == "Identity":
                    target = target.inputs[0].op
                if target.name in targets:
                    written.setdefault(target.name, []).append(op)
    assert set(written) == targets
    unguarded = sorted(name for name, ops in written.items()
                       if any(guard not in _ancestors(op) for op in ops))
    assert unguarded == []


def test_pair_records_eval_feeds_the_metric_fn(records):
    _, pairs = records
    seen = {}

    def metrics_fn(embeddings1, embeddings2, issame, pair_index, weight, fold, **single):
        seen.update(e1=embeddings1, e2=embeddings2, index=pair_index, weight=weight,
                    fold=fold, single=sorted(single))
        return {"dummy/mean_weight": tf.metrics.mean(weight)}

    with tf.Graph().as_default():
        input_fn = input_fns.pairs_input_fn_builder(pairs, image_size=SIZE, batch_size=4)
        features, labels = tf.data.make_one_shot_iterator(input_fn()).get_next()
        spec = builder(eval_metrics_fn=metrics_fn)(features, labels, tf.estimator.ModeKeys.EVAL)
        assert "dummy/mean_weight" in spec.eval_metric_ops
        assert "pairs/mean_cosine_same" in spec.eval_metric_ops
        assert seen["e1"].shape.as_list() == [4, 16] == seen["e2"].shape.as_list()
        assert seen["single"] == ["single_embeddings1", "single_embeddings2"]  # flip TTA on
        # Each pair's stored fold reaches the protocol (the records' pair/fold), and the
        # PREDICT outputs of the host path (Ascend) carry it too.
        predict = builder()(features, labels, tf.estimator.ModeKeys.PREDICT)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            e1, e2, fold, stored, predicted = sess.run(
                [seen["e1"], seen["e2"], seen["fold"], features["fold"],
                 predict.predictions["fold"]])
    np.testing.assert_array_equal(fold, stored)
    np.testing.assert_array_equal(predicted, stored)
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e2, axis=1), 1.0, rtol=1e-5)
