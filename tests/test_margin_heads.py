"""AdaFace, sub-center ArcFace and MagFace against numpy transcriptions of the authors' code.

The transcriptions below follow the reference files line by line (torch / mxnet ops replaced by
their numpy equivalents), not this project's implementation:

* AdaFace: github.com/mk-minchul/AdaFace, ``head.py`` class ``AdaFace.forward``, commit
  c60eaa786a42c03444f3df7096dbaf9d57ae010d (t_alpha 0.01 from ``config.py``).
* Sub-center ArcFace: github.com/deepinsight/insightface,
  ``recognition/SubCenter-ArcFace/train_parall.py`` ``get_symbol_arcface`` (margin_softmax,
  loss_K sub-centres, m1 1, m2 0.5, m3 0), commit 6c268de606fc0a2958a28fff1c7fb7575dbc1330;
  the dominant sub-centre and the 75° drop from ``drop.py`` at the same commit.
* MagFace: github.com/IrvingMeng/MagFace, ``models/magface.py`` (``SoftmaxBuilder._margin``,
  ``MagLinear.forward`` with its default easy_margin=True, ``MagLoss``) and ``run/trainer.py``
  (loss = loss_id + lambda_g * loss_g; run.sh: l_a 10, u_a 110, l_m 0.45, u_m 0.8, λ_g 35),
  commit 99bae614ac2643b9694bf18e0c5645272ff6acfa.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model import heads, margin_heads
from tests import model_helpers
from training.params import ParamsError, build_configs, build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

D, C, B, K = 8, 5, 12, 3
NEW_HEADS = ["adaface", "subcenter_arcface", "magface"]


# ----------------------------------------------------------------------------- references
def l2_norm(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def cross_entropy(logits, labels):
    peak = logits.max(axis=1, keepdims=True)
    lse = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
    return lse - logits[np.arange(len(labels)), labels]


class AdaFaceReference:
    """mk-minchul/AdaFace head.py ``AdaFace`` (buffers batch_mean 20, batch_std 100)."""

    def __init__(self, kernel, m=0.4, h=0.333, s=64.0, t_alpha=0.01):
        self.kernel, self.m, self.h, self.s, self.t_alpha = kernel, m, h, s, t_alpha
        self.eps = 1e-3
        self.batch_mean, self.batch_std = 20.0, 100.0

    def forward(self, embbedings, norms, label):
        kernel_norm = l2_norm(self.kernel, axis=0)
        cosine = embbedings @ kernel_norm
        cosine = np.clip(cosine, -1 + self.eps, 1 - self.eps)
        safe_norms = np.clip(norms, 0.001, 100)
        mean = safe_norms.mean()
        std = safe_norms.std(ddof=1)  # torch.std is unbiased
        self.batch_mean = mean * self.t_alpha + (1 - self.t_alpha) * self.batch_mean
        self.batch_std = std * self.t_alpha + (1 - self.t_alpha) * self.batch_std
        margin_scaler = (safe_norms - self.batch_mean) / (self.batch_std + self.eps)
        margin_scaler = margin_scaler * self.h
        margin_scaler = np.clip(margin_scaler, -1, 1)
        m_arc = np.zeros((label.shape[0], cosine.shape[1]))
        m_arc[np.arange(len(label)), label] = 1.0
        g_angular = self.m * margin_scaler * -1
        m_arc = m_arc * g_angular[:, None]
        theta = np.arccos(cosine)
        theta_m = np.clip(theta + m_arc, self.eps, math.pi - self.eps)
        cosine = np.cos(theta_m)
        m_cos = np.zeros((label.shape[0], cosine.shape[1]))
        m_cos[np.arange(len(label)), label] = 1.0
        g_add = self.m + (self.m * margin_scaler)
        m_cos = m_cos * g_add[:, None]
        cosine = cosine - m_cos
        return cosine * self.s


def subcenter_reference(embedding, weight, label, loss_k, m2=0.5, s=64.0):
    """insightface get_symbol_arcface: weight (C*K, D), fc7 reshaped (-1, C, K), max over K."""
    num_classes = weight.shape[0] // loss_k
    nweight = l2_norm(weight, axis=1)
    nembedding = l2_norm(embedding, axis=1)
    fc7 = nembedding @ nweight.T
    sim_s3 = fc7.reshape(-1, num_classes, loss_k)
    fc7 = sim_s3.max(axis=2)
    gt_one_hot = np.eye(num_classes)[label]
    fc7_onehot = fc7 * gt_one_hot
    cos_t = fc7_onehot
    t = np.arccos(cos_t)
    t = t + m2
    margin_cos = np.cos(t)
    margin_fc7_onehot = margin_cos * gt_one_hot
    diff = margin_fc7_onehot - fc7_onehot
    fc7 = fc7 + diff
    return fc7 * s


def drop_reference(embeddings, weight, wid, loss_k, threshold=75.0):
    """insightface drop.py for identity ``wid``: the dominant sub-centre and the images kept."""
    subcenters = l2_norm(weight, axis=1).reshape(-1, loss_k, weight.shape[1])[wid]
    x = l2_norm(embeddings, axis=1)
    k_stat = np.zeros((loss_k,), dtype=int)
    for i in range(x.shape[0]):
        k_stat[np.argmax(subcenters @ x[i])] += 1
    dominant_index = np.argmax(k_stat)
    return dominant_index, np.where(x @ subcenters[dominant_index] >
                                    np.cos(np.pi * threshold / 180.0))[0]


class MagFaceReference:
    """IrvingMeng/MagFace SoftmaxBuilder + MagLinear(easy_margin=True) + MagLoss + trainer."""

    def __init__(self, weight, l_a=10.0, u_a=110.0, l_margin=0.45, u_margin=0.8, scale=64.0,
                 lambda_g=35.0):
        self.weight, self.l_a, self.u_a = weight, l_a, u_a
        self.l_margin, self.u_margin, self.scale, self.lambda_g = (l_margin, u_margin, scale,
                                                                   lambda_g)

    def _margin(self, x):
        return (self.u_margin - self.l_margin) / (self.u_a - self.l_a) * (x - self.l_a) + \
            self.l_margin

    def fc(self, x):
        x_norm = np.clip(np.linalg.norm(x, axis=1, keepdims=True), self.l_a, self.u_a)
        ada_margin = self._margin(x_norm)
        cos_m, sin_m = np.cos(ada_margin), np.sin(ada_margin)
        weight_norm = l2_norm(self.weight, axis=0)
        cos_theta = l2_norm(x, axis=1) @ weight_norm
        cos_theta = np.clip(cos_theta, -1, 1)
        sin_theta = np.sqrt(1.0 - np.power(cos_theta, 2))
        cos_theta_m = cos_theta * cos_m - sin_theta * sin_m
        cos_theta_m = np.where(cos_theta > 0, cos_theta_m, cos_theta)
        return [self.scale * cos_theta, self.scale * cos_theta_m], x_norm

    def loss(self, x, target):
        (cos_theta, cos_theta_m), x_norm = self.fc(x)
        loss_g = np.mean(1 / (self.u_a ** 2) * x_norm + 1 / x_norm)
        one_hot = np.eye(cos_theta.shape[1])[target]
        output = one_hot * cos_theta_m + (1.0 - one_hot) * cos_theta
        loss_id = cross_entropy(output, target).mean()
        return output, loss_id + self.lambda_g * loss_g


# ----------------------------------------------------------------------------- helpers
def batch(seed, norm_low=5.0, norm_high=60.0):
    """Embeddings with spread norms (quality), labels, and class structure."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(B) % C).astype(np.int32)
    centres = rng.normal(size=(C, D))
    direction = l2_norm(centres[labels] + 0.8 * rng.normal(size=(B, D)), axis=1)
    return direction * rng.uniform(norm_low, norm_high, size=(B, 1)), labels


