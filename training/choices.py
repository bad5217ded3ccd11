"""The values each setting of a run may take, for the command line to offer: the names in
model/'s registries and the estimator factory's options, read here so that the command line
(estimator_main.py) talks to training/ only and a new backbone, head or optimizer shows in
``--help`` without an edit there."""

from model import backbones, distillation, heads, optimization
from runtime import estimator_factory
from training.params import EVAL_PROTOCOLS, MODES, NO_HEAD

BACKBONES = sorted(backbones.BACKBONES)
HEADS = [*sorted(heads.HEADS), NO_HEAD]
DISTILL_LOSSES = list(distillation.LOSSES)
OPTIMIZERS = list(optimization.OPTIMIZERS)
SCHEDULES = list(optimization.SCHEDULES)
DEVICES = list(estimator_factory.DEVICES)
PRECISIONS = list(estimator_factory.PRECISIONS)
NPU_PRECISION_MODES = list(estimator_factory.NPU_PRECISION_MODES)
DISTRIBUTIONS = list(estimator_factory.DISTRIBUTIONS)

__all__ = ["BACKBONES", "DEVICES", "DISTILL_LOSSES", "DISTRIBUTIONS", "EVAL_PROTOCOLS", "HEADS",
           "MODES", "NO_HEAD", "NPU_PRECISION_MODES", "OPTIMIZERS", "PRECISIONS", "SCHEDULES"]
