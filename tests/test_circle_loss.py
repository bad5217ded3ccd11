"""Circle loss against an independent numpy transcription of the paper (arXiv 2002.10857).

The reference below is written from eq. (4)-(6) with explicit loops and float64:
``L = log(1 + sum_j exp(gamma a_n^j (s_n^j - Δn)) * sum_i exp(-gamma a_p^i (s_p^i - Δp)))``,
a_p = [1 + m - s_p]_+, a_n = [s_n + m]_+, Δp = 1 - m, Δn = m. For the class level the positive is
the example's own proxy and the negatives are the other proxies (the implementation instead uses
cross-entropy over circle logits, so the two are genuinely different computations).
"""

import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model import circle_loss

MARGIN_GAMMA = [(0.25, 1.0), (0.25, 32.0), (0.25, 256.0), (0.4, 64.0), (0.1, 512.0)]


# ----------------------------------------------------------------------------- numpy reference
def _unit(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def _logsumexp(values):
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def _softplus(x):
    # log(1 + e^x) without overflow for the large x that gamma = 512 produces
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _alpha_p(s, m):
    return max(0.0, 1.0 + m - s)


def _alpha_n(s, m):
    return max(0.0, s + m)


def _circle(positive_sims, negative_sims, m, gamma, alphas_p=None, alphas_n=None):
    """Eq. (4) in log space. ``alphas_*`` given: the weights are held at those values."""
    if alphas_p is None:
        alphas_p = [_alpha_p(s, m) for s in positive_sims]
    if alphas_n is None:
        alphas_n = [_alpha_n(s, m) for s in negative_sims]
    neg = [gamma * a * (s - m) for s, a in zip(negative_sims, alphas_n)]
    pos = [-gamma * a * (s - (1.0 - m)) for s, a in zip(positive_sims, alphas_p)]
    return _softplus(_logsumexp(neg) + _logsumexp(pos))


def ref_class_loss(emb, labels, proxies, m, gamma, frozen=None):
    """Per-example class-level loss; ``frozen`` = (embeddings, proxies) to take the weights from."""
    s = _unit(emb, 1) @ _unit(proxies, 0)
    s_w = s if frozen is None else _unit(frozen[0], 1) @ _unit(frozen[1], 0)
    out = []
    for b, y in enumerate(labels):
        others = [j for j in range(s.shape[1]) if j != y]
        out.append(_circle([s[b, y]], [s[b, j] for j in others], m, gamma,
                           [_alpha_p(s_w[b, y], m)], [_alpha_n(s_w[b, j], m) for j in others]))
    return np.array(out)


def ref_pair_loss(emb, labels, m, gamma, frozen=None):
    """Per-anchor pair-level loss; 0 without a positive or a negative."""
    s = _unit(emb, 1) @ _unit(emb, 1).T
    s_w = s if frozen is None else _unit(frozen, 1) @ _unit(frozen, 1).T
    out = []
    for i, y in enumerate(labels):
        pos = [j for j in range(len(labels)) if j != i and labels[j] == y]
        neg = [j for j in range(len(labels)) if labels[j] != y]
        if not pos or not neg:
            out.append(0.0)
            continue
        out.append(_circle([s[i, j] for j in pos], [s[i, j] for j in neg], m, gamma,
                           [_alpha_p(s_w[i, j], m) for j in pos],
                           [_alpha_n(s_w[i, j], m) for j in neg]))
    return np.array(out)


def numerical_gradient(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[idx] = h
        grad[idx] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


# ----------------------------------------------------------------------------- fixtures
def class_case(seed, batch=7, dim=6, classes=5):
    """Embeddings pulled towards their proxies by varied amounts: the weights a_p, a_n take a
    wide range of values and several a_n are exactly 0 (s_n < -m)."""
    rng = np.random.default_rng(seed)
    proxies = rng.normal(size=(dim, classes))
    labels = np.arange(batch) % classes
    rng.shuffle(labels)
    pull = rng.uniform(0.0, 4.0, size=(batch, 1))
    emb = pull * _unit(proxies, 0)[:, labels].T + rng.normal(size=(batch, dim))
    emb *= rng.uniform(0.1, 10.0, size=(batch, 1))  # the loss must not care about norms
    return emb, labels, proxies


def pair_case(seed, identities=3, per_identity=3, dim=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim))
    labels = np.repeat(np.arange(identities), per_identity)
    emb = rng.uniform(0.0, 2.0, size=(len(labels), 1)) * centres[labels]
    emb += rng.normal(size=emb.shape)
    return emb, labels


def run(fetches, feed=None):
    with tf.Session() as sess:
        return sess.run(fetches, feed)


def value_atol(gamma):
    # A cosine carries ~1e-7 absolute float32 error; a logit multiplies it by up to
    # gamma * (2 + m) * 2, so the loss inherits ~gamma * 1e-6 absolute error.
    return 2e-6 * gamma


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("margin,gamma", MARGIN_GAMMA)
@pytest.mark.parametrize("seed", [0, 1])
def test_class_level_matches_reference(margin, gamma, seed):
    emb, labels, proxies = class_case(seed)
    cos = _unit(emb, 1) @ _unit(proxies, 0)
    s_n = cos[np.arange(cos.shape[1])[None, :] != labels[:, None]]
    assert (s_n < -margin).any() and (s_n > -margin).any(), "case must exercise a_n = 0 and > 0"
    with tf.Graph().as_default():
        loss = circle_loss.class_level_circle_loss(
            tf.constant(emb, tf.float32), tf.constant(labels), tf.constant(proxies, tf.float32),
            margin=margin, gamma=gamma)
        assert loss.dtype == tf.float32 and loss.shape.as_list() == [len(labels)]
        got = run(loss)
    want = ref_class_loss(emb, labels, proxies, margin, gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=value_atol(gamma))


@pytest.mark.parametrize("margin,gamma", MARGIN_GAMMA)
@pytest.mark.parametrize("seed", [0, 1])
def test_pair_level_matches_reference(margin, gamma, seed):
    emb, labels = pair_case(seed)
    with tf.Graph().as_default():
        loss = circle_loss.pair_level_circle_loss(
            tf.constant(emb, tf.float32), tf.constant(labels), margin=margin, gamma=gamma)
        assert loss.dtype == tf.float32 and loss.shape.as_list() == [len(labels)]
        got = run(loss)
    want = ref_pair_loss(emb, labels, margin, gamma)
    assert (want > 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=value_atol(gamma))


@pytest.mark.parametrize("gamma", [1.0, 8.0])
def test_reference_agrees_with_the_literal_equation(gamma):
    """Guards the log-space reference itself: at small gamma eq. (4) can be evaluated as written."""
    emb, labels = pair_case(3)
    m = 0.25
    s = _unit(emb, 1) @ _unit(emb, 1).T
    for i, y in enumerate(labels):
        pos = [s[i, j] for j in range(len(labels)) if j != i and labels[j] == y]
        neg = [s[i, j] for j in range(len(labels)) if labels[j] != y]
        literal = np.log(1.0 + sum(np.exp(gamma * _alpha_n(x, m) * (x - m)) for x in neg)
                         * sum(np.exp(-gamma * _alpha_p(x, m) * (x - 1 + m)) for x in pos))
        np.testing.assert_allclose(ref_pair_loss(emb, labels, m, gamma)[i], literal, rtol=1e-12)


def test_class_level_is_cross_entropy_over_circle_logits():
    emb, labels, proxies = class_case(4)
    m, gamma = 0.25, 64.0
    s = _unit(emb, 1) @ _unit(proxies, 0)
    want_logits = np.where(np.arange(s.shape[1])[None, :] == labels[:, None],
                           gamma * np.maximum(1 + m - s, 0) * (s - (1 - m)),
                           gamma * np.maximum(s + m, 0) * (s - m))
    with tf.Graph().as_default():
        cos = circle_loss.cosine_similarity(tf.constant(emb, tf.float32),
                                            tf.constant(proxies, tf.float32))
        logits = circle_loss.circle_logits(cos, tf.constant(labels), m, gamma)
        got_cos, got_logits = run([cos, logits])
    np.testing.assert_allclose(got_cos, s, atol=1e-6)
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=value_atol(gamma))


