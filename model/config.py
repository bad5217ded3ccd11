"""Small typed, self-validating settings, one per concern: backbone, optimisation (where the
graph runs is ``runtime.config.RuntimeConfig``'s).

Each is a frozen namedtuple whose constructor checks its values and resolves defaults, so a
value that is wrong is refused where it enters (``training.params.build_params``, before anything
is written) and every later reader can trust it. The loss head needs no tuple of its own: a
built ``model.heads.Head`` is one (it validates in its constructor, resolves the head's default
margin and scale, and ``head.config`` lists what it runs with); ``model_fn_builder`` receives it
built, the way insightface hands its margin loss to Partial FC.

A new hyperparameter touches its flag, its field here and the line that uses it.
"""

import collections
import math

from data_tools.checks import check as _check
from data_tools.checks import is_int as _is_int
from data_tools.checks import is_real as _is_number
from data_tools.checks import one_of as _one_of
from model import backbones, optimization

# The precisions the backbone computes in; which device runs which is runtime.config's.
PRECISIONS = ("fp32", "bf16", "fp16")


class BackboneConfig(collections.namedtuple(
        "BackboneConfig", ["name", "embedding_size", "image_size", "dropout_rate",
                           "precision", "grayscale"])):
    """The network: registry name, embedding size, input side (default: the backbone's own),
    dropout before the embedding, the compute precision of the backbone (``bf16`` runs it
    in bfloat16; head, loss and proxies stay float32), and ``grayscale``: every input face is
    turned to gray inside the model (training, evaluation, every export), for models trained
    on grayscale faces, so that colour photos reach them as their training faces looked."""

    __slots__ = ()

    def __new__(cls, name, embedding_size=512, image_size=None, dropout_rate=0.0,
                precision="fp32", grayscale=False):
        backbones.get_backbone(name)  # ValueError listing the valid names
        image_size = backbones.default_image_size(name) if image_size is None else image_size
        backbones.check_image_size(name, image_size)
        _check(_is_int(embedding_size) and embedding_size > 0,
               f"embedding_size must be a positive integer, got {embedding_size!r}")
        _check(_is_number(dropout_rate) and 0.0 <= dropout_rate < 1.0,
               f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        _one_of(precision, PRECISIONS, "precision")
        _check(isinstance(grayscale, bool), f"grayscale must be true or false, got {grayscale!r}")
        return super().__new__(cls, name, int(embedding_size), int(image_size),
                               float(dropout_rate), precision, grayscale)


class OptimizationConfig(collections.namedtuple(
        "OptimizationConfig", ["optimizer", "learning_rate", "momentum", "weight_decay",
                               "total_steps", "warmup_steps", "schedule", "decay_boundaries",
                               "decay_factor"])):
    """Optimizer, learning-rate schedule (``model.optimization``) and weight decay."""

    __slots__ = ()

    def __new__(cls, optimizer="momentum", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
                total_steps=1000, warmup_steps=0, schedule="piecewise",
                decay_boundaries=(0.5, 0.7, 0.9), decay_factor=0.1):
        _one_of(optimizer, optimization.OPTIMIZERS, "optimizer")
        _one_of(schedule, optimization.SCHEDULES, "schedule")
        _check(_is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0,
               f"learning_rate must be positive, got {learning_rate!r}")
        _check(_is_number(momentum) and 0.0 <= momentum < 1.0,
               f"momentum must be in [0, 1), got {momentum!r}")
        _check(_is_number(weight_decay) and 0.0 <= weight_decay < 1.0,
               f"weight_decay must be in [0, 1), got {weight_decay!r}")
        _check(_is_int(total_steps) and total_steps > 0,
               f"the total of training steps must be positive, got {total_steps!r}")
        _check(_is_int(warmup_steps) and 0 <= warmup_steps < total_steps,
               f"warmup_steps must be in [0, total steps = {total_steps!r}), got {warmup_steps!r}")
        boundaries = tuple(float(b) for b in decay_boundaries)
        _check(all(0.0 < b < 1.0 for b in boundaries) and list(boundaries) == sorted(boundaries),
               "decay_boundaries must be increasing fractions in (0, 1), got "
               f"{list(decay_boundaries)}")
        _check(_is_number(decay_factor) and 0.0 < decay_factor <= 1.0,
               f"decay_factor must be in (0, 1], got {decay_factor!r}")
        return super().__new__(cls, optimizer, float(learning_rate), float(momentum),
                               float(weight_decay), int(total_steps), int(warmup_steps),
                               schedule, boundaries, float(decay_factor))