def run(fetches, feeds_variables=None, steps=1, update=False):
    """Runs ``fetches`` (built in the current graph) ``steps`` times, loading variables first;
    with ``update`` the UPDATE_OPS run after each step."""
    updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS) if update else []
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for name, value in (feeds_variables or {}).items():
            [var] = [v for v in tf.global_variables() if v.op.name == name]
            var.load(value, sess)
        values = []
        for _ in range(steps):
            values.append(sess.run(fetches))
            if updates:
                sess.run(updates)
        return values


def full_head(name, emb, labels, variables, steps=1, sample=True, **options):
    head = heads.build_head(name, C, D, **options)
    with tf.Graph().as_default():
        out = head(tf.constant(emb, tf.float32), tf.constant(labels), sample=sample)
        fetch = {k: v for k, v in out._asdict().items() if v is not None}
        return head, run(fetch, variables, steps=steps, update=sample)


# ----------------------------------------------------------------------------- registry, config
def test_registered_with_their_options():
    assert [cls.name for cls in margin_heads.MARGIN_HEADS] == NEW_HEADS
    for name in NEW_HEADS:
        assert name in heads.HEADS and not heads.HEADS[name].needs_pk_batches
    assert heads.build_head("subcenter_arcface", C, D).config["subcenters"] == 3
    head = heads.build_head("adaface", C, D, adaface_h=0.5)
    assert (head.margin, head.scale, head.adaface_h, head.adaface_t_alpha) == (0.4, 64.0, 0.5,
                                                                               0.01)
    magface = heads.build_head("magface", C, D, margin=0.25)  # ignored: no fixed margin
    assert magface.config["magface_lambda_g"] == 35.0 and "margin" not in magface.config
    assert magface.margin is None