@pytest.mark.parametrize("labels_dtype", [np.int32, np.int64])
def test_circle_logits_gradient_is_the_weight_at_each_entry(labels_dtype):
    """circle_logits writes its gradient out (one pass over [B, C]): d logit / d s is gamma a_p
    at the label and gamma a_n elsewhere (weights constant), 0 where a_n clips (s < -m), and
    an upstream gradient scales it entry by entry."""
    m, gamma = 0.25, 32.0
    rng = np.random.default_rng(11)
    s = rng.uniform(-1.0, 1.0, size=(6, 9))
    s[0, :3] = [-0.9, -0.5, -0.3]  # below -m: no gradient
    labels = np.array([0, 8, 3, 3, 5, 0], labels_dtype)
    upstream = rng.normal(size=s.shape)
    is_label = np.arange(s.shape[1])[None, :] == labels[:, None]
    want = upstream * np.where(is_label, gamma * np.maximum(1 + m - s, 0),
                               gamma * np.maximum(s + m, 0))
    assert not want[0, 1:3].any()
    with tf.Graph().as_default():
        cos = tf.constant(s, tf.float32)
        logits = circle_loss.circle_logits(cos, tf.constant(labels), m, gamma)
        (got,) = run(tf.gradients(logits, [cos], grad_ys=tf.constant(upstream, tf.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _ref_logit_gradients(emb, labels, proxies, m, gamma, upstream):
    """numpy: the gradients of sum(upstream * circle logits) with respect to the raw embeddings
    and the raw [D, C] proxies, the weights a_p, a_n held constant (eq. 5, 6): d logit / d s is
    gamma a, then through the matmul and each L2 normalisation (dx = (g - x̂ (g·x̂)) / |x|)."""
    e_norm = np.linalg.norm(emb, axis=1, keepdims=True)
    p_norm = np.linalg.norm(proxies, axis=0, keepdims=True)
    e_hat, p_hat = emb / e_norm, proxies / p_norm
    s = e_hat @ p_hat
    is_label = np.arange(s.shape[1])[None, :] == labels[:, None]
    d_s = upstream * gamma * np.where(is_label, np.maximum(1 + m - s, 0), np.maximum(s + m, 0))
    g_e, g_p = d_s @ p_hat.T, e_hat.T @ d_s
    d_e = (g_e - e_hat * (g_e * e_hat).sum(axis=1, keepdims=True)) / e_norm
    d_p = (g_p - p_hat * (g_p * p_hat).sum(axis=0, keepdims=True)) / p_norm
    return d_e, d_p


@pytest.mark.parametrize("class_major", [False, True])
@pytest.mark.parametrize("margin,gamma", MARGIN_GAMMA)
def test_shifted_circle_logits_are_the_paper_logits_plus_gamma_m2(margin, gamma, class_major):
    """shifted_circle_logits (the algebra gamma r (s - m) = gamma (r - m)² - gamma m², the
    sqrt(gamma) scale on the embeddings, the in-place label entries) against the paper's
    logits: the same plus gamma m², the label's cosine, and the gradients (weights constant)
    for a random upstream gradient and for ones, the default of tf.gradients (grappler then
    drops the multiply by dy: the in-place update must still not touch the forward's input)."""
    emb, labels, proxies = class_case(21, batch=9, dim=6, classes=7)
    s = _unit(emb, 1) @ _unit(proxies, 0)
    is_label = np.arange(s.shape[1])[None, :] == labels[:, None]
    assert (s[~is_label] < -margin).any()
    want = np.where(is_label, gamma * np.maximum(1 + margin - s, 0) * (s - (1 - margin)),
                    gamma * np.maximum(s + margin, 0) * (s - margin))
    upstream = np.random.default_rng(22).normal(size=s.shape)
    with tf.Graph().as_default():
        e_t = tf.constant(emb, tf.float32)
        p_t = tf.constant(proxies.T if class_major else proxies, tf.float32)
        logits, positive, shift = circle_loss.shifted_circle_logits(
            e_t, tf.constant(labels), p_t, margin, gamma, class_major=class_major)
        random_up = tf.gradients(logits, [e_t, p_t], grad_ys=tf.constant(upstream, tf.float32))
        ones_up = tf.gradients(logits, [e_t, p_t])
        with tf.Session() as sess:
            first = sess.run([logits, positive, shift, random_up, ones_up])
            again = sess.run([logits, ones_up, random_up])
    got, got_positive, got_shift, (d_e, d_p), (ones_e, ones_p) = first
    assert got_shift == pytest.approx(gamma * margin ** 2, rel=1e-6)
    np.testing.assert_allclose(got - got_shift, want, rtol=1e-5, atol=value_atol(gamma))
    np.testing.assert_allclose(got_positive, s[is_label], atol=1e-6)
    for up, (got_e, got_p) in ((upstream, (d_e, d_p)), (np.ones_like(s), (ones_e, ones_p))):
        want_e, want_p = _ref_logit_gradients(emb, labels, proxies, margin, gamma, up)
        for g, w in ((got_e, want_e), (got_p.T if class_major else got_p, want_p)):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max())
    # A second run gives the same: nothing the graph keeps was written into.
    np.testing.assert_array_equal(again[0], got)
    np.testing.assert_array_equal(again[1][0], ones_e)
    np.testing.assert_array_equal(again[2][1], d_p)


@pytest.mark.parametrize("margin,gamma", [(0.25, 256.0), (0.4, 32.0)])
def test_circle_logits_gradient_for_ones_upstream(margin, gamma):
    """circle_logits on a cosine tensor, d sum(logits) / d s: dy is all ones, so grappler makes
    the product dy * weight an alias of the weight, which the in-place label update then
    writes into: the forward value and the gradient must both still be right."""
    m = margin
    rng = np.random.default_rng(23)
    s = rng.uniform(-1.0, 1.0, size=(6, 40))
    labels = np.array([0, 39, 3, 3, 17, 0])
    is_label = np.arange(s.shape[1])[None, :] == labels[:, None]
    want_value = np.where(is_label, gamma * np.maximum(1 + m - s, 0) * (s - (1 - m)),
                          gamma * np.maximum(s + m, 0) * (s - m))
    want_grad = gamma * np.where(is_label, np.maximum(1 + m - s, 0), np.maximum(s + m, 0))
    with tf.Graph().as_default():
        cos = tf.placeholder(tf.float32, s.shape)
        logits = circle_loss.circle_logits(cos, tf.constant(labels), m, gamma)
        (grad,) = tf.gradients(logits, [cos])
        for _ in range(2):
            value, got = run([logits, grad], {cos: s})
            np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=value_atol(gamma))
            np.testing.assert_allclose(got, want_grad, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("margin,gamma", [(0.25, 4.0), (0.25, 256.0), (0.4, 32.0)])
def test_class_level_gradient_holds_weights_constant(margin, gamma):
    emb, labels, proxies = class_case(5, batch=5, dim=4, classes=4)
    weights = np.random.default_rng(6).uniform(0.5, 1.5, size=len(labels))

    def objective(e, p):
        return weights @ ref_class_loss(e, labels, p, margin, gamma, frozen=(emb, proxies))

    want_e = numerical_gradient(lambda e: objective(e, proxies), emb)
    want_p = numerical_gradient(lambda p: objective(emb, p), proxies)
    with tf.Graph().as_default():
        e_t, p_t = tf.constant(emb, tf.float32), tf.constant(proxies, tf.float32)
        loss = circle_loss.class_level_circle_loss(e_t, tf.constant(labels), p_t, margin, gamma)
        got_e, got_p = run(tf.gradients(tf.reduce_sum(loss * weights), [e_t, p_t]))
    for got, want in ((got_e, want_e), (got_p, want_p)):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4 * np.abs(want).max())

    # The same finite differences with live weights disagree: the test can see a missing
    # stop_gradient.
    live = numerical_gradient(
        lambda e: weights @ ref_class_loss(e, labels, proxies, margin, gamma), emb)
    assert np.abs(live - want_e).max() > 1e-2 * np.abs(want_e).max()


@pytest.mark.parametrize("margin,gamma", [(0.25, 4.0), (0.25, 256.0), (0.4, 32.0)])
def test_pair_level_gradient_holds_weights_constant(margin, gamma):
    emb, labels = pair_case(7, identities=3, per_identity=2, dim=4)
    labels = np.append(labels, 9)  # an anchor without positives: it still acts as a negative
    emb = np.vstack([emb, np.random.default_rng(8).normal(size=(1, emb.shape[1]))])
    weights = np.random.default_rng(9).uniform(0.5, 1.5, size=len(labels))
    want = numerical_gradient(
        lambda e: weights @ ref_pair_loss(e, labels, margin, gamma, frozen=emb), emb)
    with tf.Graph().as_default():
        e_t = tf.constant(emb, tf.float32)
        loss = circle_loss.pair_level_circle_loss(e_t, tf.constant(labels), margin, gamma)
        (got,) = run(tf.gradients(tf.reduce_sum(loss * weights), [e_t]))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4 * np.abs(want).max())
    assert np.abs(got[-1]).max() > 0


