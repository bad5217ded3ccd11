"""Backbones and the layers they are built from.

Layers are checked against direct numpy formulas; backbones against parameter counts of the
reference PyTorch models and against batch-norm behaviour (inference output independent of the
rest of the batch, moving averages updated only through UPDATE_OPS in training).
"""

import functools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model import layers
from model.backbones import BACKBONES, check_image_size, default_image_size, get_backbone

ALL_BACKBONES = ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet_lite",
                 "mobilefacenet", "tiny"]
# Backbones small enough to run (not just build) in a unit test on two CPU cores.
RUNNABLE = ["tiny", "mobilefacenet", "iresnet18", "iresnet_lite"]

# Trainable parameters of insightface recognition/arcface_torch/backbones/iresnet.py and
# mobilefacenet.py (get_mbf: blocks (1, 4, 6, 2), scale 2), fp16=False, counted with PyTorch 2.13
# as sum(p.numel() for p in model.parameters() if p.requires_grad). Keyed by
# (backbone, embedding size).
REFERENCE_TRAINABLE_PARAMS = {
    ("iresnet18", 512): 24025088,
    ("iresnet34", 512): 34138816,
    ("iresnet50", 512): 43590336,
    ("iresnet100", 512): 65155648,
    ("mobilefacenet", 512): 2059520,
    ("iresnet18", 128): 14390528,
    ("mobilefacenet", 128): 1862144,
}
# BatchNorm running_mean + running_var elements of the same PyTorch models (embedding 512).
REFERENCE_BN_BUFFERS = {
    "iresnet18": 14720,
    "iresnet34": 25856,
    "iresnet50": 38144,
    "iresnet100": 69632,
    "mobilefacenet": 23808,
}

WEIGHT_NAMES = {"kernel", "bias", "gamma", "beta", "alpha"}
STATISTIC_NAMES = {"moving_mean", "moving_variance"}


def _tiny_trainable_params(embedding_size):
    """The tiny CNN's documented layout, counted by hand: stem 3→24, stages 48/96/192 of a
    strided conv and a stride-1 conv, each conv followed by BN (gamma, beta) and PReLU (alpha);
    FC without bias; BN neck."""
    widths = [(3, 24), (24, 48), (48, 48), (48, 96), (96, 96), (96, 192), (192, 192)]
    convs = sum(9 * cin * cout + 3 * cout for cin, cout in widths)
    return convs + 192 * embedding_size + 2 * embedding_size


def _iresnet_lite_trainable_params(embedding_size, image_size):
    """IResNet-lite's documented layout, counted by hand: stem conv 3→32 + BN + PReLU; stages
    64/128/256 of two IResNet basic blocks (BN, conv, BN, PReLU, conv, BN; a 1×1 conv + BN
    shortcut in each stage's first block); BN, FC with bias over the (S/16)² × 256 map, BN
    without scale."""
    total = 27 * 32 + 2 * 32 + 32
    cin = 32
    for width in (64, 128, 256):
        for block in range(2):
            total += 2 * cin + 9 * cin * width + 2 * width + width + 9 * width * width + 2 * width
            if block == 0:
                total += cin * width + 2 * width
            cin = width
    feature_map = (image_size // 16) ** 2 * 256
    return total + 2 * 256 + feature_map * embedding_size + embedding_size + embedding_size


def _size(variable):
    return int(np.prod(variable.shape.as_list()))


def _graph_facts(name, is_training, embedding_size=512):
    """Build a backbone once (no session) and keep the facts tests need, not the graph."""
    return _cached_graph_facts(name, is_training, embedding_size)


@functools.lru_cache(maxsize=None)
def _cached_graph_facts(name, is_training, embedding_size):
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 112, 112, 3])
        embeddings = get_backbone(name)(images, is_training, embedding_size=embedding_size,
                                        dropout_rate=0.1)
        operations = tf.get_default_graph().get_operations()
        trainable = tf.trainable_variables()
        statistics = [v for v in tf.global_variables() if not v.trainable]
        return {
            "shape": embeddings.shape.as_list(),
            "dtype": embeddings.dtype,
            "trainable": sum(_size(v) for v in trainable),
            "trainable_names": [v.op.name for v in trainable],
            "statistics": sum(_size(v) for v in statistics),
            "statistic_names": [v.op.name for v in statistics],
            "moving_averages": len(tf.get_collection(tf.GraphKeys.MOVING_AVERAGE_VARIABLES)),
            "update_ops": len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)),
            "batch_statistics_ops": [op.name for op in operations
                                     if op.type.startswith("FusedBatchNorm")
                                     and op.get_attr("is_training")],
            "dropout_ops": [op.name for op in operations if "dropout" in op.name.lower()],
        }