@pytest.mark.parametrize("name,options,match", [
    ("subcenter_arcface", dict(subcenters=0), "subcenters"),
    ("subcenter_arcface", dict(subcenter_drop_step=-1), "subcenter_drop_step"),
    ("subcenter_arcface", dict(subcenter_drop_angle=0.0), "subcenter_drop_angle"),
    ("adaface", dict(adaface_t_alpha=0.0), "adaface_t_alpha"),
    ("adaface", dict(adaface_h=-1.0), "adaface_h"),
    ("magface", dict(magface_lower_norm=120.0), "magface_lower_norm"),
    ("magface", dict(magface_lower_margin=0.9), "magface_lower_margin"),
])
def test_bad_options(name, options, match):
    with pytest.raises(ValueError, match=match):
        heads.build_head(name, C, D, **options)


def test_the_drop_needs_the_global_step():
    head = heads.build_head("subcenter_arcface", C, D, subcenter_drop_step=5)
    with tf.Graph().as_default(), pytest.raises(ValueError, match="needs the global step"):
        head(tf.zeros([4, D]), tf.zeros([4], tf.int32))


def test_other_heads_refuse_these_options():
    with pytest.raises(TypeError):
        heads.build_head("arcface", C, D, subcenters=3)


# ----------------------------------------------------------------------------- float64 formulas
def test_adaface_matches_the_authors_code_in_float64_over_steps():
    emb, labels = batch(0)
    kernel = np.random.default_rng(1).normal(size=(D, C))
    norms = np.linalg.norm(emb, axis=1)
    reference = AdaFaceReference(kernel)
    want = [reference.forward(l2_norm(emb, 1), norms, labels) for _ in range(3)]
    head = heads.build_head("adaface", C, D)
    with tf.Graph().as_default(), tf.variable_scope("head"):
        cos = tf.constant(l2_norm(emb, 1) @ l2_norm(kernel, 0))
        logits = head.adaptive_logits(cos, tf.constant(labels), tf.constant(norms), True)
        assert logits.dtype == tf.float64
        got = run(logits, steps=3, update=True)
    for step in range(3):  # the moving statistics move as the authors' buffers do
        np.testing.assert_allclose(got[step], want[step], rtol=1e-6, atol=1e-9)
    # the margins matter: the result is not plain s*cos
    assert np.abs(want[0] - 64 * np.clip(cos_np(emb, kernel), -1, 1)).max() > 1.0


def cos_np(emb, kernel):
    return l2_norm(emb, 1) @ l2_norm(kernel, 0)


