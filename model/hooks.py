"""Session-run hooks for training: throughput summaries, a progress bar, the losses on record."""

import json
import time

import tensorflow.compat.v1 as tf
from tqdm import tqdm


class ExamplesPerSecondHook(tf.train.SessionRunHook):
    """Logs and writes an ``examples_per_sec`` summary every ``every_n_steps`` global steps."""

    def __init__(self, batch_size, every_n_steps=100, output_dir=None):
        self._batch_size = batch_size
        self._every_n_steps = every_n_steps
        self._output_dir = output_dir
        self._last = None
        self._writer = None

    def begin(self):
        self._global_step = tf.train.get_global_step()
        if self._output_dir:
            self._writer = tf.summary.FileWriterCache.get(self._output_dir)

    def before_run(self, run_context):
        return tf.train.SessionRunArgs(self._global_step)

    def after_run(self, run_context, run_values):
        step = run_values.results
        now = time.time()
        if self._last is None:
            self._last = (step, now)
            return
        last_step, last_time = self._last
        if step - last_step >= self._every_n_steps:
            rate = (step - last_step) * self._batch_size / max(now - last_time, 1e-9)
            tf.logging.info("examples/sec: %.1f (step %d)", rate, step)
            if self._writer is not None:
                summary = tf.Summary(value=[tf.Summary.Value(tag="examples_per_sec",
                                                             simple_value=rate)])
                self._writer.add_summary(summary, step)
            self._last = (step, now)


class ProgressBarHook(tf.train.SessionRunHook):
    """A tqdm bar over global steps up to ``total_steps``, with the latest loss.

    ``loss=None``: the bar follows the global step alone (hosts that may not fetch device
    tensors, as under Ascend's ``iterations_per_loop``).
    """

    def __init__(self, total_steps, loss, every_n_steps=10):
        self._total_steps = total_steps
        self._loss = loss
        self._every_n_steps = every_n_steps
        self._bar = None
        self._position = None

    def begin(self):
        self._global_step = tf.train.get_global_step()

    def before_run(self, run_context):
        if self._loss is None:
            return tf.train.SessionRunArgs([self._global_step])
        return tf.train.SessionRunArgs([self._global_step, self._loss])

    def after_run(self, run_context, run_values):
        step, loss = (list(run_values.results) + [None])[:2]
        if self._bar is None:
            self._bar = tqdm(total=self._total_steps, initial=step, unit="step",
                             desc="train", dynamic_ncols=True)
            self._position = step
        if step - self._position >= self._every_n_steps or step >= self._total_steps:
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(step - self._position)
            self._position = step

    def end(self, session):
        if self._bar is not None:
            self._bar.close()


class WorkerLostError(RuntimeError):
    """A synchronous multi-worker session was lost: a worker failed or was stopped."""


class NoSessionRecoveryHook(tf.train.SessionRunHook):
    """Refuses the session that ``MonitoredTrainingSession`` recreates after losing one.

    MonitoredTrainingSession treats an UnavailableError or AbortedError as a preempted parameter
    server: it closes the session, builds a new one from the latest checkpoint and goes on. Under
    MultiWorkerMirroredStrategy that error means a worker of the all-reduce is gone, and no new
    session can finish a step without it: the collective ops stay aborted (the same error again,
    in a loop) or wait for the missing worker forever. This hook lets the first session be
    created and stops the recreated one with ``WorkerLostError``, so the worker exits and the job
    is restarted as a whole (every worker resumes from the last checkpoint).
    """

    def __init__(self):
        self._sessions = 0

    def after_create_session(self, session, coord):
        self._sessions += 1
        if self._sessions > 1:
            raise WorkerLostError(
                "the multi-worker training session was lost (a worker failed or was stopped; "
                "TensorFlow's error is logged above)")


class LossRecordHook(tf.train.SessionRunHook):
    """Appends the last training step's losses (head, distillation, total) to a JSON-lines run
    record (``runs.jsonl``) when training ends, so that each term is on record per run, not
    only in the summaries."""

    def __init__(self, path, losses):
        self._path = path
        self._losses = dict(losses)
        self._last = None

    def begin(self):
        self._step = tf.train.get_global_step()

    def before_run(self, run_context):
        return tf.train.SessionRunArgs(self._losses)

    def after_run(self, run_context, run_values):
        self._last = run_values.results

    def end(self, session):
        if self._last is None:
            return
        # Reading the step variable consumes no input (running the losses again would).
        line = {"event": "train_end", "global_step": int(session.run(self._step))}
        line.update({name: float(value) for name, value in sorted(self._last.items())})
        history = ""
        if tf.io.gfile.exists(self._path):
            with tf.io.gfile.GFile(self._path) as fh:
                history = fh.read()
        # Whole-file rewrite, as training/run_record.py does: object stores cannot append.
        with tf.io.gfile.GFile(self._path, "w") as fh:
            fh.write(history + json.dumps(line, sort_keys=True) + "\n")
