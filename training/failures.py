"""The failures of a run that its user can act on, as types, each with its one line.

TensorFlow reports them as generic errors whose message is the only clue (a restore's missing
key, the finite-loss guard's assertion, a full disk); this module is the one place that reads
those messages, next to the code that raises them, so the command line catches types:
:data:`SETTINGS_ERRORS` before the run (bad flags or records: a usage error), :class:`RunFailure`
during it (exit 1, its line logged).
"""

import contextlib
import errno
import re

import tensorflow.compat.v1 as tf

from data_tools import manifest
from model import hooks, model_fn
from runtime import estimator_factory
from training import run_record
from training.params import ParamsError

# Settings that contradict each other, the records or the machine: told before anything runs.
SETTINGS_ERRORS = (ParamsError, manifest.ManifestError, estimator_factory.DeviceUnavailableError,
                   run_record.RecordMismatchError)

_MISSING_KEY = re.compile(r"Key \S+ not found in checkpoint")
_NON_FINITE = re.compile(re.escape(model_fn.NON_FINITE_LOSS_MESSAGE) + r"\]\s*\[(\d+)\]")
_NO_SPACE = "No space left on device"


class RunFailure(Exception):
    """A run stopped for a reason its user can act on; ``str()`` is the one line to print."""


class CheckpointMismatchError(RunFailure):
    """evaluate/export: the checkpoint holds another network than the settings build."""

    def __init__(self, mode, model_dir, missing):
        super().__init__(f"{mode}: the checkpoint in {model_dir} is not this network ({missing})."
                         f" Run --mode={mode} with the training run's settings (its flags.txt),"
                         " without contradicting flags.")
        self.missing = missing


class NonFiniteLossError(RunFailure):
    """The finite-loss guard stopped training before the step's update."""

    def __init__(self, step, last_checkpoint):
        super().__init__(f"training stopped: the loss became NaN/Inf at global step {step}; no "
                         f"update was applied. Last good checkpoint: {last_checkpoint}. Lower "
                         "--learning_rate or --gamma, or lengthen --warmup_steps.")
        self.step, self.last_checkpoint = step, last_checkpoint


class DiskFullError(RunFailure):
    """The model directory's disk is full; the last checkpoint is intact."""

    def __init__(self, model_dir, last_checkpoint):
        super().__init__(f"training stopped: cannot write to {model_dir} ({_NO_SPACE}). Last "
                         f"good checkpoint: {last_checkpoint}. Free space and re-run the same "
                         "command to resume.")


class WorkerLostFailure(RunFailure):
    """A synchronous multi-worker job lost a worker (or waited too long for one)."""

    def __init__(self, why, last_checkpoint):
        super().__init__(f"multi-worker training stopped: {why}. Every worker of the all-reduce "
                         "is needed for each step: restart all of them with the same command and "
                         f"TF_CONFIG; they resume from the last checkpoint, {last_checkpoint}.")


def _message(error):
    return getattr(error, "message", None) or str(error)


@contextlib.contextmanager
def typed_failures(p):
    """Run the body (a mode of the run ``p`` describes) with the failures a user can act on
    raised as :class:`RunFailure` types; anything else propagates unchanged."""
    mode, model_dir = p["mode"], p["model_dir"]
    try:
        yield
    except (tf.errors.NotFoundError, ValueError) as e:
        # TF 1.15 raises the restore's NotFoundError, TF 2.x a ValueError around it.
        missing = _MISSING_KEY.search(_message(e))
        if run_record.trains(mode) or not missing:
            raise
        raise CheckpointMismatchError(mode, model_dir, missing.group(0)) from None
    except tf.errors.InvalidArgumentError as e:
        match = _NON_FINITE.search(_message(e))
        if not match:
            raise
        raise NonFiniteLossError(int(match.group(1)),
                                 tf.train.latest_checkpoint(model_dir)) from None
    except (hooks.WorkerLostError, tf.errors.DeadlineExceededError) as e:
        if p["distribution"] != "multi_worker":
            raise
        if isinstance(e, tf.errors.DeadlineExceededError):
            why = (f"a step waited more than --worker_timeout_secs={p['worker_timeout_secs']} "
                   "s for the other workers (a worker failed, was stopped, or is stalled)")
        else:
            why = str(e)
        raise WorkerLostFailure(why, tf.train.latest_checkpoint(model_dir)) from None
    except (tf.errors.OpError, OSError) as e:
        # Out of memory is a ResourceExhaustedError too: only a full disk is handled here.
        if getattr(e, "errno", None) != errno.ENOSPC and _NO_SPACE not in _message(e):
            raise
        raise DiskFullError(model_dir, tf.train.latest_checkpoint(model_dir)) from None
