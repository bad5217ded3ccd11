"""The distillation term (model/distillation.py) and its wiring: numpy references, λ = 0 leaves
today's loss bit for bit, --head=none, a student that learns a fixed random teacher, params and
flags."""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data_tools.synthetic import faces as synthetic_faces
from model import config as model_config
from model import distillation, heads, model_fn

SIZE, NUM_CLASSES, DIM = 32, 4, 16


def _numpy_terms(student, teacher, projection, loss):
    """The terms, transcribed: project, then 1 - cos or the mean squared difference."""
    s = student.astype(np.float64) @ projection if projection is not None else student
    t = teacher.astype(np.float64)
    if loss == "cosine":
        cos = np.sum(s * t, 1) / (np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1))
        return 1.0 - cos
    return np.mean((s - t) ** 2, axis=1)


@pytest.mark.parametrize("loss", distillation.LOSSES)
@pytest.mark.parametrize("teacher_dim", [DIM, 7])
def test_term_equals_the_numpy_reference(loss, teacher_dim):
    rng = np.random.RandomState(0)
    student = rng.randn(6, DIM).astype(np.float32)
    teacher = rng.randn(6, teacher_dim).astype(np.float32)
    config = distillation.DistillationConfig(0.5, loss, teacher_dim)
    with tf.Graph().as_default():
        mean, cosine = distillation.distillation_loss(tf.constant(student), tf.constant(teacher),
                                                      config)
        projections = [v for v in tf.global_variables() if v.op.name.startswith("distillation/")]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            got, got_cosine = session.run([mean, cosine])
            projection = session.run(projections[0]) if projections else None
    assert (projection is None) == (teacher_dim == DIM)
    if projection is not None:
        assert projection.shape == (DIM, teacher_dim)
    terms = _numpy_terms(student, teacher, projection, loss)
    np.testing.assert_allclose(got, terms.mean(), rtol=1e-5)
    np.testing.assert_allclose(got_cosine, 1.0 - _numpy_terms(student, teacher, projection,
                                                              "cosine").mean(), rtol=1e-5)


def test_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="--distill_weight must be >= 0"):
        distillation.DistillationConfig(-1.0, "cosine", 8)
    with pytest.raises(ValueError, match="--distill_loss"):
        distillation.DistillationConfig(1.0, "kl", 8)
    with pytest.raises(ValueError, match="--teacher"):
        distillation.DistillationConfig(1.0, "cosine", 0)
    assert not distillation.DistillationConfig(0.0, "cosine", 0).enabled


def _builder(head="circle", distill=None, precision="fp32"):
    backbone = model_config.BackboneConfig("tiny", embedding_size=DIM, precision=precision)
    built = None if head is None else heads.build_head(head, num_classes=NUM_CLASSES,
                                                       embedding_size=DIM, gamma=32.0)
    optimization = model_config.OptimizationConfig(learning_rate=0.05, total_steps=10,
                                                   warmup_steps=0)
    return model_fn.model_fn_builder(backbone, built, optimization, distill=distill,
                                     log_every_n_steps=1000)


def _batch(teacher_dim=None, batch=8, seed=0):
    rng = np.random.RandomState(seed)
    features = {"image": tf.constant(rng.uniform(-1, 1, (batch, SIZE, SIZE, 3))
                                     .astype(np.float32))}
    if teacher_dim:
        features["teacher_embedding"] = tf.constant(rng.randn(batch, teacher_dim)
                                                    .astype(np.float32))
    return features, tf.constant(np.arange(batch) % NUM_CLASSES, tf.int32)


def _train_steps(builder, teacher_dim, steps=3):
    """Losses of a few steps, the variables after them (graph seed fixed) and the graph."""
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(7)
        features, labels = _batch(teacher_dim)
        spec = builder(features, labels, tf.estimator.ModeKeys.TRAIN)
        # The ops and their wiring (TF 2's function library names carry global counters).
        graph_def = [(node.name, node.op, list(node.input)) for node in graph.as_graph_def().node]
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            losses = [session.run([spec.loss, spec.train_op])[0] for _ in range(steps)]
            values = {v.op.name: session.run(v) for v in tf.global_variables()}
    return losses, values, graph_def