# ----------------------------------------------------------------------------- decision boundary
def _embedding_with_cosines(s_p, s_n):
    """A 3-d unit vector with cosine s_p to e1 and s_n to e2."""
    rest = 1.0 - s_p ** 2 - s_n ** 2
    assert rest >= 0
    return np.array([s_p, s_n, math.sqrt(rest)])


@pytest.mark.parametrize("margin", [0.25, 0.4])
@pytest.mark.parametrize("gamma", [32.0, 256.0])
def test_class_level_decision_boundary_is_the_circle(margin, gamma):
    """With a_n, a_p > 0, a_n (s_n - m) = s_n^2 - m^2 and a_p (s_p - 1 + m) = m^2 - (s_p - 1)^2,
    so the two logits of a 2-class problem tie exactly on s_n^2 + (s_p - 1)^2 = 2 m^2 (the paper's
    circular boundary): loss log 2 on it, less inside, more outside, whatever gamma."""
    radius = math.sqrt(2.0) * margin
    points, expected = [], []
    for phi in np.deg2rad([-30.0, 0.0, 30.0, 60.0]):
        for factor, sign in ((1.0, 0), (0.8, -1), (1.2, 1)):
            s_p = 1.0 - factor * radius * math.cos(phi)
            s_n = factor * radius * math.sin(phi)
            assert s_n > -margin
            points.append(_embedding_with_cosines(s_p, s_n))
            expected.append(sign)
    proxies = np.eye(3)[:, :2] * 3.0
    labels = np.zeros(len(points), np.int64)
    with tf.Graph().as_default():
        loss = run(circle_loss.class_level_circle_loss(
            tf.constant(np.array(points), tf.float32), tf.constant(labels),
            tf.constant(proxies, tf.float32), margin, gamma))
    for value, sign in zip(loss, expected):
        if sign == 0:
            assert value == pytest.approx(math.log(2.0), abs=value_atol(gamma))
        else:
            assert np.sign(value - math.log(2.0)) == sign