def _faces(batch, size=112, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def _randomise_statistics(session, seed=0):
    """Non-trivial moving statistics, so inference-mode BN is not close to the identity."""
    rng = np.random.RandomState(seed)
    for variable in tf.global_variables():
        shape = variable.shape.as_list()
        if variable.op.name.endswith("moving_mean"):
            variable.load(rng.normal(0.0, 0.5, shape).astype(np.float32), session)
        elif variable.op.name.endswith("moving_variance"):
            variable.load(rng.uniform(0.5, 2.0, shape).astype(np.float32), session)


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_every_backbone():
    assert list(BACKBONES) == ALL_BACKBONES
    for name in ALL_BACKBONES:
        assert get_backbone(name) is BACKBONES[name]
        assert default_image_size(name) == (64 if name == "iresnet_lite" else 112)
        check_image_size(name, default_image_size(name))


@pytest.mark.parametrize("lookup", [get_backbone, default_image_size,
                                    lambda name: check_image_size(name, 112)])
def test_unknown_backbone_lists_valid_names(lookup):
    with pytest.raises(ValueError) as error:
        lookup("vgg16")
    message = str(error.value)
    assert "vgg16" in message
    assert all(name in message for name in ALL_BACKBONES)


@pytest.mark.parametrize("name,size", [
    ("iresnet18", 96), ("iresnet100", 128), ("mobilefacenet", 224), ("mobilefacenet", 56),
    ("tiny", 100), ("tiny", 16), ("tiny", 0), ("tiny", 112.0), ("iresnet50", True),
    ("iresnet_lite", 72), ("iresnet_lite", 16),
])
def test_check_image_size_rejects(name, size):
    with pytest.raises(ValueError) as error:
        check_image_size(name, size)
    message = str(error.value)
    assert "\n" not in message
    assert str(size) in message


@pytest.mark.parametrize("size", [32, 48, 64, 96, 112, 128, 224])
def test_tiny_takes_multiples_of_16(size):
    check_image_size("tiny", size)


@pytest.mark.parametrize("name,shape,dtype", [
    ("iresnet18", [None, 96, 96, 3], tf.float32),
    ("mobilefacenet", [None, 128, 128, 3], tf.float32),
    ("iresnet18", [None, None, None, 3], tf.float32),
    ("tiny", [None, 100, 100, 3], tf.float32),
    ("tiny", [None, 64, 96, 3], tf.float32),
    ("tiny", [None, 112, 112, 3], tf.uint8),
    ("tiny", [None, 112, 112], tf.float32),
])
def test_builders_reject_bad_inputs(name, shape, dtype):
    with tf.Graph().as_default():
        images = tf.placeholder(dtype, shape)
        with pytest.raises(ValueError, match=name):
            get_backbone(name)(images, True)


def test_is_training_must_be_a_python_bool():
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 112, 112, 3])
        with pytest.raises(TypeError, match="is_training"):
            get_backbone("tiny")(images, tf.constant(True))


# ---------------------------------------------------------------------------------------------
# Architecture facts (graph construction only)


# iresnet50's and mobilefacenet's counts (insightface's, the peer benchmark's) in make test; the
# other iresnets' graphs take 5-25 s each to build on 2 cores: make test-slow.
@pytest.mark.parametrize("name,embedding_size", [
    key if key[0] not in ("iresnet18", "iresnet34", "iresnet100")
    else pytest.param(*key, marks=pytest.mark.slow)
    for key in sorted(REFERENCE_TRAINABLE_PARAMS)])
def test_trainable_parameters_match_reference(name, embedding_size):
    facts = _graph_facts(name, True, embedding_size)
    assert facts["trainable"] == REFERENCE_TRAINABLE_PARAMS[(name, embedding_size)]