def test_subcenter_arcface_matches_insightface_in_float64():
    emb, labels = batch(2)
    weight = np.random.default_rng(3).normal(size=(C * K, D))  # insightface's fc7 layout
    want = subcenter_reference(emb, weight, labels, K)
    head = heads.build_head("subcenter_arcface", C, D, subcenters=K)
    with tf.Graph().as_default():
        sub = tf.constant(l2_norm(emb, 1) @ l2_norm(weight, 1).T)  # [B, C K]
        cos = tf.reduce_max(tf.reshape(sub, [-1, C, K]), axis=2)
        logits = head.margin_logits(cos, tf.constant(labels))
        assert logits.dtype == tf.float64
        [got] = run(logits)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_magface_matches_the_authors_code_in_float64():
    emb, labels = batch(4)
    weight = np.random.default_rng(5).normal(size=(D, C))
    reference = MagFaceReference(weight)
    want_logits, want_loss = reference.loss(emb, labels)
    head = heads.build_head("magface", C, D)
    with tf.Graph().as_default():
        norms = tf.constant(np.linalg.norm(emb, axis=1))
        logits = head.magnitude_logits(tf.constant(cos_np(emb, weight)), tf.constant(labels),
                                       norms)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(labels), logits=logits) + head.regulariser(norms))
        assert logits.dtype == tf.float64
        [(got_logits, got_loss)] = run((logits, loss))
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)


# ----------------------------------------------------------------------------- full heads, fp32
def test_adaface_head_in_float32_and_its_moving_statistics():
    emb, labels = batch(6)
    kernel = np.random.default_rng(7).normal(size=(D, C))
    reference = AdaFaceReference(kernel)
    norms = np.linalg.norm(emb, axis=1)
    want = [reference.forward(l2_norm(emb, 1), norms, labels) for _ in range(2)]
    head, got = full_head("adaface", emb, labels, {"head/proxies": kernel}, steps=2)
    for step in range(2):
        np.testing.assert_allclose(got[step]["logits"], want[step], rtol=1e-4, atol=2e-3)
        np.testing.assert_allclose(got[step]["per_example_loss"],
                                   cross_entropy(want[step], labels), rtol=1e-4, atol=2e-3)
    # evaluation (sample=False) reads the statistics and adds no update
    with tf.Graph().as_default():
        head(tf.constant(emb, tf.float32), tf.constant(labels), sample=False)
        assert tf.get_collection(tf.GraphKeys.UPDATE_OPS) == []
        state = [v for v in tf.global_variables() if "adaface" in v.op.name]
        assert [v.op.name for v in state] == ["head/adaface_batch_mean",
                                              "head/adaface_batch_std"]
        assert not any(v in tf.trainable_variables() for v in state)


@pytest.mark.parametrize("rate", [1.0, 0.6])
def test_subcenter_head_in_float32_full_and_partial_fc(rate):
    emb, labels = batch(8)
    weight = np.random.default_rng(9).normal(size=(C * K, D))
    want = subcenter_reference(emb, weight, labels, K)
    variables = ({"head/proxies": weight.T} if rate == 1.0 else {"head/class_proxies": weight})
    # Partial FC scoring every class (sample=False) is the full head
    _, [got] = full_head("subcenter_arcface", emb, labels, variables, subcenters=K,
                         partial_fc_rate=rate, sample=rate == 1.0)
    np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(got["per_example_loss"], cross_entropy(want, labels), rtol=1e-4,
                               atol=2e-3)


def test_subcenter_partial_fc_sample_is_the_reference_on_the_sampled_classes():
    emb, _ = batch(10)
    # A batch never outnumbers the sample (the head refuses it): 3 examples of two classes.
    emb, labels = emb[:3], np.array([1, 3, 1], np.int32)
    weight = np.random.default_rng(11).normal(size=(C * K, D))
    _, got = full_head("subcenter_arcface", emb, labels, {"head/class_proxies": weight},
                       subcenters=K, partial_fc_rate=0.6, steps=4)
    for step in got:
        classes = step["classes"]  # ceil(0.6 * 5) = 3: the batch's two and one other
        assert len(classes) == 3 and {1, 3} <= set(classes)
        rows = (classes[:, None] * K + np.arange(K)).ravel()
        want = subcenter_reference(emb, weight[rows], np.searchsorted(classes, labels), K)
        np.testing.assert_allclose(step["logits"], want, rtol=1e-4, atol=2e-3)
    assert len({tuple(step["classes"]) for step in got}) > 1