@pytest.mark.parametrize("gamma", [4.0, 256.0])
def test_class_level_separated_optimum(gamma):
    """s_p = 1 and every s_n <= -m: a_n = 0 silences the negatives (logit 0) and a_p = m (not 0:
    a cosine never reaches O_p = 1 + m), so the loss is log(1 + (C - 1) exp(-gamma m^2)); s_p = 1 is
    the top of the cosine, so no gradient reaches the embedding or any proxy."""
    m, classes = 0.25, 4
    proxies = np.zeros((classes + 1, classes))
    proxies[0, 0] = 1.0
    for j in range(1, classes):  # cosine -0.6 with e1, the target direction
        proxies[0, j], proxies[j, j] = -0.6, 0.8
    proxies *= np.array([0.5, 2.0, 3.0, 0.7])
    emb = np.zeros((2, classes + 1))
    emb[:, 0] = [3.0, 0.2]
    with tf.Graph().as_default():
        e_t, p_t = tf.constant(emb, tf.float32), tf.constant(proxies, tf.float32)
        loss = circle_loss.class_level_circle_loss(e_t, tf.constant([0, 0]), p_t, m, gamma)
        value, grads = run([loss, tf.gradients(tf.reduce_sum(loss), [e_t, p_t])])
    np.testing.assert_allclose(value, math.log1p((classes - 1) * math.exp(-gamma * m * m)),
                               rtol=1e-5, atol=1e-6)
    for grad in grads:
        np.testing.assert_allclose(grad, 0.0, atol=1e-5)


