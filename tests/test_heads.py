"""Heads: registry, shapes, margin logits against numpy formulas, partitioned proxies, training."""

import math
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model import circle_loss, heads

D, C, B = 8, 5, 20
PROXY_HEADS = ["circle", "circle_combined", "softmax", "cosface", "arcface"]


def _unit(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def _cross_entropy(logits, labels):
    peak = logits.max(axis=1, keepdims=True)
    lse = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
    return lse - logits[np.arange(len(labels)), labels]


def _onehot(labels, classes):
    return np.arange(classes)[None, :] == labels[:, None]


def ref_logits(name, cos, labels, margin, scale_or_gamma):
    """Margin logits from the papers' formulas (arccos for ArcFace, not the sqrt identity)."""
    target = _onehot(labels, cos.shape[1])
    if name == "softmax":
        return scale_or_gamma * cos
    if name == "cosface":
        return scale_or_gamma * (cos - margin * target)
    if name == "arcface":
        theta = np.arccos(np.clip(cos, -1.0, 1.0))
        # insightface: cos(theta + m) while theta + m <= pi, else cos(theta) - m sin(m)
        shifted = np.where(theta + margin < math.pi, np.cos(theta + margin),
                           cos - margin * math.sin(margin))
        return scale_or_gamma * np.where(target, shifted, cos)
    if name in ("circle", "circle_combined"):
        m, gamma = margin, scale_or_gamma
        return np.where(target, gamma * np.maximum(1 + m - cos, 0) * (cos - 1 + m),
                        gamma * np.maximum(cos + m, 0) * (cos - m))
    raise AssertionError(name)


def pk_batch(seed, dtype=np.float32):
    """P x K batch (C identities x B / C images) with class structure."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(C), B // C)
    centres = rng.normal(size=(C, D))
    emb = centres[labels] + rng.normal(size=(B, D))
    return emb.astype(dtype), labels


def run_head(head, emb, labels, proxies=None, extra=None):
    """Builds ``head`` in a fresh graph, optionally loading proxy values; returns numpy outputs."""
    with tf.Graph().as_default():
        out = head(tf.constant(emb), tf.constant(labels))
        fetch = {k: v for k, v in out._asdict().items() if v is not None}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            if proxies is not None:
                _load_proxies(sess, proxies)
            values = sess.run(fetch)
            values["proxies"] = _read_proxies(sess) if head.uses_proxies else None
            if extra is not None:
                values.update(extra(sess, out))
    return values


def _proxy_parts():
    return sorted((v for v in tf.global_variables() if v.name.startswith("head/proxies")),
                  key=lambda v: v.name)


def _load_proxies(sess, proxies):
    start = 0
    for part in _proxy_parts():
        width = part.shape.as_list()[1]
        part.load(proxies[:, start:start + width], sess)
        start += width
    assert start == proxies.shape[1]


def _read_proxies(sess):
    return np.hstack(sess.run(_proxy_parts()))


# ----------------------------------------------------------------------------- registry
def test_registry():
    assert list(heads.HEADS) == ["circle", "circle_pair", "circle_combined", "softmax",
                                 "cosface", "arcface", "adaface", "subcenter_arcface",
                                 "magface"]
    pk = {name for name, cls in heads.HEADS.items() if cls.needs_pk_batches}
    assert pk == {"circle_pair", "circle_combined"}


def test_unknown_head_lists_valid_names():
    with pytest.raises(ValueError) as info:
        heads.build_head("sphereface", C, D)
    for name in heads.HEADS:
        assert name in str(info.value)


@pytest.mark.parametrize("name,attr,value", [
    ("circle", "margin", 0.25), ("circle", "gamma", 256.0),
    ("circle_pair", "margin", 0.25), ("circle_pair", "gamma", 256.0),
    ("circle_combined", "gamma", 256.0),
    ("cosface", "margin", 0.35), ("cosface", "scale", 64.0),
    ("arcface", "margin", 0.5), ("arcface", "scale", 64.0),
])
def test_defaults(name, attr, value):
    head = heads.build_head(name, C, D)
    assert getattr(head, attr) == value
    assert head.config[attr] == value


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="circle", num_classes=1), "num_classes"),
    (dict(name="circle", num_classes=0), "num_classes"),
    (dict(name="circle", margin=1.5), "margin"),
    (dict(name="circle_pair", gamma=-1.0), "gamma"),
    (dict(name="arcface", margin=4.0), "margin"),
    (dict(name="softmax", scale=0.0), "scale"),
    (dict(name="circle", proxy_partitions=6), "proxy_partitions"),
    (dict(name="circle", embedding_size=0), "embedding_size"),
    (dict(name="circle_combined", class_weight=0.0, pair_weight=0.0), "both 0"),
    (dict(name="circle_combined", pair_weight=-1.0), "pair_weight"),
])
def test_bad_hyperparameters(kwargs, match):
    args = dict(num_classes=C, embedding_size=D)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        heads.build_head(args.pop("name"), args.pop("num_classes"), args.pop("embedding_size"),
                         **args)


def test_embedding_size_mismatch():
    with tf.Graph().as_default(), pytest.raises(ValueError, match="embedding_size=8"):
        heads.build_head("circle", C, D)(tf.zeros([4, 16]), tf.zeros([4], tf.int32))


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("name", list(heads.HEADS))
@pytest.mark.parametrize("dtype", [np.float32, tf.bfloat16.as_numpy_dtype, np.float16])
def test_output_shapes_and_variables(name, dtype):
    emb, labels = pk_batch(0, dtype)
    head = heads.build_head(name, C, D)
    with tf.Graph().as_default():
        out = head(tf.constant(emb), tf.constant(labels))
        assert isinstance(out, heads.HeadOutput)
        for field in ("per_example_loss", "positive_similarity", "negative_similarity"):
            tensor = getattr(out, field)
            assert tensor.dtype == tf.float32 and tensor.shape.as_list() == [B], field
        variables = tf.global_variables()
        if head.uses_proxies:
            for field in ("logits", "cosine"):
                tensor = getattr(out, field)
                assert tensor.dtype == tf.float32 and tensor.shape.as_list() == [B, C], field
            # (sub-center ArcFace: K proxies per class; AdaFace's moving statistics are not
            # trainable: test_margin_heads)
            name, shape = head.proxy_variable
            assert [(v.name, v.shape.as_list(), v.dtype.base_dtype)
                    for v in tf.trainable_variables()] == [(f"head/{name}:0", shape, tf.float32)]
            assert shape == [D, C * getattr(head, "subcenters", 1)]
        else:
            assert out.logits is None and out.cosine is None and variables == []
        # a second call (e.g. a flipped-image tower) shares the proxies
        head(tf.constant(emb), tf.constant(labels))
        assert len(tf.global_variables()) == len(variables)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = sess.run([t for t in out if t is not None])
    assert all(np.isfinite(v).all() for v in values)


@pytest.mark.parametrize("name", PROXY_HEADS)
def test_logits_and_loss_match_numpy(name):
    emb, labels = pk_batch(1)
    # Some embeddings point away from their proxy: ArcFace's theta + m > pi branch is exercised.
    proxies = np.random.default_rng(2).normal(size=(D, C))
    emb[:3] = -proxies[:, labels[:3]].T + 0.05 * emb[:3]
    head = heads.build_head(name, C, D)
    got = run_head(head, emb, labels, proxies)
    cos = _unit(emb.astype(np.float64), 1) @ _unit(proxies, 0)
    scale = head.gamma if name.startswith("circle") else head.scale
    want = ref_logits(name, cos, labels, head.margin, scale)
    if name == "arcface":
        theta = np.arccos(cos[np.arange(B), labels])
        assert (theta + head.margin > math.pi).any() and (theta + head.margin < math.pi).any()
    atol = 2e-6 * scale * 4
    np.testing.assert_allclose(got["cosine"], cos, atol=1e-6)
    np.testing.assert_allclose(got["logits"], want, rtol=1e-5, atol=atol)
    if name != "circle_combined":
        np.testing.assert_allclose(got["per_example_loss"], _cross_entropy(want, labels),
                                   rtol=1e-5, atol=atol)
    np.testing.assert_allclose(got["positive_similarity"], cos[np.arange(B), labels], atol=1e-6)
    other = ~_onehot(labels, C)
    np.testing.assert_allclose(got["negative_similarity"],
                               (cos * other).sum(axis=1) / (C - 1), atol=1e-6)


def test_softmax_head_is_scaled_cosine_cross_entropy():
    emb, labels = pk_batch(3)
    proxies = np.random.default_rng(4).normal(size=(D, C))
    got = run_head(heads.build_head("softmax", C, D, scale=30.0), emb, labels, proxies)
    cos = _unit(emb.astype(np.float64), 1) @ _unit(proxies, 0)
    np.testing.assert_allclose(got["per_example_loss"], _cross_entropy(30.0 * cos, labels),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("margin", [0.3, 0.5, 1.0])
def test_arcface_target_logit_decreases_with_the_angle(margin):
    """cos(theta + m) turns back up after theta = pi - m; insightface's fallback
    cos(theta) - m sin(m) keeps the target logit decreasing in theta over all of [0, pi]."""
    head = heads.build_head("arcface", C, D, margin=margin, scale=1.0)
    thetas = np.linspace(0.0, math.pi, 2001)
    with tf.Graph().as_default():
        cos = tf.constant(np.repeat(np.cos(thetas)[:, None], C, axis=1), tf.float32)
        with tf.Session() as sess:
            logits = sess.run(head.margin_logits(cos, tf.zeros([len(thetas)], tf.int32)))
    assert np.all(np.diff(logits[:, 0]) < 0)
    np.testing.assert_allclose(logits[:, 1:], np.tile(np.cos(thetas)[:, None], (1, C - 1)),
                               atol=1e-6)


def test_pair_head_similarities():
    emb, labels = pk_batch(5)
    labels[-1] = C  # a singleton: no positive
    got = run_head(heads.build_head("circle_pair", None, D), emb, labels)
    unit = _unit(emb.astype(np.float64), 1)
    for i in range(B):
        pos = [unit[i] @ unit[j] for j in range(B) if j != i and labels[j] == labels[i]]
        neg = [unit[i] @ unit[j] for j in range(B) if labels[j] != labels[i]]
        assert got["positive_similarity"][i] == pytest.approx(np.mean(pos) if pos else 0.0,
                                                              abs=1e-6)
        assert got["negative_similarity"][i] == pytest.approx(np.mean(neg), abs=1e-6)
    assert got["per_example_loss"][-1] == 0.0


@pytest.mark.parametrize("class_weight,pair_weight", [(1.0, 1.0), (0.3, 2.0), (1.0, 0.0)])
def test_combined_is_weighted_sum(class_weight, pair_weight):
    emb, labels = pk_batch(6)
    head = heads.build_head("circle_combined", C, D, margin=0.3, gamma=64.0,
                            class_weight=class_weight, pair_weight=pair_weight)

    def parts(sess, out):
        del out
        emb_t = tf.constant(emb)
        return dict(sess.run({
            "class": circle_loss.class_level_circle_loss(
                emb_t, tf.constant(labels), _proxy_parts(), 0.3, 64.0),
            "pair": circle_loss.pair_level_circle_loss(emb_t, tf.constant(labels), 0.3, 64.0)}))

    got = run_head(head, emb, labels, extra=parts)
    assert (got["pair"] > 0).all()
    np.testing.assert_allclose(got["per_example_loss"],
                               class_weight * got["class"] + pair_weight * got["pair"],
                               rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", PROXY_HEADS)
def test_partitioned_proxies(name):
    emb, labels = pk_batch(7)
    proxies = np.random.default_rng(8).normal(size=(D, C))
    whole = run_head(heads.build_head(name, C, D), emb, labels, proxies)
    split_head = heads.build_head(name, C, D, proxy_partitions=3)
    with tf.Graph().as_default():
        split_head(tf.constant(emb), tf.constant(labels))
        shapes = [v.shape.as_list() for v in _proxy_parts()]
    assert shapes == [[D, 2], [D, 2], [D, 1]]
    split = run_head(split_head, emb, labels, proxies)
    np.testing.assert_array_equal(split["proxies"], proxies.astype(np.float32))
    for key in ("per_example_loss", "logits", "positive_similarity", "negative_similarity"):
        np.testing.assert_allclose(split[key], whole[key], rtol=1e-6, atol=1e-5)


def test_proxy_initializer_stddev():
    head = heads.build_head("circle", 50, 64, proxy_initializer_stddev=0.5)
    got = run_head(head, np.ones((2, 64), np.float32), np.array([0, 1]))
    assert got["proxies"].std() == pytest.approx(0.5, rel=0.1)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", list(heads.HEADS))
def test_sgd_lowers_the_loss(name):
    """A linear embedding of noisy class centres, trained with plain SGD, default margins."""
    rng = np.random.default_rng(9)
    labels = np.repeat(np.arange(C), B // C)
    features = (rng.normal(size=(C, 16))[labels] + 0.5 * rng.normal(size=(B, 16)))
    head = heads.build_head(name, C, D)
    with tf.Graph().as_default():
        embeddings = linear_embeddings(features)
        loss = tf.reduce_mean(head(embeddings, tf.constant(labels)).per_example_loss)
        train = tf.train.GradientDescentOptimizer(0.05).minimize(loss)
        before, after = loss_before_and_after(train, loss, steps=15)
    assert np.isfinite(after) and after < 0.5 * before, (before, after)


def linear_embeddings(features):
    """A trainable linear map of ``features`` ([N, 16]) to D dimensions, in the current graph
    (seeded)."""
    tf.set_random_seed(0)
    kernel = tf.get_variable("kernel", [16, D],
                             initializer=tf.random_normal_initializer(stddev=0.3))
    return tf.matmul(tf.constant(features, tf.float32), kernel)


def loss_before_and_after(train, loss, steps):
    """``(loss before, loss after)`` ``steps`` runs of ``train``, in a new session."""
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        before = sess.run(loss)
        for _ in range(steps):
            sess.run(train)
        return before, sess.run(loss)


# ----------------------------------------------------------------------------- Partial FC
PFC_C, PFC_B = 40, 12


def pfc_batch(seed, classes=4):
    """B examples of a few classes scattered over [0, PFC_C), proxies [C, D] (class-major)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(PFC_C, size=classes, replace=False)
    labels = ids[np.arange(PFC_B) % classes].astype(np.int32)
    emb = rng.normal(size=(PFC_B, D)).astype(np.float32)
    return emb, labels, rng.normal(size=(PFC_C, D))


def _class_parts():
    """The class-major proxy variable or its partitions (not the optimizer's slots)."""
    return sorted((v for v in tf.global_variables()
                   if re.fullmatch(r"head/class_proxies(/part_\d+)?:0", v.name)),
                  key=lambda v: v.name)


def _load_class_proxies(sess, proxies):
    start = 0
    for part in _class_parts():
        rows = part.shape.as_list()[0]
        part.load(proxies[start:start + rows], sess)
        start += rows
    assert start == proxies.shape[0]


def run_pfc_head(head, emb, labels, proxies, sample=True, runs=1):
    """Outputs of ``runs`` steps (each a new sample) with the class-major proxies loaded."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        out = head(tf.constant(emb), tf.constant(labels), sample=sample)
        fetch = {k: v for k, v in out._asdict().items() if v is not None}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            _load_class_proxies(sess, proxies)
            return [sess.run(fetch) for _ in range(runs)]


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5, True, "0.5", None])
def test_partial_fc_rate_must_be_in_0_1(rate):
    with pytest.raises(ValueError, match=r"partial_fc_rate must be in \(0, 1\]"):
        heads.build_head("circle", C, D, partial_fc_rate=rate)


def test_pair_head_refuses_partial_fc():
    with pytest.raises(ValueError, match="no class proxies to sample"):
        heads.build_head("circle_pair", None, D, partial_fc_rate=0.5)
    assert heads.build_head("circle_pair", None, D, partial_fc_rate=1.0).num_sample is None


@pytest.mark.parametrize("classes,rate,expected", [
    (1000000, 0.1, 100000), (1000000, 1.0, 1000000), (10, 0.3, 3), (10, 0.25, 3), (5, 0.01, 2),
    (5, 0.9, 5), (85742, 0.2, 17149)])
def test_partial_fc_num_sample(classes, rate, expected):
    assert heads.partial_fc_num_sample(classes, rate) == expected
    if rate < 1:
        head = heads.build_head("softmax", classes, D, partial_fc_rate=rate)
        assert head.num_sample == expected and head.config["num_sample"] == expected


@pytest.mark.parametrize("name", PROXY_HEADS)
def test_rate_one_is_the_full_head_bit_for_bit(name):
    emb, labels = pk_batch(11)
    proxies = np.random.default_rng(12).normal(size=(D, C))
    head = heads.build_head(name, C, D, partial_fc_rate=1.0)
    assert not head.partial_fc and head.num_sample == C and "partial_fc_rate" not in head.config
    got = run_head(head, emb, labels, proxies)
    want = run_head(heads.build_head(name, C, D), emb, labels, proxies)
    assert "classes" not in got and set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # ... and the numpy formulas (as test_logits_and_loss_match_numpy)
    cos = _unit(emb.astype(np.float64), 1) @ _unit(proxies, 0)
    scale = head.gamma if name.startswith("circle") else head.scale
    logits = ref_logits(name, cos, labels, head.margin, scale)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=8e-6 * scale)
    if name != "circle_combined":
        np.testing.assert_allclose(got["per_example_loss"], _cross_entropy(logits, labels),
                                   rtol=1e-5, atol=8e-6 * scale)


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("name", PROXY_HEADS)
def test_sampling_every_class_equals_the_full_head(name, partitions):
    """rate < 1 whose sample is every class (ceil(0.9 * 5) = 5): the sampled code path, the
    class-major proxies, and the full head's values."""
    emb, labels = pk_batch(13)
    proxies = np.random.default_rng(14).normal(size=(D, C))
    head = heads.build_head(name, C, D, partial_fc_rate=0.9, proxy_partitions=partitions)
    assert head.partial_fc and head.num_sample == C
    full = run_head(heads.build_head(name, C, D), emb, labels, proxies)
    for sample in (True, False):
        got = run_pfc_head(head, emb, labels, proxies.T, sample=sample)[0]
        if sample:
            np.testing.assert_array_equal(got["classes"], np.arange(C))
        else:
            assert "classes" not in got and "sampled_rows" not in got
        for key in ("per_example_loss", "logits", "cosine", "positive_similarity",
                    "negative_similarity"):
            np.testing.assert_allclose(got[key], full[key], rtol=1e-6, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("name", PROXY_HEADS)
def test_partial_fc_loss_is_the_full_formula_on_the_sampled_rows(name, partitions):
    emb, labels, proxies = pfc_batch(15)
    head = heads.build_head(name, PFC_C, D, partial_fc_rate=0.35, proxy_partitions=partitions,
                            margin=0.3 if name.startswith("circle") else None, gamma=64.0)
    assert head.num_sample == 14
    with tf.Graph().as_default():
        head(tf.constant(emb), tf.constant(labels))
        assert [v.shape.as_list() for v in _class_parts()] == (
            [[PFC_C, D]] if partitions == 1 else [[14, D], [13, D], [13, D]])
        assert not [v for v in tf.global_variables() if v.name.startswith("head/proxies")]
    runs = run_pfc_head(head, emb, labels, proxies, runs=4)
    samples = set()
    for got in runs:
        classes = got["classes"]
        samples.add(tuple(classes))
        # exactly num_sample distinct classes, increasing, every class of the batch among them
        assert classes.shape == (14,) and classes.dtype == np.int32
        assert (np.diff(classes) > 0).all() and classes.min() >= 0 and classes.max() < PFC_C
        assert set(labels) <= set(classes)
        local = np.searchsorted(classes, labels)
        np.testing.assert_array_equal(classes[local], labels)
        cos = _unit(emb.astype(np.float64), 1) @ _unit(proxies[classes], 1).T
        scale = head.gamma if name.startswith("circle") else head.scale
        logits = ref_logits(name, cos, local, head.margin, scale)
        atol = 8e-6 * scale
        np.testing.assert_allclose(got["cosine"], cos, atol=1e-6)
        # the rows the step decays are the sampled classes' proxies, in the same order
        np.testing.assert_allclose(got["sampled_rows"], proxies[classes], rtol=1e-6)
        np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=atol)
        loss = _cross_entropy(logits, local)
        if name == "circle_combined":
            with tf.Graph().as_default(), tf.Session() as sess:
                pair = sess.run(circle_loss.pair_level_circle_loss(
                    tf.constant(emb), tf.constant(labels), head.margin, head.gamma))
            loss = loss + pair
        np.testing.assert_allclose(got["per_example_loss"], loss, rtol=1e-5, atol=atol)
        np.testing.assert_allclose(got["positive_similarity"], cos[np.arange(PFC_B), local],
                                   atol=1e-6)
        other = ~_onehot(local, len(classes))
        np.testing.assert_allclose(got["negative_similarity"],
                                   (cos * other).sum(axis=1) / (len(classes) - 1), atol=1e-6)
    assert len(samples) > 1  # a new sample every step


def test_partial_fc_negatives_are_uniform():
    """Each class outside the batch is drawn with probability (S - P) / (C - P)."""
    num_classes, rate, draws = 30, 0.2, 3000
    head = heads.build_head("softmax", num_classes, D, partial_fc_rate=rate)
    labels = np.array([2, 2, 7, 29], np.int32)
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        classes, local = head.sample_classes(tf.constant(labels))
        with tf.Session() as sess:
            counts = np.zeros(num_classes)
            for _ in range(draws):
                got, got_local = sess.run([classes, local])
                counts[got] += 1
    np.testing.assert_array_equal(got[got_local], labels)
    assert (counts[[2, 7, 29]] == draws).all()
    others = np.delete(counts, [2, 7, 29]) / draws
    expected = (head.num_sample - 3) / (num_classes - 3)  # 3/27
    binomial_sd = math.sqrt(expected * (1 - expected) / draws)
    assert np.abs(others - expected).max() < 5 * binomial_sd, others
    assert counts.sum() == draws * head.num_sample


@pytest.mark.parametrize("name", ["circle", "softmax"])
@pytest.mark.parametrize("partitions", [1, 3])
def test_partial_fc_gradient_touches_only_the_sampled_rows(partitions, name):
    emb, labels, proxies = pfc_batch(16)
    head = heads.build_head(name, PFC_C, D, partial_fc_rate=0.35, proxy_partitions=partitions)
    with tf.Graph().as_default():
        out = head(tf.constant(emb), tf.constant(labels))
        loss = tf.reduce_mean(out.per_example_loss)
        parts = _class_parts()
        gradients = tf.gradients(loss, parts)
        assert all(isinstance(g, tf.IndexedSlices) for g in gradients)
        train = tf.train.MomentumOptimizer(0.5, 0.9).apply_gradients(zip(gradients, parts))
        slots = [v for p in parts for v in tf.global_variables()
                 if v.op.name == p.op.name + "/Momentum"]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            _load_class_proxies(sess, proxies)
            # the sample, the gradient rows and the update of one and the same step
            classes, indices, _ = sess.run([out.classes, [g.indices for g in gradients], train])
            after, momentum = np.vstack(sess.run(parts)), np.vstack(sess.run(slots))
    offsets = np.cumsum([0] + [p.shape.as_list()[0] for p in parts])[:-1]
    touched = np.concatenate([offset + i for offset, i in zip(offsets, indices)])
    np.testing.assert_array_equal(np.sort(touched), classes)
    changed = np.flatnonzero(np.any(after != proxies.astype(np.float32), axis=1))
    moving = np.flatnonzero(np.any(momentum != 0, axis=1))
    # Circle: a negative below -m has a zero weight alpha_n, so zero gradient (and a tiny one
    # may not move a float32 weight); softmax gives every sampled row a gradient.
    assert set(labels) <= set(changed) <= set(moving) <= set(classes)
    if name == "softmax":
        np.testing.assert_array_equal(moving, classes)


def test_partial_fc_batch_must_fit_in_the_sample():
    head = heads.build_head("circle", PFC_C, D, partial_fc_rate=0.25)  # 10 classes per step
    with tf.Graph().as_default(), pytest.raises(ValueError, match="keeps 10 of 40 classes"):
        head(tf.zeros([PFC_B, D]), tf.zeros([PFC_B], tf.int32))
    # a batch of unknown size: checked when it runs
    with tf.Graph().as_default():
        labels = tf.placeholder(tf.int32, [None])
        out = head(tf.ones([tf.shape(labels)[0], D]), labels)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(out.per_example_loss, {labels: [0, 0] + list(range(5, 13))})  # 9 classes
            with pytest.raises(tf.errors.InvalidArgumentError, match="more classes in the batch"):
                sess.run(out.per_example_loss, {labels: list(range(11))})


@pytest.mark.parametrize("name", ["circle", "circle_combined", "arcface"])
def test_partial_fc_sgd_lowers_the_full_loss(name):
    """Trained on samples, evaluated on every class (sample=False)."""
    rng = np.random.default_rng(17)
    num_classes = 24
    labels = np.repeat(rng.choice(num_classes, 6, replace=False), 2).astype(np.int32)
    features = rng.normal(size=(num_classes, 16))[labels] + 0.5 * rng.normal(size=(12, 16))
    head = heads.build_head(name, num_classes, D, partial_fc_rate=0.5)
    with tf.Graph().as_default():
        embeddings = linear_embeddings(features)
        loss = tf.reduce_mean(head(embeddings, tf.constant(labels)).per_example_loss)
        full = tf.reduce_mean(
            head(embeddings, tf.constant(labels), sample=False).per_example_loss)
        train = tf.train.MomentumOptimizer(0.02, 0.9).minimize(loss)
        before, after = loss_before_and_after(train, full, steps=20)
    assert np.isfinite(after) and after < 0.5 * before, (before, after)