@pytest.mark.parametrize("name", sorted(REFERENCE_BN_BUFFERS))
def test_batch_norm_statistics_match_reference_buffers(name):
    assert _graph_facts(name, True)["statistics"] == REFERENCE_BN_BUFFERS[name]


@pytest.mark.parametrize("embedding_size", [512, 128])
def test_tiny_parameter_count_matches_its_layout(embedding_size):
    facts = _graph_facts("tiny", True, embedding_size)
    assert facts["trainable"] == _tiny_trainable_params(embedding_size)


@pytest.mark.parametrize("embedding_size", [512, 128])
def test_iresnet_lite_parameter_count_matches_its_layout(embedding_size):
    facts = _graph_facts("iresnet_lite", True, embedding_size)  # built at 112x112
    assert facts["trainable"] == _iresnet_lite_trainable_params(embedding_size, 112)
    # The docstring's figure: about 4.8 M at 64x64 with 512-d embeddings.
    assert _iresnet_lite_trainable_params(512, 64) == 4858880


def test_iresnet_feature_neck_has_no_trainable_scale():
    # The reference freezes features.weight at 1.0: the neck BN has beta but no gamma.
    names = _graph_facts("iresnet18", True)["trainable_names"]
    assert "iresnet18/features/beta" in names
    assert "iresnet18/features/gamma" not in names


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_variable_names_follow_the_convention(name):
    facts = _graph_facts(name, True)
    for variable_name in facts["trainable_names"]:
        assert variable_name.startswith(name + "/")
        assert variable_name.rsplit("/", 1)[-1] in WEIGHT_NAMES, variable_name
    assert {n.rsplit("/", 1)[-1] for n in facts["statistic_names"]} == STATISTIC_NAMES
    # Every moving statistic is non-trainable and registered as a moving average.
    assert facts["moving_averages"] == len(facts["statistic_names"])


# Inference graphs of the deeper iresnets share every line of code with iresnet18's; building
# them would only cost test time.
@pytest.mark.parametrize("name,is_training", [(name, True) for name in ALL_BACKBONES]
                         + [(name, False) for name in RUNNABLE])
def test_output_shape_and_update_ops(name, is_training):
    facts = _graph_facts(name, is_training)
    assert facts["shape"] == [None, 512]
    assert facts["dtype"] == tf.float32
    # Two moving averages per BN layer, registered only when training.
    expected_updates = len(facts["statistic_names"]) if is_training else 0
    assert facts["update_ops"] == expected_updates


@pytest.mark.parametrize("name", RUNNABLE)
def test_only_training_graphs_use_batch_statistics_and_dropout(name):
    # Frozen inference graphs must not normalise with batch statistics or drop units.
    inference, training = _graph_facts(name, False), _graph_facts(name, True)
    assert inference["batch_statistics_ops"] == [] and inference["dropout_ops"] == []
    assert training["batch_statistics_ops"] and training["dropout_ops"]


# ---------------------------------------------------------------------------------------------
# Running backbones


def test_tiny_forward_pass_at_batch_2():
    with tf.Graph().as_default():
        embeddings = get_backbone("tiny")(tf.constant(_faces(2)), True)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(embeddings)
    assert value.shape == (2, 512) and value.dtype == np.float32
    assert np.all(np.isfinite(value)) and np.std(value) > 0


@pytest.mark.parametrize("name,size", [("tiny", 32), ("tiny", 64), ("tiny", 160),
                                       ("iresnet_lite", 32), ("iresnet_lite", 64),
                                       ("iresnet_lite", 96)])
def test_size_flexible_backbones_run_at_other_sizes(name, size):
    # tiny pools globally, so the size may be unknown until run time; iresnet_lite's FC layer
    # is sized from the graph's static size.
    static = None if name == "tiny" else size
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, static, static, 3])
        embeddings = get_backbone(name)(images, False, embedding_size=64)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(embeddings, {images: _faces(2, size)})
    assert value.shape == (2, 64) and np.all(np.isfinite(value))


def test_tiny_keeps_half_precision_input_dtype():
    with tf.Graph().as_default():
        images = tf.constant(_faces(2, 32).astype(np.float16))
        embeddings = get_backbone("tiny")(images, True, embedding_size=32)
        assert embeddings.dtype == tf.float16
        assert all(v.dtype.base_dtype == tf.float32 for v in tf.global_variables())
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(embeddings)
    assert value.dtype == np.float16 and np.all(np.isfinite(value))


