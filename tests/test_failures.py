"""training/failures.py: TensorFlow's generic errors become typed failures with the one line
estimator_main.py prints (the end-to-end cases, a NaN loss, a full disk, a lost worker, another
network's checkpoint, run the real CLI in test_estimator_main, test_reliability_faults,
test_multi_worker and test_run_record); anything else propagates unchanged."""

import errno

import pytest
import tensorflow.compat.v1 as tf

from model import hooks
from training import failures


def params(tmp_path, mode="train", distribution="none"):
    return {"mode": mode, "model_dir": str(tmp_path), "distribution": distribution,
            "worker_timeout_secs": 600}


def raised(p, error):
    with pytest.raises(BaseException) as info, failures.typed_failures(p):
        raise error
    return info.value


def test_the_finite_loss_guard_becomes_its_step(tmp_path):
    # The message tf.debugging.Assert gives for model_fn's guard: its data, each in brackets.
    error = tf.errors.InvalidArgumentError(
        None, None, "assertion failed: [Non-finite loss at global step] [12] [loss] [nan]\n\t "
        "[[{{node finite_loss_guard/Assert}}]]")
    failure = raised(params(tmp_path), error)
    assert isinstance(failure, failures.NonFiniteLossError)
    assert failure.step == 12 and failure.last_checkpoint is None
    assert "the loss became NaN/Inf at global step 12; no update was applied" in str(failure)
    other = tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [2] vs. [3]")
    assert raised(params(tmp_path), other) is other


@pytest.mark.parametrize("error", [
    tf.errors.NotFoundError(None, None, "Key head/proxies not found in checkpoint"),
    ValueError("Restoring failed: Key head/proxies not found in checkpoint [Op:RestoreV2]"),
])
def test_another_networks_checkpoint_is_a_mismatch_when_reading_a_run(tmp_path, error):
    failure = raised(params(tmp_path, mode="export"), error)
    assert isinstance(failure, failures.CheckpointMismatchError)
    assert str(failure).startswith(f"export: the checkpoint in {tmp_path} is not this network "
                                   "(Key head/proxies not found in checkpoint)")
    # Training restores nothing it did not write: the same error is not a mismatch there.
    assert raised(params(tmp_path, mode="train"), error) is error


def test_a_full_disk_is_told_with_the_last_good_checkpoint(tmp_path):
    for error in (OSError(errno.ENOSPC, "No space left on device"),
                  tf.errors.ResourceExhaustedError(None, None, "x; No space left on device")):
        failure = raised(params(tmp_path), error)
        assert isinstance(failure, failures.DiskFullError)
        assert "re-run the same command to resume" in str(failure)
    out_of_memory = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert raised(params(tmp_path), out_of_memory) is out_of_memory


def test_a_lost_worker_stops_only_a_multi_worker_job(tmp_path):
    lost = hooks.WorkerLostError("the session was lost")
    failure = raised(params(tmp_path, distribution="multi_worker"), lost)
    assert isinstance(failure, failures.WorkerLostFailure)
    assert str(failure).startswith("multi-worker training stopped: the session was lost.")
    timeout = raised(params(tmp_path, distribution="multi_worker"),
                     tf.errors.DeadlineExceededError(None, None, "deadline"))
    assert "--worker_timeout_secs=600" in str(timeout)
    assert raised(params(tmp_path), lost) is lost


def test_every_failure_is_one_line(tmp_path):
    for failure in (failures.NonFiniteLossError(3, "ckpt-2"),
                    failures.CheckpointMismatchError("evaluate", str(tmp_path), "Key x"),
                    failures.DiskFullError(str(tmp_path), None),
                    failures.WorkerLostFailure("why", None)):
        assert isinstance(failure, failures.RunFailure) and "\n" not in str(failure)
