"""Learning-rate schedules, optimizers and weight decay.

The paper's face setting: SGD with momentum 0.9, weight decay 5e-4, lr 0.1 divided by 10 at 50%,
70% and 90% of training. A linear warm-up in front keeps gamma = 256 from blowing up in the first
steps, where users of the seed saw NaN or stalls.
"""

import math

import tensorflow.compat.v1 as tf

SCHEDULES = ("piecewise", "cosine", "constant")
OPTIMIZERS = ("momentum", "adam", "sgd")

# Variables whose last name component is one of these get weight decay: convolution and dense
# kernels and the class proxies. Batch-norm gamma/beta, PReLU alpha and biases do not (decaying
# them only fights the normalisation; insightface and the paper's codebases leave them alone).
# Partial FC's class-major ``class_proxies`` are not listed: decaying the whole matrix would make
# every step's update dense; the rows a step sampled are decayed instead (``rows`` below).
DECAYED_VARIABLE_NAMES = ("kernel", "proxies")


def learning_rate_schedule(global_step, base_learning_rate, total_steps, warmup_steps=0,
                           schedule="piecewise", decay_boundaries=(0.5, 0.7, 0.9),
                           decay_factor=0.1, end_learning_rate=0.0):
    """Learning rate tensor at ``global_step``.

    Linear warm-up from ~0 to ``base_learning_rate`` over ``warmup_steps``, then:
    * ``piecewise``: multiplied by ``decay_factor`` at each fraction of ``total_steps`` in
      ``decay_boundaries``;
    * ``cosine``: half-cosine from the base rate to ``end_learning_rate`` at ``total_steps``;
    * ``constant``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    step = tf.cast(global_step, tf.float32)
    base = float(base_learning_rate)
    if schedule == "piecewise":
        boundaries = [int(math.floor(f * total_steps)) for f in decay_boundaries]
        if sorted(boundaries) != boundaries or any(not 0 < f < 1 for f in decay_boundaries):
            raise ValueError("decay_boundaries must be increasing fractions in (0, 1), got "
                             f"{decay_boundaries}")
        values = [base * decay_factor ** i for i in range(len(boundaries) + 1)]
        # piecewise_constant keeps values[i] while step <= boundary: shift by one so that the
        # step at exactly 50% already runs at the decayed rate.
        lr = tf.train.piecewise_constant(tf.cast(global_step, tf.int64),
                                         [tf.constant(b - 1, tf.int64) for b in boundaries],
                                         values)
    elif schedule == "cosine":
        span = float(max(total_steps - warmup_steps, 1))
        progress = tf.clip_by_value((step - warmup_steps) / span, 0.0, 1.0)
        lr = end_learning_rate + 0.5 * (base - end_learning_rate) * (
            1.0 + tf.cos(math.pi * progress))
    else:
        lr = tf.constant(base)
    if warmup_steps > 0:
        warmup_lr = base * (step + 1.0) / float(warmup_steps)
        lr = tf.where(step < warmup_steps, warmup_lr, lr)
    return tf.identity(lr, name="learning_rate")


def build_optimizer(name, learning_rate, momentum=0.9):
    """The optimizer by name: ``momentum`` (default), ``adam`` or ``sgd``."""
    if name == "momentum":
        return tf.train.MomentumOptimizer(learning_rate, momentum=momentum)
    if name == "adam":
        return tf.train.AdamOptimizer(learning_rate)
    if name == "sgd":
        return tf.train.GradientDescentOptimizer(learning_rate)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def is_decayed(variable):
    """True for variables that get weight decay (see DECAYED_VARIABLE_NAMES)."""
    name = variable.op.name.split("/")[-1]
    # Partitioned variables are named like ".../proxies/part_0".
    if name.startswith("part_"):
        name = variable.op.name.split("/")[-2]
    return name in DECAYED_VARIABLE_NAMES


def weight_decay_loss(weight_decay, variables=None, rows=()):
    """``weight_decay`` × ½‖w‖² over decayed variables and ``rows``, float32.

    Its gradient is ``weight_decay · w``: the weight decay of MXNet/PyTorch SGD, which is what
    the paper's 5e-4 means. ``rows``: tensors gathered from a variable (the proxy rows a Partial
    FC step sampled, ``HeadOutput.sampled_rows``), decayed where gathered: their gradient stays
    sparse, so the step updates those rows only (as insightface's Partial FC v1 did; its
    PartialFC_V2 decays every row of its shard densely, see ``model/heads.py``).
    """
    if variables is None:
        variables = tf.trainable_variables()
    decayed = [tf.cast(v, tf.float32) for v in variables if is_decayed(v)]
    decayed += [tf.cast(r, tf.float32) for r in rows]
    if weight_decay <= 0 or not decayed:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in decayed])
