"""The values each setting of a run may take, for the command line to offer: the names in
model/'s registries and the estimator factory's options, read here so that the command line
(estimator_main.py) talks to training/ only and a new backbone, head or optimizer shows in
``--help`` without an edit there."""

from data_tools.input_config import Degradations
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
# The heads' shared hyperparameters and declared options (heads.HeadOption), for the flags.
MARGIN_DEFAULTS = heads.defaults_text("margin")
GAMMA_DEFAULTS = heads.defaults_text("gamma")
SCALE_USERS = ", ".join(heads.users_of("scale"))
# The training degradations' defaults (all off), for the flags.
DEGRADATION_DEFAULTS = Degradations()


def head_names():
    """The registered heads and ``none``, read when the flags are defined (as
    :func:`head_options`)."""
    return [*sorted(heads.HEADS), NO_HEAD]


def head_options():
    """``(name, default, help)`` of each option the registered heads declare, read when the
    flags are defined (a head registered later, a test's, is there too)."""
    return [(name, declared[0][1].default,
             f"{', '.join(head for head, _ in declared)}: {declared[0][1].help} "
             f"(default {declared[0][1].default}).")
            for name, declared in heads.declared_options().items()]


__all__ = ["BACKBONES", "DEGRADATION_DEFAULTS", "DEVICES", "DISTILL_LOSSES", "DISTRIBUTIONS",
           "EVAL_PROTOCOLS", "GAMMA_DEFAULTS", "HEADS", "MARGIN_DEFAULTS", "MODES", "NO_HEAD",
           "NPU_PRECISION_MODES", "OPTIMIZERS", "PRECISIONS", "SCALE_USERS", "SCHEDULES",
           "head_names", "head_options"]