def test_magface_head_in_float32():
    emb, labels = batch(12)
    weight = np.random.default_rng(13).normal(size=(D, C))
    want_logits, want_loss = MagFaceReference(weight).loss(emb, labels)
    _, [got] = full_head("magface", emb, labels, {"head/proxies": weight})
    np.testing.assert_allclose(got["logits"], want_logits, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(got["per_example_loss"].mean(), want_loss, rtol=1e-5)


def test_subcenter_drop_keeps_the_dominant_subcentre_as_insightface_drop_py():
    """Counting before step N, then each class scored by its dominant sub-centre, and the
    examples beyond 75 degrees of it carry no loss: drop.py's choice on the same data."""
    rng = np.random.default_rng(14)
    weight = rng.normal(size=(C * K, D))
    labels = np.repeat(np.arange(C), 4).astype(np.int32)
    emb = rng.normal(size=(len(labels), D))
    head = heads.build_head("subcenter_arcface", C, D, subcenters=K, subcenter_drop_step=2)
    with tf.Graph().as_default():
        step = tf.train.get_or_create_global_step()
        out = head(tf.constant(emb, tf.float32), tf.constant(labels))
        advance = tf.assign_add(step, 1)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            [proxies] = [v for v in tf.global_variables() if v.op.name == "head/proxies"]
            proxies.load(weight.T, sess)
            before = sess.run(out.logits)
            for _ in range(3):  # steps 0 and 1 count, step 2 does not
                sess.run(updates)
                sess.run(advance)
            counts = sess.run([v for v in tf.global_variables()
                               if v.op.name == "head/subcenter_counts"][0])
            after, loss = sess.run((out.cosine, out.per_example_loss))
    np.testing.assert_allclose(before, subcenter_reference(emb, weight, labels, K), rtol=1e-4,
                               atol=2e-3)
    assert counts.sum() == 2 * len(labels)
    dominant_rows = []
    kept_examples = np.zeros(len(labels), bool)
    for c in range(C):
        own = labels == c
        dominant, kept = drop_reference(emb[own], weight, c, K)
        assert np.argmax(counts[c]) == dominant
        dominant_rows.append(weight[c * K + dominant])
        kept_examples[np.nonzero(own)[0][kept]] = True
    # K = 1 on the dominant sub-centres: the second run of insightface's recipe
    want = cross_entropy(subcenter_reference(emb, np.array(dominant_rows), labels, 1), labels)
    np.testing.assert_allclose(after, l2_norm(emb, 1) @ l2_norm(np.array(dominant_rows), 1).T,
                               atol=1e-5)
    assert 0 < kept_examples.sum() < len(labels)  # the data exercise both cases
    np.testing.assert_allclose(loss[kept_examples], want[kept_examples], rtol=1e-4, atol=1e-3)
    assert (loss[~kept_examples] == 0).all()


# ----------------------------------------------------------------------------- gradients
def _max_gradient_error(x_value, build):
    with tf.Graph().as_default(), tf.Session(), tf.variable_scope("head"):
        x = tf.constant(x_value)
        y = build(x)
        tf.global_variables_initializer().run()
        return tf.test.compute_gradient_error(x, list(x_value.shape), y, y.shape.as_list(),
                                              x_init_value=x_value, delta=1e-6)


def _loss(logits, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(labels),
                                                          logits=logits)


def test_gradients_match_finite_differences():
    emb, labels = batch(15, norm_low=15.0, norm_high=100.0)  # within MagFace's [l_a, u_a]
    weight = np.random.default_rng(16).normal(size=(D, C))
    cos = cos_np(emb, weight)
    norms = np.linalg.norm(emb, axis=1)
    ada = heads.build_head("adaface", C, D)
    sub = heads.build_head("subcenter_arcface", C, D, subcenters=1)
    mag = heads.build_head("magface", C, D)
    errors = {
        "adaface": _max_gradient_error(cos, lambda x: _loss(
            ada.adaptive_logits(x, tf.constant(labels), tf.constant(norms), False), labels)),
        "subcenter_arcface": _max_gradient_error(cos, lambda x: _loss(
            sub.margin_logits(x, tf.constant(labels)), labels)),
        "magface/cos": _max_gradient_error(cos, lambda x: _loss(
            mag.magnitude_logits(x, tf.constant(labels), tf.constant(norms)), labels)),
        # the margin's and g's gradient with respect to the norm (MagFace trains the norm)
        "magface/norm": _max_gradient_error(norms, lambda n: _loss(
            mag.magnitude_logits(tf.constant(cos), tf.constant(labels), n), labels)
            + mag.regulariser(n)),
    }
    assert max(errors.values()) < 1e-6, errors


def test_gradient_reaches_the_embeddings_through_the_full_heads():
    """d loss / d embeddings of each full head (float32 graph) against central differences in
    float64 of the references above."""
    emb, labels = batch(17, norm_low=15.0, norm_high=100.0)
    weight = np.random.default_rng(18).normal(size=(D, C))
    sub_weight = np.random.default_rng(18).normal(size=(C * K, D))

    def reference_loss(name, x):
        if name == "magface":
            return MagFaceReference(weight).loss(x, labels)[1]
        if name == "adaface":  # norms carry no gradient in AdaFace
            return cross_entropy(AdaFaceReference(weight).forward(
                l2_norm(x, 1), np.linalg.norm(emb, axis=1), labels), labels).mean()
        return cross_entropy(subcenter_reference(x, sub_weight, labels, K), labels).mean()

    for name in NEW_HEADS:
        head = heads.build_head(name, C, D, **({"subcenters": K} if name.startswith("sub")
                                               else {}))
        proxies = sub_weight.T if name.startswith("sub") else weight
        with tf.Graph().as_default():
            x = tf.constant(emb, tf.float32)
            loss = tf.reduce_mean(head(x, tf.constant(labels), sample=False).per_example_loss)
            [grad] = tf.gradients(loss, x)
            [got] = run(grad, {"head/proxies": proxies})
        want = np.zeros_like(emb)
        for index in np.ndindex(*emb.shape):
            step = np.zeros_like(emb)
            step[index] = 1e-6
            want[index] = (reference_loss(name, emb + step)
                           - reference_loss(name, emb - step)) / 2e-6
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4, err_msg=name)