@pytest.mark.parametrize("teacher_dim", [None, 24])
def test_weight_zero_is_bit_identical_to_no_distillation(teacher_dim):
    """Records with or without a teacher column: λ = 0 builds exactly the graph of a model_fn
    without distillation, so the losses and the trained weights agree bit for bit."""
    today = _train_steps(_builder(distill=None), teacher_dim)
    zero = _train_steps(_builder(distill=distillation.DistillationConfig(0.0, "cosine", 24)),
                        teacher_dim)
    assert today[2] == zero[2]  # the same graph: no projection, no distillation op
    assert [float(x) for x in today[0]] == [float(x) for x in zero[0]]
    for name, value in today[1].items():
        np.testing.assert_array_equal(value, zero[1][name], err_msg=name)


def test_positive_weight_adds_the_term_and_a_projection_in_float32():
    config = distillation.DistillationConfig(2.0, "cosine", 24)
    with tf.Graph().as_default() as graph:
        features, labels = _batch(24)
        _builder(distill=config, precision="bf16" if _bf16() else "fp32")(
            features, labels, tf.estimator.ModeKeys.TRAIN)
        projection = [v for v in tf.global_variables() if v.op.name == "distillation/projection"]
        assert projection and projection[0].shape.as_list() == [DIM, 24]
        ops = [op for op in graph.get_operations() if op.name.startswith("distillation")
               and op.outputs and op.outputs[0].dtype.is_floating]
        assert ops and all(op.outputs[0].dtype.base_dtype == tf.float32 for op in ops)
        summaries = set(t.op.name for t in tf.get_collection(tf.GraphKeys.SUMMARIES))
    assert {"loss/head", "loss/distillation", "loss/total"} <= summaries


def _bf16():
    from runtime import estimator_factory  # noqa: PLC0415

    return estimator_factory.bfloat16_supported()


def test_head_none_trains_on_the_term_alone_and_needs_the_teacher():
    config = distillation.DistillationConfig(1.0, "l2", 24)
    with tf.Graph().as_default():
        features, _ = _batch(24)
        spec = _builder(head=None, distill=config)(features, None, tf.estimator.ModeKeys.TRAIN)
        assert not [v for v in tf.global_variables() if v.op.name.startswith("head/")]
        assert spec.train_op is not None
    with tf.Graph().as_default():
        features, labels = _batch(None)
        with pytest.raises(ValueError, match="make_tfrecords.py --teacher"):
            _builder(distill=config)(features, labels, tf.estimator.ModeKeys.TRAIN)
    # Export and pair evaluation need no loss: only a loss on image records refuses.
    with tf.Graph().as_default():
        features, _ = _batch(None)
        spec = _builder(head=None)(features, None, tf.estimator.ModeKeys.PREDICT)
        assert "embedding" in spec.predictions
        with pytest.raises(ValueError, match="nothing to train"):
            _builder(head=None)(features, None, tf.estimator.ModeKeys.TRAIN)


def _synthetic_faces(split, identities, per_identity, seed=0):
    images = []
    for i in range(identities):
        for j in range(per_identity):
            image, _ = synthetic_faces.render_image(seed, split, i, j, image_size=SIZE)
            images.append(np.asarray(image.convert("RGB"), np.float32))
    return (np.stack(images) - 127.5) / 128.0