def test_negatives_beyond_minus_margin_get_no_gradient():
    """Unlike softmax, a proxy that is a negative with s_n <= -m for all the batch is not pushed."""
    m = 0.25
    emb, labels, proxies = class_case(10, batch=6, dim=5, classes=4)
    # an extra dimension that every embedding leans into, and a proxy pointing the other way
    emb = np.hstack([emb, np.linalg.norm(emb, axis=1, keepdims=True)])
    far = np.zeros(emb.shape[1])
    far[-1] = -1.0
    proxies = np.hstack([np.vstack([proxies, np.zeros((1, 4))]), far[:, None]])
    s_far = _unit(emb, 1) @ far
    assert (s_far < -m).all()
    with tf.Graph().as_default():
        p_t = tf.constant(proxies, tf.float32)
        loss = circle_loss.class_level_circle_loss(
            tf.constant(emb, tf.float32), tf.constant(labels), p_t, m, 256.0)
        (grad,) = run(tf.gradients(tf.reduce_sum(loss), [p_t]))
    assert np.all(grad[:, -1] == 0.0)
    assert np.abs(grad[:, :-1]).max() > 1.0


@pytest.mark.parametrize("gamma", [4.0, 512.0])
def test_pair_level_separated_optimum(gamma):
    """Identical positives (s_p = 1) and negatives at cosine -0.5 <= -m: each anchor's loss is
    log(1 + N_neg exp(-gamma m^2)) and the gradient is zero."""
    m = 0.25
    a, b = np.array([1.0, 0.0, 0.0]), np.array([-0.5, math.sqrt(0.75), 0.0])
    emb = np.array([a, 2.0 * a, 0.3 * a, b, 5.0 * b])
    labels = np.array([0, 0, 0, 1, 1])
    n_pos = np.array([2, 2, 2, 1, 1])
    n_neg = np.array([2, 2, 2, 3, 3])
    with tf.Graph().as_default():
        e_t = tf.constant(emb, tf.float32)
        loss = circle_loss.pair_level_circle_loss(e_t, tf.constant(labels), m, gamma)
        value, (grad,) = run([loss, tf.gradients(tf.reduce_sum(loss), [e_t])])
    want = np.log1p(n_neg * n_pos * np.exp(-gamma * m * m))
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)


