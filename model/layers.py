"""Graph-mode layers on ``tf.get_variable`` and ``tf.nn``: the backbones' building blocks.

Keras and ``tf.layers`` are avoided on purpose: their variable naming, update-op handling and
deprecation status differ between TF 1.15 and 2.15, while ``tf.get_variable`` + ``tf.nn`` graphs
behave the same in both and on the Ascend NPU. Everything here is NHWC.

Variables are always float32 (the master copy the optimizer updates); a layer fed half or
bfloat16 activations casts its weights to the activation dtype, so a backbone's output has the
dtype of its input.

Variable names are a contract with the optimizer, which decays only ``kernel`` variables:

==================  ============================================================
``kernel``          convolution and dense weights
``bias``            convolution and dense biases
``gamma``/``beta``  batch-norm scale and offset
``moving_mean``,    batch-norm population statistics (not trainable, updated through
``moving_variance`` ``tf.GraphKeys.UPDATE_OPS``)
``alpha``           PReLU slopes
==================  ============================================================
"""

import functools
import math

import tensorflow.compat.v1 as tf

# TF's truncated normal cuts at two standard deviations, which shrinks the standard deviation
# by this factor; variance scaling divides it back out (as tf.initializers.variance_scaling does)
# so the variance is the one He et al. derive.
_TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978

_INIT_MODES = ("fan_in", "fan_out")
_INIT_DISTRIBUTIONS = ("truncated_normal", "uniform")