def test_student_learns_a_fixed_random_teacher_on_synthetic_faces(tmp_path):
    """A fixed random network of the pixels (centred, 2 layers) is the teacher; a tiny student
    trained on the term alone (--head=none, through a projection 16 -> 24) matches it on
    held-out faces far better than chance (its cosine to another image's teacher vector)."""
    train = _synthetic_faces("train", 24, 6)
    held_out = _synthetic_faces("verification", 8, 4)
    rng = np.random.RandomState(1)
    mean = train.mean(axis=0)
    w1 = rng.randn(SIZE * SIZE * 3, 64) / np.sqrt(SIZE * SIZE * 3)
    w2 = rng.randn(64, 24) / 8.0

    def teacher(x):
        return (np.tanh((x - mean).reshape(len(x), -1) @ w1 * 4.0) @ w2).astype(np.float32)

    t_train, t_held = teacher(train), teacher(held_out)
    chance = np.mean([np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
                      for a, b in zip(t_held, np.roll(t_held, 1, axis=0))])

    config = distillation.DistillationConfig(1.0, "cosine", 24)
    backbone = model_config.BackboneConfig("tiny", embedding_size=DIM)
    optimization = model_config.OptimizationConfig(optimizer="adam", learning_rate=3e-3,
                                                   total_steps=150, warmup_steps=0,
                                                   weight_decay=0.0, schedule="cosine")
    fn = model_fn.model_fn_builder(backbone, None, optimization, distill=config,
                                   log_every_n_steps=1000)
    estimator = tf.estimator.Estimator(fn, model_dir=str(tmp_path), config=tf.estimator.RunConfig(
        tf_random_seed=0, save_summary_steps=1000, log_step_count_steps=1000))

    def train_input_fn():
        data = tf.data.Dataset.from_tensor_slices(
            ({"image": train, "teacher_embedding": t_train}, np.zeros(len(train), np.int32)))
        return data.shuffle(len(train), seed=0).repeat().batch(32, drop_remainder=True)

    def eval_input_fn(vectors):
        return lambda: tf.data.Dataset.from_tensor_slices(
            ({"image": held_out, "teacher_embedding": vectors},
             np.zeros(len(held_out), np.int32))).batch(len(held_out))

    estimator.train(train_input_fn, max_steps=150)
    matched = estimator.evaluate(eval_input_fn(t_held))["distillation/teacher_cosine"]
    shuffled = estimator.evaluate(eval_input_fn(np.roll(t_held, 1, axis=0)))[
        "distillation/teacher_cosine"]
    print(f"held-out cosine to the teacher {matched:.3f}, to another image's teacher "
          f"{shuffled:.3f}, chance (teacher vs teacher of another image) {chance:.3f}")
    assert matched > 0.6
    assert matched > chance + 0.3 and matched > shuffled + 0.3


def _stored_teacher_vectors(records):
    """Every ``teacher/embedding`` the records hold, read with protobuf alone."""
    from data_tools import schema  # noqa: PLC0415

    vectors = []
    for path in sorted(records.glob("*.tfrecord")):
        for serialized in tf.io.tf_record_iterator(str(path)):
            example = tf.train.Example.FromString(serialized)
            vectors.append(list(example.features.feature[schema.TEACHER_EMBEDDING]
                                .float_list.value))
    return np.asarray(vectors, np.float64)


def test_the_manifest_keeps_the_teacher_mean_and_old_records_are_scanned(tmp_path):
    """The converter writes the mean of the stored teacher vectors into the manifest; records
    made before it did are read once for it; both equal numpy's mean of the stored vectors."""
    import json  # noqa: PLC0415

    from data_tools import conversion, input_fns, teachers  # noqa: PLC0415
    from tests import _folder_fixtures as ff  # noqa: PLC0415

    class Teacher(teachers.Teacher):
        name, dim, description = "row_means", 4, {"kind": "test"}

        def embed(self, data):
            import io  # noqa: PLC0415

            from PIL import Image  # noqa: PLC0415

            pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32)
            return pixels.reshape(4, -1).mean(axis=1) + 100.0  # far from zero, like dlib's

    ff.make_face_tree(str(tmp_path / "faces"), [3, 2, 4], size=32)
    conversion.convert_folder(str(tmp_path / "faces"), str(tmp_path / "train"), num_workers=1,
                              progress=False, teacher=Teacher())
    expected = _stored_teacher_vectors(tmp_path / "train").mean(axis=0)
    manifest_path = tmp_path / "train" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    np.testing.assert_allclose(manifest["teacher"]["mean"], expected, rtol=1e-6)
    np.testing.assert_allclose(input_fns.records_teacher_mean(str(tmp_path / "train")),
                               expected, rtol=1e-6)
    del manifest["teacher"]["mean"]
    manifest_path.write_text(json.dumps(manifest))
    np.testing.assert_allclose(input_fns.records_teacher_mean(str(tmp_path / "train")),
                               expected, rtol=1e-6)