@pytest.mark.parametrize("gamma", [256.0, 512.0])
def test_pair_level_anchor_without_positive_or_negative(gamma):
    emb, _ = pair_case(11, identities=2, per_identity=3, dim=4)
    emb = emb[:5]
    labels = np.array([0, 0, 1, 1, 2])  # anchor 4 has no positive
    with tf.Graph().as_default():
        e_t = tf.placeholder(tf.float32, [None, 4])
        y_t = tf.placeholder(tf.int64, [None])
        loss = circle_loss.pair_level_circle_loss(e_t, y_t, 0.25, gamma)
        lonely_grad = tf.gradients(loss[-1], e_t)[0]
        total_grad = tf.gradients(tf.reduce_sum(loss), e_t)[0]
        with tf.Session() as sess:
            value, g_lonely, g_total = sess.run([loss, lonely_grad, total_grad],
                                                {e_t: emb, y_t: labels})
            assert value[-1] == 0.0 and (value[:-1] > 0).all()
            assert np.all(g_lonely == 0.0)
            assert np.isfinite(g_total).all() and np.abs(g_total[-1]).max() > 0
            # one identity only: nobody has a negative
            value, g_total = sess.run([loss, total_grad], {e_t: emb, y_t: np.zeros(5, np.int64)})
            assert np.all(value == 0.0) and np.all(g_total == 0.0)
            # all singletons: nobody has a positive
            value, g_total = sess.run([loss, total_grad], {e_t: emb, y_t: np.arange(5)})
            assert np.all(value == 0.0) and np.all(g_total == 0.0)


