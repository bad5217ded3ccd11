"""Heads: registry, shapes, margin logits against numpy formulas, partitioned proxies, training."""

import math

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
                                 "cosface", "arcface"]
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
            assert [(v.name, v.shape.as_list(), v.dtype.base_dtype) for v in variables] == [
                ("head/proxies:0", [D, C], tf.float32)]
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
        tf.set_random_seed(0)
        kernel = tf.get_variable("kernel", [16, D],
                                 initializer=tf.random_normal_initializer(stddev=0.3))
        embeddings = tf.matmul(tf.constant(features, tf.float32), kernel)
        loss = tf.reduce_mean(head(embeddings, tf.constant(labels)).per_example_loss)
        train = tf.train.GradientDescentOptimizer(0.05).minimize(loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = sess.run(loss)
            for _ in range(15):
                sess.run(train)
            after = sess.run(loss)
    assert np.isfinite(after) and after < 0.5 * before, (before, after)
