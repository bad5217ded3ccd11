"""model/hooks.py: the throughput summary and the progress bar, driven step by step."""

import glob
import os

import pytest
import tensorflow.compat.v1 as tf

from model import hooks


class _Clock:
    def __init__(self, times):
        self._times = list(times)

    def time(self):
        return self._times.pop(0)


def _values(results):
    return tf.train.SessionRunValues(results=results, options=None, run_metadata=None)


def test_examples_per_second_is_logged_and_written_every_n_steps(tmp_path, monkeypatch):
    # Steps 1..7 finish at these times: the first is the reference, then every 3 steps a rate.
    times = [10.0, 10.5, 11.0, 12.0, 12.5, 13.0, 15.0]
    monkeypatch.setattr(hooks, "time", _Clock(times))
    logged = []
    monkeypatch.setattr(tf.logging, "info", lambda fmt, *args: logged.append(fmt % args))
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        hook = hooks.ExamplesPerSecondHook(batch_size=16, every_n_steps=3,
                                           output_dir=str(tmp_path))
        hook.begin()
        assert hook.before_run(None).fetches is global_step
        for step in range(1, 8):
            hook.after_run(None, _values(step))
        tf.summary.FileWriterCache.get(str(tmp_path)).flush()
    # Step 1 at 10.0 s -> step 4 at 12.0 s: 3 steps x 16 examples in 2 s; then 4 -> 7 in 3 s.
    expected = {4: 3 * 16 / 2.0, 7: 3 * 16 / 3.0}
    assert logged == [f"examples/sec: {expected[s]:.1f} (step {s})" for s in (4, 7)]
    written = {}
    for path in glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*")):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "examples_per_sec":
                    written[event.step] = value.simple_value
    assert written == pytest.approx(expected)


def test_examples_per_second_without_output_dir_only_logs(monkeypatch):
    monkeypatch.setattr(hooks, "time", _Clock([0.0, 1.0]))
    logged = []
    monkeypatch.setattr(tf.logging, "info", lambda fmt, *args: logged.append(fmt % args))
    with tf.Graph().as_default():
        tf.train.get_or_create_global_step()
        hook = hooks.ExamplesPerSecondHook(batch_size=4, every_n_steps=1)
        hook.begin()
        hook.after_run(None, _values(0))
        hook.after_run(None, _values(1))
    assert logged == ["examples/sec: 4.0 (step 1)"]


def test_progress_bar_follows_the_global_step_and_shows_the_loss(capsys):
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        loss = tf.constant(1.5)
        hook = hooks.ProgressBarHook(total_steps=10, loss=loss, every_n_steps=4)
        hook.begin()
        assert hook.before_run(None).fetches == [global_step, loss]
        # A resumed run: the bar starts at the restored step 2.
        for step in range(2, 11):
            hook.after_run(None, _values((step, 0.25 * step)))
        hook.end(None)
    err = capsys.readouterr().err
    # Opened at the restored step (not at 0) and closed at the last step with its loss (tqdm
    # throttles the redraws in between).
    assert "| 2/10 " in err and "| 0/10 " not in err
    assert "| 10/10 " in err and "loss=2.5000" in err


def test_progress_bar_without_steps_never_opens():
    with tf.Graph().as_default():
        tf.train.get_or_create_global_step()
        hook = hooks.ProgressBarHook(total_steps=5, loss=tf.constant(0.0))
        hook.begin()
        hook.end(None)  # nothing to close