# ----------------------------------------------------------------------------- precision, training
@pytest.mark.parametrize("name", NEW_HEADS)
@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_embeddings_give_float32_logits_and_loss(name, dtype):
    emb, labels = batch(19)
    head = heads.build_head(name, C, D)
    with tf.Graph().as_default():
        out = head(tf.cast(tf.constant(emb), dtype), tf.constant(labels))
        for tensor in (out.logits, out.cosine, out.per_example_loss):
            assert tensor.dtype == tf.float32
        assert out.logits.shape.as_list() == [B, C]  # static shapes (Ascend)
        [values] = run(out.per_example_loss)
    assert np.isfinite(values).all()


@pytest.mark.parametrize("name,options", [
    ("adaface", {}), ("subcenter_arcface", {"subcenter_drop_step": 4}), ("magface", {}),
    ("adaface", {"partial_fc_rate": 0.5}), ("subcenter_arcface", {"partial_fc_rate": 0.5})])
def test_model_fn_trains_a_few_steps(name, options):
    """The model_fn's TRAIN graph (tiny backbone, momentum, weight decay, finite-loss guard,
    UPDATE_OPS) on one fixed batch: the loss falls and the head's state moves."""
    size, classes, batch_size = 32, 16, 8
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        tf.train.get_or_create_global_step()  # as the Estimator does before model_fn
        images = tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32))
        labels = tf.constant(np.arange(batch_size) % classes, tf.int32)
        spec = model_helpers.build_model_fn(
            "tiny", name, classes, embedding_size=16, image_size=size, learning_rate=0.05,
            total_steps=100, warmup_steps=0, log_every_n_steps=1000, **options)(
                {"image": images}, labels, tf.estimator.ModeKeys.TRAIN)
        state = [v for v in tf.global_variables()
                 if v.op.name in ("head/adaface_batch_mean", "head/subcenter_counts")]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            start = sess.run(state)
            losses = [sess.run([spec.train_op, spec.loss])[1] for _ in range(12)]
            end = sess.run(state)
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    for before, after in zip(start, end):
        assert not np.allclose(before, after)
    assert len(state) == int(name == "adaface" or "subcenter_drop_step" in options)


# ----------------------------------------------------------------------------- flags
def _settings(records, model_dir, **flags):
    args = [f"--train_records={records}", f"--model_dir={model_dir}", "--mode=train",
            "--backbone=tiny", "--image_size=32", "--embedding_size=16", "--batch_size=8",
            "--train_steps=5"]
    return args + [f"--{name}={value}" for name, value in flags.items()]