# ----------------------------------------------------------------------------- precision
def _hard_class_case():
    """Worst case for the logits' range: every s_p = -1 and an s_n = 1 (|logit| ~ 4.4 gamma)."""
    emb, labels, proxies = class_case(12, batch=6, dim=6, classes=4)
    emb[0] = -proxies[:, labels[0]] * 100.0
    other = (labels[1] + 1) % proxies.shape[1]
    emb[1] = proxies[:, other] * 0.01
    emb[2] = _unit(proxies[:, labels[2]], 0)
    return emb, labels, proxies


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16, tf.float32])
@pytest.mark.parametrize("scale", [1e-2, 1.0, 300.0])
def test_finite_at_gamma_512_in_low_precision(dtype, scale):
    """Half-precision embeddings (mixed precision) of any magnitude: squaring 300 * N(0, 1) entries
    overflows float16 (max 65504), so normalising before casting to float32 would give inf/NaN."""
    gamma, m = 512.0, 0.25
    emb, labels, proxies = _hard_class_case()
    emb = emb * scale
    pair_emb, pair_labels = pair_case(13)
    pair_emb = pair_emb * scale
    with tf.Graph().as_default():
        e_t = tf.cast(tf.constant(emb, tf.float32), dtype)
        pe_t = tf.cast(tf.constant(pair_emb, tf.float32), dtype)
        p_t = tf.constant(proxies, tf.float32)
        class_loss = circle_loss.class_level_circle_loss(e_t, tf.constant(labels), p_t, m, gamma)
        pair_loss = circle_loss.pair_level_circle_loss(pe_t, tf.constant(pair_labels), m, gamma)
        assert class_loss.dtype == tf.float32 and pair_loss.dtype == tf.float32
        grads = tf.gradients(tf.reduce_sum(class_loss) + tf.reduce_sum(pair_loss), [p_t])
        # exactly the values the loss saw, for the reference
        seen = [tf.cast(e_t, tf.float32), tf.cast(pe_t, tf.float32)]
        class_value, pair_value, (grad,), (emb_seen, pair_seen) = run(
            [class_loss, pair_loss, grads, seen])
    assert np.isfinite(class_value).all() and np.isfinite(pair_value).all()
    assert np.isfinite(grad).all()
    assert class_value.max() > 3.0 * gamma  # the hard case did reach the extreme logits
    np.testing.assert_allclose(class_value, ref_class_loss(emb_seen, labels, proxies, m, gamma),
                               rtol=1e-5, atol=value_atol(gamma))
    np.testing.assert_allclose(pair_value, ref_pair_loss(pair_seen, pair_labels, m, gamma),
                               rtol=1e-5, atol=value_atol(gamma))


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_embedding_gradient_finite_in_low_precision(dtype):
    emb, labels, proxies = _hard_class_case()
    with tf.Graph().as_default():
        e_t = tf.cast(tf.constant(emb, tf.float32), dtype)
        loss = circle_loss.class_level_circle_loss(
            e_t, tf.constant(labels), tf.constant(proxies, tf.float32), 0.25, 512.0)
        (grad,) = tf.gradients(tf.reduce_sum(loss), [e_t])
        assert grad.dtype == dtype
        value = run(tf.cast(grad, tf.float32))
    assert np.isfinite(value).all()