def test_the_centred_term_equals_numpy_on_the_teacher_minus_its_mean():
    """With ``teacher_mean`` the term compares the student with ``t - mean``: 1 - cos and the
    mean squared error against a numpy reference."""
    rng = np.random.RandomState(3)
    mean = rng.normal(size=6) * 5.0
    teacher = mean + rng.normal(size=(5, 6))
    student = rng.normal(size=(5, 6))
    centred = teacher - mean
    for loss in distillation.LOSSES:
        config = distillation.DistillationConfig(1.0, loss, 6, mean)
        with tf.Graph().as_default(), tf.Session() as sess:
            term, cosine = sess.run(distillation.distillation_loss(
                tf.constant(student, tf.float32), tf.constant(teacher, tf.float32), config))
        cos = (student * centred).sum(1) / np.linalg.norm(student, axis=1) \
            / np.linalg.norm(centred, axis=1)
        reference = (1.0 - cos).mean() if loss == "cosine" else \
            ((student - centred) ** 2).mean(axis=1).mean()
        np.testing.assert_allclose(term, reference, rtol=1e-5)
        np.testing.assert_allclose(cosine, cos.mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mean has 3 values"):
        distillation.DistillationConfig(1.0, "cosine", 6, [0.0, 0.0, 0.0])


def test_params_and_flags_wire_the_term(tmp_path, parse_flags):
    from data_tools import conversion, make_tfrecords, teachers  # noqa: F401, PLC0415
    from tests import _folder_fixtures as ff  # noqa: PLC0415
    from training import builders, params  # noqa: PLC0415

    class Teacher(teachers.Teacher):
        name, dim, description = "mean", 3, {"kind": "test"}

        def embed(self, data):
            import io  # noqa: PLC0415

            from PIL import Image  # noqa: PLC0415

            return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)\
                .mean(axis=(0, 1))

    ff.make_face_tree(str(tmp_path / "faces"), [4, 4], size=32)
    conversion.convert_folder(str(tmp_path / "faces"), str(tmp_path / "train"), num_workers=1,
                              progress=False, teacher=Teacher())
    conversion.convert_folder(str(tmp_path / "faces"), str(tmp_path / "plain"), num_workers=1,
                              progress=False)
    common = ["--mode=train", "--backbone=tiny", "--embedding_size=8", "--batch_size=4",
              "--train_steps=2", "--image_size=32", "--model_dir", str(tmp_path / "run")]
    p = params.build_params(parse_flags(common + [
        "--train_records", str(tmp_path / "train"), "--head=none", "--distill_weight=0.5",
        "--distill_loss=l2"]))
    assert p["teacher_dim"] == 3 and params.build_configs(p).head is None
    # --distill_center (the default): the mean of the stored vectors, recorded in the params.
    stored = _stored_teacher_vectors(tmp_path / "train")
    assert len(stored) == 8
    np.testing.assert_allclose(p["teacher_mean"], stored.mean(axis=0), rtol=1e-6)
    assert params.build_configs(p).distillation == distillation.DistillationConfig(
        0.5, "l2", 3, p["teacher_mean"])
    uncentred = params.build_params(parse_flags(common + [
        "--train_records", str(tmp_path / "train"), "--head=none", "--distill_weight=0.5",
        "--distill_loss=l2", "--nodistill_center"]))
    assert params.build_configs(uncentred).distillation == distillation.DistillationConfig(
        0.5, "l2", 3)
    with pytest.raises(params.ParamsError, match="--head=none trains on the teacher alone"):
        params.build_params(parse_flags(common + ["--train_records", str(tmp_path / "train"),
                                                  "--head=none"]))
    with pytest.raises(params.ParamsError, match="--teacher"):
        params.build_params(parse_flags(common + ["--train_records", str(tmp_path / "plain"),
                                                  "--distill_weight=1"]))

    # A short run: both losses in the summaries' graph and the last ones in runs.jsonl.
    p = params.build_params(parse_flags(common + [
        "--train_records", str(tmp_path / "train"), "--distill_weight=0.5", "--head=softmax",
        "--progress=false"]))
    estimator = builders.build_estimator(p)
    estimator.train(builders.train_input_fn(p), max_steps=2)
    with open(os.path.join(str(tmp_path / "run"), "runs.jsonl")) as f:
        (line,) = [json.loads(x) for x in f if x.strip()]
    assert line["event"] == "train_end" and line["global_step"] == 2
    assert line["loss/distillation"] > 0 and line["loss/head"] > 0
    assert line["loss/total"] >= line["loss/head"] + 0.5 * line["loss/distillation"] - 1e-4