# mobilefacenet's case takes 12 s on 2 cores: make test-slow (its shapes and update ops stay in
# make test, test_output_shape_and_update_ops).
@pytest.mark.parametrize("name", [
    n if n != "mobilefacenet" else pytest.param(n, marks=pytest.mark.slow) for n in RUNNABLE])
def test_forward_passes_gradients_and_batch_norm_modes(name):
    """One graph per backbone (building and initialising them dominates the cost): a training
    and an inference tower sharing variables, with a non-default embedding size and dropout.

    Inference: an example's embedding ignores its batch mates. Training: it does not (which
    shows the check can fail). Gradients reach every trainable variable.
    """
    faces = _faces(3, seed=1)
    embedding_size = 96
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        images = tf.placeholder(tf.float32, [None, 112, 112, 3])
        with tf.variable_scope("net"):
            train = get_backbone(name)(images, True, embedding_size, dropout_rate=0.1)
        with tf.variable_scope("net", reuse=True):
            infer = get_backbone(name)(images, False, embedding_size, dropout_rate=0.1)
        assert train.shape.as_list() == infer.shape.as_list() == [None, embedding_size]
        variables = tf.trainable_variables()
        gradients = tf.gradients(tf.reduce_sum(tf.square(train)), variables)
        assert not [v.op.name for v, g in zip(variables, gradients) if g is None]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            _randomise_statistics(session)
            infer_ab = session.run(infer, {images: faces[[0, 1]]})
            infer_ac = session.run(infer, {images: faces[[0, 2]]})
            infer_a = session.run(infer, {images: faces[[0]]})
            train_ab = session.run(train, {images: faces[[0, 1]]})
            train_ac = session.run(train, {images: faces[[0, 2]]})
    for value in (infer_ab, train_ab):
        assert value.shape == (2, embedding_size) and value.dtype == np.float32
        assert np.all(np.isfinite(value)) and np.std(value) > 0
    np.testing.assert_allclose(infer_ab[0], infer_ac[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(infer_ab[0], infer_a[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(train_ab[0], train_ac[0], rtol=1e-2, atol=1e-2)


def test_training_update_ops_move_the_statistics():
    with tf.Graph().as_default():
        embeddings = get_backbone("tiny")(tf.constant(_faces(4, 32)), True)
        statistics = tf.get_collection(tf.GraphKeys.MOVING_AVERAGE_VARIABLES)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            before = session.run(statistics)
            session.run(embeddings)
            unchanged = session.run(statistics)
            session.run(updates)
            after = session.run(statistics)
    # Only the update ops move the statistics, and they move every one of them.
    for b, u, a in zip(before, unchanged, after):
        np.testing.assert_array_equal(b, u)
        assert not np.allclose(b, a)


# ---------------------------------------------------------------------------------------------
# Layers against numpy


def _reference_conv(x, kernel, stride, pads, groups):
    """Grouped convolution by definition: out[o] = sum over the group's inputs and the window."""
    (top, bottom), (left, right) = pads
    x = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])
    kh, kw, in_per_group, filters = kernel.shape
    out_per_group = filters // groups
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, groups, out_per_group))
    for u in range(kh):
        for v in range(kw):
            window = x[:, u:u + stride * (out_h - 1) + 1:stride,
                       v:v + stride * (out_w - 1) + 1:stride, :]
            window = window.reshape(window.shape[:3] + (groups, in_per_group))
            weights = kernel[u, v].reshape(in_per_group, groups, out_per_group)
            out += np.einsum("bhwgc,cgo->bhwgo", window, weights)
    return out.reshape(out.shape[:3] + (filters,))


