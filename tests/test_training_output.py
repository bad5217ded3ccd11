"""What a training run prints (issue 32): one line per evaluation round, TensorFlow's and absl's
INFO chatter off unless --verbosity asks, whatever the flagfile; never the ROC arrays or
"Summary for np.ndarray is not visible"."""

import logging
import re

from training import console


def test_every_round_prints_its_line_and_nothing_else_chatters(recorded_run):
    """The LFW recipe's flagfile (it sets no --verbosity) with the tiny network, 2 rounds."""
    proc = recorded_run[2]
    out = proc.stdout.splitlines()
    assert re.match(r"evaluation at step 10: accuracy \d\.\d{4} ± \d\.\d{4}, AUC \d\.\d{4}, "
                    r"EER \d\.\d{4}$", out[0]), proc.stdout
    assert out[1].startswith("LFW-style verification at step 20: accuracy"), proc.stdout
    assert len(out) <= 6, proc.stdout
    err = proc.stderr
    for noise in ("INFO", "Using config", "Calling model_fn", "tpr", "fpr",
                  "Summary for np.ndarray"):
        assert noise not in err, (noise, err[-3000:])
    # The progress bar (redrawn with \r, one line per training segment) is the only other output.
    other = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("train:")]
    assert not other, err[-3000:]


def _record(message, *args):
    return logging.LogRecord("tensorflow", logging.INFO, __file__, 1, message, args, None)


def test_with_verbosity_the_estimators_lines_come_without_the_roc_arrays():
    noise = console.EstimatorNoise()
    assert not noise.filter(_record("Summary for np.ndarray is not visible in Tensorboard by "
                                    "default. Consider using a Tensorboard plugin"))
    saving = _record("Saving dict for global step %d: %s", 30,
                     "global_step = 30, lfw/accuracy = 0.9, lfw/fpr = [0. 0.25\n 0.5 1.], "
                     "lfw/auc = 0.8, lfw/fold_accuracy = [1. 0.8], lfw/tpr = [0. 1.]")
    assert noise.filter(saving)
    assert saving.getMessage() == ("Saving dict for global step 30: global_step = 30, "
                                   "lfw/accuracy = 0.9, lfw/auc = 0.8")
    kept = _record("Restoring parameters from %s", "m/model.ckpt-10")
    assert noise.filter(kept) and kept.getMessage() == "Restoring parameters from m/model.ckpt-10"