def _pair(value, what):
    """``3`` → ``(3, 3)``; a pair passes through; anything else is an error."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")


def _check_training_flag(is_training):
    # A tensor here would silently pick one branch at graph construction time; the fused
    # batch-norm kernel and dropout need the mode as a Python bool.
    if not isinstance(is_training, bool):
        raise TypeError("is_training must be a Python bool (the estimator mode decides it), "
                        f"got {is_training!r}")


def _static_channels(x, layer):
    channels = x.shape[-1].value if hasattr(x.shape[-1], "value") else x.shape[-1]
    if channels is None:
        raise ValueError(f"{layer}: the channel dimension of {x.name} must be static, got shape "
                         f"{x.shape}")
    return int(channels)


def variance_scaling(fan, scale=2.0, distribution="truncated_normal"):
    """Initialiser with variance ``scale / fan`` (He et al. 2015 with ``scale=2``).

    The fan is passed explicitly rather than inferred from the variable's shape because TF's
    inference is wrong for grouped and depthwise kernels; PyTorch's ``kaiming_normal_`` and
    ``nn.Linear``'s default (``scale=1/3``, uniform) are the references the backbones follow.
    """
    if fan <= 0:
        raise ValueError(f"fan must be positive, got {fan}")
    if distribution == "truncated_normal":
        stddev = math.sqrt(scale / fan) / _TRUNCATED_NORMAL_STD_CORRECTION
        return tf.truncated_normal_initializer(stddev=stddev)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * scale / fan)
        return tf.random_uniform_initializer(-limit, limit)
    raise ValueError(f"distribution must be one of {_INIT_DISTRIBUTIONS}, got {distribution!r}")


def _weight(name, shape, initializer):
    return tf.get_variable(name, shape=shape, dtype=tf.float32, initializer=initializer,
                           trainable=True)


def _as_dtype_of(variable, x):
    dtype = x.dtype.base_dtype
    if variable.dtype.base_dtype == dtype:
        return variable
    return tf.cast(variable, dtype)


def _pad_for_conv(x, padding, kernel, strides):
    """Resolve ``padding`` to ``(padded input, "SAME" | "VALID")``.

    An int (or pair) is explicit symmetric zero padding, as PyTorch's ``Conv2d(padding=p)``.
    It differs from TF's "SAME" for strided convolutions on even inputs ("SAME" pads only
    bottom/right), and the reference architectures are defined with explicit padding. Where the
    two coincide (stride 1, kernel 2p+1) "SAME" is used to avoid a pad op.
    """
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError("padding must be 'SAME', 'VALID' or an int/pair of ints, "
                             f"got {padding!r}")
        return x, padding
    pad_h, pad_w = _pair(padding, "padding")
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    if strides == (1, 1) and kernel == (2 * pad_h + 1, 2 * pad_w + 1):
        return x, "SAME"
    if pad_h or pad_w:
        x = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    return x, "VALID"


def _dims_for_reshape(x):
    """Static dimensions where known, dynamic ones otherwise (keeps shapes static for NPU)."""
    static = x.shape.as_list()
    if None not in static:
        return static
    dynamic = tf.shape(x)
    return [dim if dim is not None else dynamic[i] for i, dim in enumerate(static)]


# Grouped/depthwise convolutions of bfloat16 activations compute in float32 (see conv2d);
# benchmarks.train_ab turns it off to measure what it gains.
BF16_GROUPED_CONV_IN_FLOAT32 = True


@functools.lru_cache(maxsize=None)  # asked once per process
def grouped_conv2d_supported():
    """Whether this TensorFlow trains a grouped ``Conv2D`` (kernel depth < input depth) on CPU.

    TF 2.x with oneDNN does, forward and backward; TF 2.x with ``TF_ENABLE_ONEDNN_OPTS=0``
    fails ("Gradients for grouped convolutions are not supported on CPU"): asked once, of a
    tiny graph, and remembered. TF 1.15 is not asked: its CPU kernel aborts the process.
    """
    if int(tf.__version__.split(".")[0]) < 2:
        return False
    graph = tf.Graph()
    with graph.as_default(), tf.device("/cpu:0"):
        x = tf.ones([1, 3, 3, 4])
        kernel = tf.ones([3, 3, 2, 4])
        y = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        grads = tf.gradients(tf.reduce_sum(y), [x, kernel])
    try:
        with tf.Session(graph=graph) as session:
            session.run(grads)
        return True
    except (tf.errors.OpError, ValueError):
        return False


def conv2d(x, filters, kernel_size, strides=1, padding="SAME", use_bias=False, groups=1,
           init_mode="fan_in", init_scale=2.0, native_groups=False, name=None):
    """2-D convolution of NHWC ``x``; returns ``[B, H', W', filters]`` in ``x``'s dtype.

    Args:
      x: 4-D NHWC tensor with a static channel count.
      filters: number of output channels.
      kernel_size, strides: int or (height, width) pair.
      padding: "SAME", "VALID", or an int / pair: explicit symmetric zero padding as in
        PyTorch's ``Conv2d``.
      use_bias: add a ``bias`` variable (zeros).
      groups: grouped convolution; ``groups == in_channels`` is a depthwise convolution (with a
        channel multiplier ``filters // in_channels``). Both channel counts must be divisible.
      init_mode, init_scale: He initialisation of the ``kernel`` with ``init_scale / fan``
        variance, fan "fan_in" (kh·kw·in/groups) or "fan_out" (kh·kw·filters), PyTorch's
        definitions for grouped kernels.
      native_groups: run a grouped (not depthwise) convolution as one grouped ``Conv2D`` where
        this TensorFlow trains it (:func:`grouped_conv2d_supported`); the backbones ask for it
        in training graphs only.
      name: variable scope.

    The ``kernel`` variable is ``[kh, kw, in_channels // groups, filters]`` for every ``groups``
    (TF's grouped-convolution layout, PyTorch's weight transposed). Grouped convolutions run as a
    depthwise convolution with multiplier ``filters // groups`` followed by a sum over each
    group's inputs, because TF 1.15's CPU kernels and the NPU have no grouped ``Conv2D`` and
    exporters (TF Lite, ONNX) handle a depthwise convolution everywhere. In training on TF 2.x
    with oneDNN, ``native_groups`` makes it one grouped ``Conv2D`` (oneDNN's grouped kernels),
    the same function of the same variable: MobileFaceNet's 64-group ``conv2_dw`` as depthwise
    + sum took 16% of a training step (the multiplier-2 depthwise convolution, its two
    backward products, the sum and the sum's gradient), more than any other layer.
    """
    kernel_h, kernel_w = _pair(kernel_size, "kernel_size")
    stride_h, stride_w = _pair(strides, "strides")
    if min(kernel_h, kernel_w, stride_h, stride_w, filters) < 1:
        raise ValueError("conv2d: filters, kernel_size and strides must be positive, got "
                         f"{filters}, {kernel_size!r}, {strides!r}")
    if init_mode not in _INIT_MODES:
        raise ValueError(f"init_mode must be one of {_INIT_MODES}, got {init_mode!r}")
    if x.shape.ndims != 4:
        raise ValueError(f"conv2d takes NHWC [B, H, W, C] tensors, got shape {x.shape}")
    in_channels = _static_channels(x, "conv2d")
    if groups < 1 or in_channels % groups or filters % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both the input channels "
                         f"({in_channels}) and filters ({filters})")
    if groups > 1 and stride_h != stride_w:
        raise ValueError("conv2d: grouped convolutions need equal strides, got "
                         f"{(stride_h, stride_w)}")
    in_per_group = in_channels // groups
    out_per_group = filters // groups
    fan = kernel_h * kernel_w * (in_per_group if init_mode == "fan_in" else filters)

    with tf.variable_scope(name, default_name="conv2d"):
        kernel = _weight("kernel", [kernel_h, kernel_w, in_per_group, filters],
                         variance_scaling(fan, init_scale))
        # Grouped and depthwise convolutions of bfloat16 activations run in float32: oneDNN's
        # bf16 depthwise backward kernels (avx512_bf16, no AMX) took twice their fp32 time, and
        # these convolutions are memory-bound, so bf16 saves nothing there; the casts in and out
        # cost less (MobileFaceNet bf16 step 1.40x, docs/PERFORMANCE.md).
        output_dtype = x.dtype.base_dtype
        if groups > 1 and output_dtype == tf.bfloat16 and BF16_GROUPED_CONV_IN_FLOAT32:
            x = tf.cast(x, tf.float32)
        x, tf_padding = _pad_for_conv(x, padding, (kernel_h, kernel_w), (stride_h, stride_w))
        kernel = _as_dtype_of(kernel, x)
        strides_nhwc = [1, stride_h, stride_w, 1]
        if groups == 1 or (native_groups and in_per_group > 1 and grouped_conv2d_supported()):
            y = tf.nn.conv2d(x, kernel, strides_nhwc, tf_padding)
        else:
            # Depthwise filter [kh, kw, in_channels, out_per_group]: input channel g·ipg + j
            # feeds output g·opg + k with weight kernel[:, :, j, g·opg + k].
            depthwise = tf.reshape(kernel, [kernel_h, kernel_w, in_per_group, groups,
                                            out_per_group])
            depthwise = tf.transpose(depthwise, [0, 1, 3, 2, 4])
            depthwise = tf.reshape(depthwise, [kernel_h, kernel_w, in_channels, out_per_group])
            y = tf.nn.depthwise_conv2d(x, depthwise, strides_nhwc, tf_padding)
            if in_per_group > 1:
                # Depthwise output channel (g·ipg + j)·opg + k: sum over j.
                dims = _dims_for_reshape(y)[:3]
                y = tf.reshape(y, dims + [groups, in_per_group, out_per_group])
                y = tf.reduce_sum(y, axis=4)
                y = tf.reshape(y, dims + [filters])
        if use_bias:
            bias = _weight("bias", [filters], tf.zeros_initializer())
            y = tf.nn.bias_add(y, _as_dtype_of(bias, y))
        return tf.cast(y, output_dtype) if y.dtype.base_dtype != output_dtype else y


def _moving_statistic(name, channels, initializer):
    """A batch-norm population statistic, created as ``tf.layers`` batch norm creates it.

    Each replica of a mirrored (multi-device) run updates it from its own batch inside the
    replica context. Without an aggregation TF 1.15 refuses that update ("You must specify an
    aggregation method to update a MirroredVariable in Replica Context"), so ``--distribution=
    mirrored`` could not train; ``ON_READ`` + ``MEAN`` keeps one copy per replica, updated
    locally, and reads (checkpoints, evaluation) take their mean. Outside a distribution
    strategy it is an ordinary variable.
    """
    return tf.get_variable(
        name, [channels], tf.float32, initializer, trainable=False,
        collections=[tf.GraphKeys.GLOBAL_VARIABLES, tf.GraphKeys.MOVING_AVERAGE_VARIABLES],
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.MEAN)


def batch_norm(x, is_training, momentum=0.9, epsilon=1e-5, scale=True, center=True, name=None):
    """Batch normalisation of NHWC ``[B, H, W, C]`` or feature ``[B, C]`` tensors.

    Training (``is_training=True``) normalises with the batch statistics and adds the
    moving-average updates ``moving = momentum·moving + (1 − momentum)·batch`` to
    ``tf.GraphKeys.UPDATE_OPS`` (the train op must depend on them). The variance folded into
    ``moving_variance`` is the unbiased one, as PyTorch does, so ``momentum=0.9`` here is
    PyTorch's ``momentum=0.1``. Inference normalises with ``moving_mean`` / ``moving_variance``,
    so each example's output is independent of the rest of the batch.

    ``scale=False`` fixes gamma at 1 without a variable (the insightface ``features`` neck);
    ``center=False`` fixes beta at 0. Statistics and affine parameters are float32 whatever the
    activation dtype (the fused kernel takes half/bfloat16 ``x`` with float32 parameters).

    Note: TF 1.15 raises ``epsilon`` to at least 1.001e-5 inside ``tf.nn.fused_batch_norm``
    (a cuDNN limit); the difference from 1e-5 is immaterial.
    """
    _check_training_flag(is_training)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    ndims = x.shape.ndims
    if ndims not in (2, 4):
        raise ValueError(f"batch_norm takes [B, H, W, C] or [B, C] tensors, got shape {x.shape}")
    channels = _static_channels(x, "batch_norm")

    with tf.variable_scope(name, default_name="batch_norm"):
        if scale:
            gamma = _weight("gamma", [channels], tf.ones_initializer())
        else:
            gamma = tf.ones([channels], tf.float32)
        if center:
            beta = _weight("beta", [channels], tf.zeros_initializer())
        else:
            beta = tf.zeros([channels], tf.float32)
        moving_mean = _moving_statistic("moving_mean", channels, tf.zeros_initializer())
        moving_variance = _moving_statistic("moving_variance", channels, tf.ones_initializer())

        # The fused kernel is 4-D only; features [B, C] become [B, 1, 1, C], which normalises
        # over the batch exactly as BatchNorm1d does.
        inputs = tf.reshape(x, [-1, 1, 1, channels]) if ndims == 2 else x
        # Batch statistics in training whatever the dtype (bfloat16 too: the fused kernel takes
        # bf16 activations with float32 scale and offset).
        if is_training:
            y, batch_mean, batch_variance = tf.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=epsilon, is_training=True)
            decay = 1.0 - momentum
            update_mean = tf.assign_sub(moving_mean, (moving_mean - batch_mean) * decay,
                                        name="update_moving_mean")
            update_variance = tf.assign_sub(
                moving_variance, (moving_variance - batch_variance) * decay,
                name="update_moving_variance")
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update_mean)
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update_variance)
        else:
            y, _, _ = tf.nn.fused_batch_norm(
                inputs, gamma, beta, mean=moving_mean, variance=moving_variance,
                epsilon=epsilon, is_training=False)
        if ndims == 2:
            y = tf.reshape(y, [-1, channels])
        return y


def prelu(x, name=None, is_training=True):
    """Parametric ReLU, ``max(x, 0) + alpha·min(x, 0)``, one ``alpha`` per channel (init 0.25,
    PyTorch's ``nn.PReLU`` default). ``is_training`` picks the graph form, never the values."""
    channels = _static_channels(x, "prelu")
    with tf.variable_scope(name, default_name="prelu"):
        alpha = _weight("alpha", [channels], tf.constant_initializer(0.25))
        alpha = _as_dtype_of(alpha, x)
        if is_training and x.dtype.base_dtype != tf.bfloat16:
            # One select forward and backward: on CPU this trains about twice as fast as the
            # max(x, 0) + alpha·min(x, 0) formulation, whose gradients need two
            # compare-and-selects.
            return tf.where(x >= 0, x, alpha * x)
        # bfloat16 (training too): TensorFlow's CPU Select has no vectorised bfloat16 kernel; its
        # forward and backward selects took 46% of a MobileFaceNet bf16 training step (13x their
        # fp32 time), which made bf16 slower than fp32. The relu form runs on oneDNN's bf16
        # eltwise kernels and multiplies, which are.
        # Evaluation, serving and every export: relu(x) - alpha·relu(-x), the same values in a
        # form TF Lite fuses into its PRELU op. The select form's int8 quantisation ties one
        # scale to both of its inputs and its output, which clips one side: an iresnet_lite
        # student lost 4 points of LFW accuracy in int8 (cosine 0.78 to float) through it.
        return tf.nn.relu(x) - alpha * tf.nn.relu(-x)


def dense(x, units, use_bias=True, init_mode="fan_in", init_scale=1.0 / 3.0,
          init_distribution="uniform", name=None):
    """Fully connected layer on ``[B, in]``: ``x @ kernel (+ bias)``, kernel ``[in, units]``.

    The default initialiser is PyTorch's ``nn.Linear`` one, uniform with variance
    1 / (3·fan_in); the bias starts at zero.
    """
    if x.shape.ndims != 2:
        raise ValueError(f"dense takes [B, features] tensors, got shape {x.shape}")
    if init_mode not in _INIT_MODES:
        raise ValueError(f"init_mode must be one of {_INIT_MODES}, got {init_mode!r}")
    in_units = _static_channels(x, "dense")
    fan = in_units if init_mode == "fan_in" else units
    with tf.variable_scope(name, default_name="dense"):
        kernel = _weight("kernel", [in_units, units],
                         variance_scaling(fan, init_scale, init_distribution))
        y = tf.matmul(x, _as_dtype_of(kernel, x))
        if use_bias:
            bias = _weight("bias", [units], tf.zeros_initializer())
            y = tf.nn.bias_add(y, _as_dtype_of(bias, y))
        return y


def dropout(x, rate, is_training):
    """Inverted dropout in training; the identity (no op in the graph) otherwise, so
    inference and frozen graphs carry no random ops."""
    _check_training_flag(is_training)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    if not is_training or rate == 0.0:
        return x
    return tf.nn.dropout(x, rate=rate)


def flatten(x):
    """``[B, ...]`` → ``[B, prod(...)]`` with a static feature size (required by ``dense``)."""
    size = 1
    for dim in x.shape.as_list()[1:]:
        if dim is None:
            raise ValueError(f"flatten needs static non-batch dimensions, got shape {x.shape}")
        size *= dim
    return tf.reshape(x, [-1, size])


def multiple_size_error(image_size, multiple, minimum):
    """The size rule of backbones with stride-2 stages: ``None`` if ``image_size`` is a multiple
    of ``multiple`` and at least ``minimum``, else the reason (for ``check_image_size``)."""
    if image_size < minimum or image_size % multiple:
        return (f"needs an image size that is a multiple of {multiple} and at least {minimum}, got "
                f"{image_size}")
    return None


def check_image_batch(images, backbone, size_error, static_size=True):
    """Validate a backbone's input: float NHWC with a static channel count.

    ``size_error(image_size)`` is the backbone's rule (``None`` when the size is fine, else the
    reason); it is applied to static spatial sizes. ``static_size`` backbones (an FC layer over
    the last feature map) also reject unknown spatial sizes.
    """
    if images.shape.ndims != 4:
        raise ValueError(f"{backbone}: images must be [batch, height, width, channels], got shape "
                         f"{images.shape}")
    if not images.dtype.is_floating:
        raise ValueError(f"{backbone}: images must be float (normalised pixels), got "
                         f"{images.dtype.name}")
    _static_channels(images, backbone)
    height, width = images.shape.as_list()[1:3]
    if height is None or width is None:
        if static_size:
            raise ValueError(f"{backbone}: needs a static image size, got shape {images.shape}")
        return
    if height != width:
        raise ValueError(f"{backbone}: images must be square, got {height}x{width}")
    reason = size_error(height)
    if reason is not None:
        raise ValueError(f"{backbone}: {reason}")