def test_flags_reach_the_head_and_params_record_the_defaults(small_records, tmp_path,
                                                             parse_flags):
    p = build_params(parse_flags(_settings(small_records, tmp_path, head="subcenter_arcface",
                                           subcenters=2, subcenter_drop_step=3)))
    head = build_configs(p).head
    assert (head.subcenters, head.subcenter_drop_step, head.subcenter_drop_angle) == (2, 3, 75.0)
    assert (p["subcenters"], p["subcenter_drop_angle"], p["margin"]) == (2, 75.0, 0.5)
    p = build_params(parse_flags(_settings(small_records, tmp_path, head="magface",
                                           magface_lambda_g=40)))
    assert p["magface_lambda_g"] == 40.0 and p["magface_upper_norm"] == 110.0
    p = build_params(parse_flags(_settings(small_records, tmp_path, head="adaface")))
    assert (p["margin"], p["adaface_h"], p["adaface_t_alpha"]) == (0.4, 0.333, 0.01)
    json.dumps(p.to_json_dict())


@pytest.mark.parametrize("flags,match", [
    (dict(head="arcface", subcenters=3), "--subcenters is an option of another head"),
    (dict(head="adaface", magface_lambda_g=3), "--magface_lambda_g is an option"),
    (dict(head="subcenter_arcface", subcenters=0), "--head=subcenter_arcface: subcenters"),
])
def test_bad_flags_are_one_line_errors(small_records, tmp_path, parse_flags, flags, match):
    with pytest.raises(ParamsError, match=match):
        build_params(parse_flags(_settings(small_records, tmp_path, **flags)))


@pytest.mark.slow
@pytest.mark.parametrize("head,flags", [
    ("adaface", []), ("subcenter_arcface", ["--subcenter_drop_step=10"]), ("magface", [])])
def test_estimator_main_trains_evaluates_and_exports(small_records, small_pairs, tmp_path,
                                                     head, flags):
    """The command line end to end: 20 steps, verification report, SavedModel (~30 s each)."""
    model_dir = str(tmp_path / "run")
    proc = subprocess.run(
        [sys.executable, "estimator_main.py", "--mode=train_and_evaluate", f"--head={head}",
         f"--train_records={small_records}", f"--eval_records={small_pairs}",
         f"--model_dir={model_dir}", "--backbone=tiny", "--image_size=32",
         "--embedding_size=16", "--batch_size=8", "--train_steps=20",
         "--save_checkpoints_steps=10", "--eval_batch_size=4", "--eval_throttle_secs=0",
         "--noprogress"] + flags,
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
        encoding="utf-8", timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(model_dir, "eval", "report.json")) as f:
        assert 0.0 <= json.load(f)["accuracy"] <= 1.0
    assert os.listdir(os.path.join(model_dir, "export", "latest"))


@pytest.mark.slow
def test_head_state_under_a_mirrored_strategy(small_records, tmp_path):
    """Two CPU replicas, global batch 8, 6 steps: the sub-centre votes are summed over the
    replicas (VariableAggregation.SUM: 6 x 8 votes exactly) and AdaFace's moving statistics
    are updated from replica context (MEAN) without TF refusing it (~1 min each on 2 cores)."""
    for head, flags, name in (("subcenter_arcface", ["--subcenter_drop_step=100"],
                               "head/subcenter_counts"),
                              ("adaface", [], "head/adaface_batch_mean")):
        model_dir = str(tmp_path / head)
        proc = subprocess.run(
            [sys.executable, "estimator_main.py", "--mode=train", f"--head={head}",
             f"--train_records={small_records}", f"--model_dir={model_dir}",
             "--backbone=tiny", "--image_size=32", "--embedding_size=16", "--batch_size=8",
             "--train_steps=6", "--distribution=mirrored", "--num_cpu_devices=2",
             "--noprogress", "--save_checkpoints_steps=100"] + flags,
            cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
            encoding="utf-8", timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]
        value = tf.train.load_variable(model_dir, name)
        if head == "adaface":
            assert value != margin_heads.AdaFaceHead.initial_mean
        else:
            assert value.sum() == 6 * 8