def _same_pads(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("in_channels,filters,kernel_size,stride,padding,groups", [
    (3, 8, 3, 1, 1, 1),
    (3, 8, 3, 2, 1, 1),        # explicit padding differs from SAME here
    (4, 6, 3, 2, "SAME", 1),
    (4, 6, 1, 2, 0, 1),
    (6, 6, 3, 2, "VALID", 1),
    (8, 8, 3, 1, 1, 4),        # grouped, 2 inputs per group (mobilefacenet's conv2_dw)
    (8, 12, 3, 2, 1, 4),       # grouped, 2 inputs and 3 outputs per group
    (6, 6, 3, 2, 1, 6),        # depthwise
    (4, 8, 3, 1, "SAME", 4),   # depthwise with channel multiplier 2
    (5, 5, 7, 1, 0, 5),        # GDC: 7x7 depthwise to 1x1
])
@pytest.mark.parametrize("native_groups", [False, True])
def test_conv2d_matches_numpy(in_channels, filters, kernel_size, stride, padding, groups,
                              native_groups):
    x = np.random.RandomState(0).normal(size=(2, 7, 7, in_channels)).astype(np.float32)
    with tf.Graph().as_default():
        y = layers.conv2d(tf.constant(x), filters, kernel_size, stride, padding=padding,
                          use_bias=True, groups=groups, native_groups=native_groups, name="conv")
        kernel, bias = tf.trainable_variables()
        assert [kernel.op.name, bias.op.name] == ["conv/kernel", "conv/bias"]
        assert kernel.shape.as_list() == [kernel_size, kernel_size, in_channels // groups,
                                          filters]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            bias.load(np.arange(filters, dtype=np.float32), session)
            got, kernel_value = session.run([y, kernel])
    if padding == "SAME":
        pads = [_same_pads(7, kernel_size, stride)] * 2
    elif padding == "VALID":
        pads = [(0, 0)] * 2
    else:
        pads = [(padding, padding)] * 2
    expected = _reference_conv(x, kernel_value, stride, pads, groups) + np.arange(filters)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_grouped_conv2d_with_unknown_spatial_size():
    x = np.random.RandomState(0).normal(size=(2, 9, 5, 8)).astype(np.float32)
    with tf.Graph().as_default():
        inputs = tf.placeholder(tf.float32, [None, None, None, 8])
        y = layers.conv2d(inputs, 12, 3, 2, padding=1, groups=4)
        assert y.shape.as_list() == [None, None, None, 12]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            got, kernel = session.run([y, tf.trainable_variables()[0]], {inputs: x})
    np.testing.assert_allclose(got, _reference_conv(x, kernel, 2, [(1, 1)] * 2, 4),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [
    dict(filters=6, kernel_size=3, groups=4), dict(filters=8, kernel_size=0),
    dict(filters=8, kernel_size=3, padding="same"), dict(filters=8, kernel_size=3, padding=-1),
    dict(filters=8, kernel_size=3, init_mode="fan_avg"),
    dict(filters=8, kernel_size=3, strides=(1, 2), groups=2),
])
def test_conv2d_rejects_bad_arguments(kwargs):
    with tf.Graph().as_default():
        with pytest.raises(ValueError):
            layers.conv2d(tf.zeros([1, 8, 8, 8]), **kwargs)
        with pytest.raises(ValueError, match="NHWC"):
            layers.conv2d(tf.zeros([8, 8, 8]), 8, 3)


@pytest.mark.parametrize("groups,init_mode,expected_fan", [
    (1, "fan_in", 9 * 64), (1, "fan_out", 9 * 128), (64, "fan_in", 9), (64, "fan_out", 9 * 128),
])
def test_conv2d_he_initialisation(groups, init_mode, expected_fan):
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        layers.conv2d(tf.zeros([1, 8, 8, 64]), 128, 3, groups=groups, init_mode=init_mode)
        (kernel,) = tf.trainable_variables()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(kernel)
    assert abs(value.std() / np.sqrt(2.0 / expected_fan) - 1) < 0.05
    assert abs(value.mean()) < 0.1 * value.std()


def _reference_batch_norm(x, gamma, beta, mean, variance, epsilon=1e-5):
    return gamma * (x - mean) / np.sqrt(variance + epsilon) + beta


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (8, 6)])
def test_batch_norm_matches_numpy(shape):
    rng = np.random.RandomState(0)
    x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 6), rng.normal(size=6)
    moving_mean, moving_variance = rng.normal(size=6), rng.uniform(0.5, 2, 6)
    axes = tuple(range(len(shape) - 1))
    with tf.Graph().as_default():
        inputs = tf.constant(x)
        train = layers.batch_norm(inputs, True, momentum=0.8, name="bn")
        infer = layers.batch_norm(inputs, False, name="bn_infer")
        variables = {v.op.name: v for v in tf.global_variables()}
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            for prefix in ("bn", "bn_infer"):
                for key, value in [("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean),
                                   ("moving_variance", moving_variance)]:
                    variables[prefix + "/" + key].load(value.astype(np.float32), session)
            got_train, got_infer = session.run([train, infer])
            session.run(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
            new_mean, new_variance = session.run([variables["bn/moving_mean"],
                                                  variables["bn/moving_variance"]])
    # Training normalises with the biased batch variance ...
    expected = _reference_batch_norm(x, gamma, beta, x.mean(axes), x.var(axes))
    np.testing.assert_allclose(got_train, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        got_infer, _reference_batch_norm(x, gamma, beta, moving_mean, moving_variance),
        rtol=1e-4, atol=1e-4)
    # ... and folds the unbiased one into the moving average (PyTorch's convention).
    np.testing.assert_allclose(new_mean, 0.8 * moving_mean + 0.2 * x.mean(axes), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(new_variance, 0.8 * moving_variance + 0.2 * x.var(axes, ddof=1),
                               rtol=1e-5)


def test_batch_norm_without_scale_or_center():
    x = np.random.RandomState(0).normal(3.0, 2.0, size=(16, 4)).astype(np.float32)
    with tf.Graph().as_default():
        y = layers.batch_norm(tf.constant(x), True, scale=False, center=False, name="bn")
        assert tf.trainable_variables() == []
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            got = session.run(y)
    np.testing.assert_allclose(got, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), atol=1e-4)


@pytest.mark.parametrize("is_training", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (5, 4)])
def test_prelu_matches_numpy(shape, is_training):
    """Both graph forms (training's select, inference's relu form) give numpy's values."""
    x = np.random.RandomState(0).normal(size=shape).astype(np.float32)
    alpha = np.array([0.25, -0.5, 0.0, 2.0], np.float32)
    with tf.Graph().as_default() as graph:
        y = layers.prelu(tf.constant(x), name="act", is_training=is_training)
        # The inference form has no select: TF Lite fuses it into PRELU (int8: see layers.prelu).
        selects = [op for op in graph.get_operations() if op.type in ("Select", "SelectV2")]
        assert bool(selects) == is_training
        (variable,) = tf.trainable_variables()
        assert variable.op.name == "act/alpha"
        gradient = tf.gradients(tf.reduce_sum(y), variable)[0]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            np.testing.assert_array_equal(session.run(variable), np.full(4, 0.25, np.float32))
            variable.load(alpha, session)
            got, got_gradient = session.run([y, gradient])
    np.testing.assert_allclose(got, np.where(x > 0, x, alpha * x), rtol=1e-6)
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(got_gradient, np.minimum(x, 0).sum(axes), rtol=1e-5)


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_numpy(use_bias):
    x = np.random.RandomState(0).normal(size=(3, 300)).astype(np.float32)
    with tf.Graph().as_default():
        y = layers.dense(tf.constant(x), 200, use_bias=use_bias, name="fc")
        variables = tf.trainable_variables()
        names = [v.op.name for v in variables]
        assert names == (["fc/kernel", "fc/bias"] if use_bias else ["fc/kernel"])
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            if use_bias:
                variables[1].load(np.linspace(-1, 1, 200).astype(np.float32), session)
            got, kernel = session.run([y, variables[0]])
    expected = x @ kernel + (np.linspace(-1, 1, 200) if use_bias else 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # PyTorch nn.Linear's default: uniform in ±1/sqrt(fan_in).
    limit = 1 / np.sqrt(300)
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit


def test_dropout():
    x = np.ones((200, 100), np.float32)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        inputs = tf.constant(x)
        assert layers.dropout(inputs, 0.5, False) is inputs
        assert layers.dropout(inputs, 0.0, True) is inputs
        dropped = layers.dropout(inputs, 0.25, True)
        with tf.Session() as session:
            value = session.run(dropped)
        for rate in (-0.1, 1.0):
            with pytest.raises(ValueError):
                layers.dropout(inputs, rate, True)
    assert set(np.unique(value)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((value == 0).mean() - 0.25) < 0.02