def test_scale_invariance():
    emb, labels, proxies = class_case(14)
    pair_emb, pair_labels = pair_case(14)
    with tf.Graph().as_default():
        def losses(e, p, pe):
            return [circle_loss.class_level_circle_loss(
                        tf.constant(e, tf.float32), tf.constant(labels),
                        tf.constant(p, tf.float32)),
                    circle_loss.pair_level_circle_loss(tf.constant(pe, tf.float32),
                                                       tf.constant(pair_labels))]
        base, scaled = run([losses(emb, proxies, pair_emb),
                            losses(emb * 10.0, proxies * 0.1, pair_emb * 10.0)])
    for b, s in zip(base, scaled):
        np.testing.assert_allclose(s, b, rtol=1e-5, atol=value_atol(256.0))


# ----------------------------------------------------------------------------- API details
def test_proxies_as_list_of_column_blocks():
    emb, labels, proxies = class_case(15, classes=7)
    blocks = [proxies[:, :3], proxies[:, 3:5], proxies[:, 5:]]
    with tf.Graph().as_default():
        e_t = tf.constant(emb, tf.float32)
        whole = circle_loss.class_level_circle_loss(
            e_t, tf.constant(labels), tf.constant(proxies, tf.float32))
        split = circle_loss.class_level_circle_loss(
            e_t, tf.constant(labels), [tf.constant(b, tf.float32) for b in blocks])
        cos = circle_loss.cosine_similarity(e_t, [tf.constant(b, tf.float32) for b in blocks])
        want, got, got_cos = run([whole, split, cos])
    # One block takes shifted_circle_logits, several the cosine matrix: equal to float rounding.
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_cos, _unit(emb, 1) @ _unit(proxies, 0), atol=1e-6)


def test_partitioned_variable_proxies():
    emb, labels, proxies = class_case(16, classes=7)
    with tf.Graph().as_default():
        var = tf.get_variable("p", proxies.shape, tf.float32,
                              partitioner=tf.fixed_size_partitioner(3, axis=1))
        parts = list(var)
        assert [p.shape.as_list()[1] for p in parts] == [3, 2, 2]
        bounds = np.cumsum([0, 3, 2, 2])
        load = [tf.assign(p, proxies[:, lo:hi]) for p, lo, hi in zip(parts, bounds, bounds[1:])]
        loss = circle_loss.class_level_circle_loss(
            tf.constant(emb, tf.float32), tf.constant(labels), var, 0.25, 256.0)
        with tf.Session() as sess:
            sess.run(load)
            got = sess.run(loss)
    np.testing.assert_allclose(got, ref_class_loss(emb, labels, proxies, 0.25, 256.0),
                               rtol=1e-5, atol=value_atol(256.0))


def test_gamma_as_tensor():
    """A schedule (e.g. gamma warm-up) may feed gamma as a tensor."""
    emb, labels, proxies = class_case(17)
    with tf.Graph().as_default():
        gamma = tf.placeholder(tf.float32, [])
        loss = circle_loss.class_level_circle_loss(
            tf.constant(emb, tf.float32), tf.constant(labels), tf.constant(proxies, tf.float32),
            gamma=gamma)
        with tf.Session() as sess:
            for g in (16.0, 256.0):
                np.testing.assert_allclose(sess.run(loss, {gamma: g}),
                                           ref_class_loss(emb, labels, proxies, 0.25, g),
                                           rtol=1e-5, atol=value_atol(g))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(margin=1.0), ValueError, "margin"),
    (dict(margin=-0.1), ValueError, "margin"),
    (dict(gamma=0.0), ValueError, "gamma"),
    (dict(labels=[[0], [1]]), ValueError, "labels"),
    (dict(labels=[0.0, 1.0]), TypeError, "labels"),
    (dict(embeddings=[1.0, 2.0]), ValueError, "embeddings"),
    (dict(proxies=np.ones((5, 3))), ValueError, "proxies must be"),
])
def test_bad_input(kwargs, error, match):
    args = dict(embeddings=np.ones((2, 4)), labels=[0, 1], proxies=np.ones((4, 3)))
    args.update(kwargs)
    with tf.Graph().as_default(), pytest.raises(error, match=match):
        circle_loss.class_level_circle_loss(
            tf.constant(args.pop("embeddings"), tf.float32), tf.constant(args.pop("labels")),
            tf.constant(args.pop("proxies"), tf.float32), **args)
