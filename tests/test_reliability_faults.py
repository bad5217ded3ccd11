"""Reliability against faults (issue 7, part 2): kill -9, full disks.

* the converter killed with SIGKILL several times at random moments, then re-run: the shards are
  byte-identical to an uninterrupted run, no image missing or duplicated (slow);
* disk full while writing shards, the plan or the manifest (a simulated ENOSPC, and a real one on
  a small tmpfs when this runs as root): one clear error, nothing corrupted, a re-run resumes;
* training killed with SIGKILL while it exports, then re-run: it resumes from the last
  checkpoint's global step, the learning-rate schedule continues at that step, and the exported
  models are never half-written (slow);
* disk full while training writes checkpoints (real tmpfs, slow): the last good checkpoint
  still loads.

The NaN-loss fault is tested in tests/test_estimator_main.py
(test_nan_loss_exits_with_the_step_and_the_last_good_checkpoint).
"""

import errno
import glob
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data_tools import conversion, fileio, manifest
from data_tools import manifest as manifest_lib
from tests import _folder_fixtures as ff
from tests import records_helpers as rh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ConversionError = conversion.ConversionError


convert = ff.convert_quietly
shard_files = ff.shard_files


def outputs(directory):
    """The files a finished conversion is judged by (the lock file is bookkeeping)."""
    files = ff.read_dir_bytes(str(directory))
    files.pop(conversion.LOCK_NAME, None)
    return files


def assert_no_damage(directory, reference):
    """What a failed or killed conversion may leave: complete shards only, no manifest."""
    names = os.listdir(str(directory))
    assert not [n for n in names if ".tmp-" in n], names
    assert manifest_lib.MANIFEST_NAME not in names
    for path in shard_files(directory):
        name = os.path.basename(path)
        with open(path, "rb") as f:
            assert f.read() == reference[name], f"{name} is not the finished shard"


# ------------------------------------------------------------------ converter: kill -9


@pytest.mark.slow
def test_converter_killed_at_random_moments_then_rerun_is_identical(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [10] * 12, exts=("png", "jpg"))
    args = [f"--input_dir={tmp_path / 'in'}", "--num_shards=12", "--image_size=24",
            "--num_workers=1", "--seed=5"]
    start = time.time()
    done = ff.run_script(args + [f"--output_dir={tmp_path / 'reference'}"])
    assert done.returncode == 0, done.stderr
    duration = time.time() - start
    reference = outputs(tmp_path / "reference")

    out = tmp_path / "killed"
    rng = random.Random(20201)
    # Kills at random times over a run (start-up, checking, writing, finishing: the later ones
    # may come after a resumed run has finished), and after a random number of newly finished
    # shards (always mid-writing).
    plans = [("time", rng.uniform(0.2, 0.9) * duration), ("shards", rng.randint(1, 3)),
             ("shards", rng.randint(1, 3)), ("time", rng.uniform(0.2, 0.9) * duration)]
    killed = []
    for kind, when in plans:
        present = len(shard_files(out)) if out.is_dir() else 0
        process = subprocess.Popen(
            [sys.executable, ff.SCRIPT, f"--output_dir={out}"] + args, cwd=ff.REPO_ROOT,
            env=ff.script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + (when if kind == "time" else 120)
        try:
            while time.time() < deadline and process.poll() is None:
                if kind == "shards" and out.is_dir() and len(shard_files(out)) >= present + when:
                    break
                time.sleep(0.002)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait()
        if process.returncode == -signal.SIGKILL:
            killed.append((kind, when, len(shard_files(out)) if out.is_dir() else 0))
            if out.is_dir():
                # Whatever the moment, only finished shards carry their final name.
                for path in shard_files(out):
                    with open(path, "rb") as f:
                        assert f.read() == reference[os.path.basename(path)]
                assert not (out / manifest_lib.MANIFEST_NAME).exists()
    assert len(killed) >= 3, f"the runs ended before the kills: {killed}"

    finished = len(shard_files(out))
    summary = convert(tmp_path / "in", out, num_shards=12, image_size=24, seed=5)
    assert outputs(out) == reference
    assert summary["shards_kept"] == finished  # every finished shard was worth keeping
    manifest.verify_shards(str(out))
    records = ff.read_records(shard_files(out), with_pixels=False)
    names = [r["filename"].decode() for r in records]
    expected = sorted(os.path.relpath(p, str(tmp_path / "in")) for p in
                      glob.glob(str(tmp_path / "in" / "*" / "*")))
    assert sorted(names) == expected  # nothing missing, nothing twice


# ------------------------------------------------------------------ converter: disk full


class _FullDiskWriter:
    """tf.io.TFRecordWriter that fails like a full disk after ``budget`` records in total."""

    budget = 0

    def __init__(self, path, *args, **kwargs):
        self._writer = _REAL_WRITER(path, *args, **kwargs)
        self._path = path

    def write(self, record):
        if _FullDiskWriter.budget <= 0:
            raise tf.errors.ResourceExhaustedError(None, None,
                                                   f"{self._path}; No space left on device")
        _FullDiskWriter.budget -= 1
        self._writer.write(record)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._writer.close()
        return False


_REAL_WRITER = tf.io.TFRecordWriter


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["shard", "plan", "labels", "manifest"])
def test_disk_full_is_one_clear_error_and_a_rerun_resumes(tmp_path, monkeypatch, where):
    ff.make_face_tree(str(tmp_path / "in"), [3, 4, 2, 3], exts=("png",))
    convert(tmp_path / "in", tmp_path / "reference", num_shards=4)
    reference = outputs(tmp_path / "reference")
    if where == "shard":
        _FullDiskWriter.budget = 7  # shard 0 (3 records) and 1 (3) fit, shard 2 does not
        monkeypatch.setattr(tf.io, "TFRecordWriter", _FullDiskWriter)
    else:
        real_write = fileio.atomic_write_text
        target = {"plan": conversion.PLAN_NAME, "labels": manifest_lib.LABELS_NAME,
                  "manifest": manifest_lib.MANIFEST_NAME}[where]
        calls = []

        def atomic_write_text(path, text):
            calls.append(path)
            # The plan is rewritten after every shard: fail on its third write.
            if os.path.basename(path) == target and (where != "plan" or len(calls) >= 3):
                _enospc()
            return real_write(path, text)

        monkeypatch.setattr(fileio, "atomic_write_text", atomic_write_text)
    with pytest.raises(ConversionError) as error:
        convert(tmp_path / "in", tmp_path / "out", num_shards=4)
    message = str(error.value)
    assert "No space left on device" in message and "re-run the same command" in message
    assert "\n" not in message
    assert_no_damage(tmp_path / "out", reference)
    monkeypatch.undo()
    summary = convert(tmp_path / "in", tmp_path / "out", num_shards=4)
    assert outputs(tmp_path / "out") == reference
    if where == "shard":
        assert summary["shards_kept"] == 2


def test_atomic_write_leaves_no_temporary_file_when_the_disk_is_full(tmp_path, monkeypatch):
    path = tmp_path / "labels.txt"
    path.write_text("old\n")
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError):
        fileio.atomic_write_text(str(path), "new\n")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert os.listdir(str(tmp_path)) == ["labels.txt"]
    assert path.read_text() == "old\n"


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs mounted on tmp_path/fs: ``resize(bytes)``; skipped unless mounting works."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()

    def mount(options):
        return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                              capture_output=True, check=False).returncode == 0

    if not (hasattr(os, "geteuid") and os.geteuid() == 0) or not mount("size=64k"):
        pytest.skip("needs root to mount a small tmpfs")

    def resize(size):
        assert subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)],
                              check=False).returncode == 0

    yield mount_point, resize
    subprocess.run(["umount", str(mount_point)], check=False)


def test_real_full_disk_from_the_command_line(tmp_path, small_fs):
    mount_point, resize = small_fs
    ff.make_face_tree(str(tmp_path / "in"), [10] * 6, exts=("png",))  # ~190 kB of shards
    convert(tmp_path / "in", tmp_path / "reference", num_shards=6)
    reference = outputs(tmp_path / "reference")
    assert sum(len(v) for v in reference.values()) > 2 * 64 * 1024
    out = mount_point / "records"
    args = [f"--input_dir={tmp_path / 'in'}", f"--output_dir={out}", "--num_shards=6",
            "--num_workers=1"]
    result = ff.run_script(args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [text for text in result.stderr.splitlines() if "make_tfrecords: error:" in text]
    assert "No space left on device" in line and "re-run the same command" in line
    assert_no_damage(out, reference)
    kept = len(shard_files(out))
    assert 1 <= kept < 6
    resize(4 * 1024 * 1024)
    result = ff.run_script(args)
    assert result.returncode == 0, result.stderr
    assert f"{kept} kept from an earlier run" in result.stdout
    assert outputs(out) == reference


# ------------------------------------------------------------------ training: kill -9, full disk

SIZE = 32
TRAIN = ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
         "--save_checkpoints_steps=5", "--noprogress", "--gamma=32", "--eval_batch_size=4",
         "--eval_throttle_secs=0", "--save_summary_steps=1", "--schedule=cosine",
         "--warmup_steps=3", "--learning_rate=0.05"]
TOTAL_STEPS = 40


def training_cli(data, model_dir, mode="train_and_evaluate", steps=TOTAL_STEPS):
    return [sys.executable, "estimator_main.py", f"--mode={mode}",
            f"--train_records={data / 'train'}", f"--eval_records={data / 'pairs'}",
            f"--model_dir={model_dir}", f"--train_steps={steps}", "--verbosity=0"] + TRAIN


def training_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=8, size=SIZE)
    rh.write_pair_records(str(root / "pairs"), num_pairs=10, size=SIZE, n_folds=2)
    return root


# The schedule the flags above ask for, from its definition rather than as
# model/optimization.py computes it: a linear warm-up whose step s runs at (s + 1)/3 of the base
# rate, then the half-cosine from the base rate at step 3 to zero at step 40, written as
# base * cos^2(pi/2 * t) with t the fraction of the 37 decay steps done. A few values by hand:
HAND_COMPUTED_LEARNING_RATES = {0: 0.05 / 3, 1: 0.1 / 3, 2: 0.05, 3: 0.05,
                                40: 0.0, 39: 0.05 * math.sin(math.pi / 74) ** 2}


def cosine_learning_rate(step, base=0.05, total=TOTAL_STEPS, warmup=3):
    """The learning rate of ``step`` (independent of model/optimization.py's formula)."""
    if step < warmup:
        return np.interp(step, [-1, warmup - 1], [0.0, base])
    done = (step - warmup) / float(total - warmup)
    return base * math.cos(math.pi / 2 * done) ** 2


def test_cosine_reference_matches_the_hand_computed_values():
    for step, value in HAND_COMPUTED_LEARNING_RATES.items():
        assert cosine_learning_rate(step) == pytest.approx(value, abs=1e-12), step
    # Half-way through the decay (step 3 + 18.5) the rate is half the base.
    assert cosine_learning_rate(3 + 18.5) == pytest.approx(0.025)


def logged_learning_rates(model_dir):
    """``{step: learning_rate}`` of the training summaries in ``model_dir`` (all runs)."""
    values = {}
    for path in glob.glob(os.path.join(model_dir, "events.out.tfevents.*")):
        try:
            for event in tf.train.summary_iterator(path):
                for value in event.summary.value:
                    # tf.summary uniquifies the tag against the op name: "learning_rate_1".
                    if value.tag.startswith("learning_rate"):
                        values.setdefault(event.step, []).append(value.simple_value)
        except tf.errors.DataLossError:
            pass  # the tail of the file the killed run was writing
    return values


def complete_exports(model_dir):
    """Every SavedModel under export/ that is not an in-progress ``temp-*`` directory."""
    found = []
    for base in glob.glob(os.path.join(model_dir, "export", "*")):
        for name in os.listdir(base):
            if not name.startswith("temp-"):
                found.append(os.path.join(base, name))
    return found


def assert_loads(saved_model_dir):
    assert os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")), saved_model_dir
    assert os.path.isfile(os.path.join(saved_model_dir, "variables", "variables.index"))
    with tf.Graph().as_default(), tf.Session() as session:
        tf.saved_model.loader.load(session, ["serve"], saved_model_dir)


@pytest.mark.slow
def test_training_killed_while_exporting_resumes_and_never_leaves_a_partial_export(data,
                                                                                   tmp_path):
    model_dir = str(tmp_path / "run")
    process = subprocess.Popen(training_cli(data, model_dir), cwd=ROOT, env=training_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The worst moment: an exporter is writing its SavedModel (a temp-* directory exists).
    deadline = time.time() + 400
    try:
        while time.time() < deadline and process.poll() is None:
            if glob.glob(os.path.join(model_dir, "export", "*", "temp-*")):
                break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it was killed"
    for export in complete_exports(model_dir):
        assert_loads(export)
    checkpoint = tf.train.latest_checkpoint(model_dir)
    assert checkpoint is not None
    resumed_from = int(tf.train.load_variable(checkpoint, "global_step"))
    assert resumed_from % 5 == 0 and 5 <= resumed_from < TOTAL_STEPS
    before = logged_learning_rates(model_dir)

    result = subprocess.run(training_cli(data, model_dir), cwd=ROOT, env=training_env(),
                            capture_output=True, encoding="utf-8", timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Restoring parameters from {checkpoint}" in result.stderr
    final = tf.train.latest_checkpoint(model_dir)
    assert int(tf.train.load_variable(final, "global_step")) == TOTAL_STEPS
    # The schedule continues at the restored step: every learning rate logged after the resume
    # is the schedule's value at its step (a restart from 0 would repeat the warm-up). A
    # summary is tagged with the step after the update that used global_step - 1.
    after = logged_learning_rates(model_dir)
    new_steps = sorted(step for step in after if len(after[step]) > len(before.get(step, [])))
    assert new_steps == list(range(resumed_from + 1, TOTAL_STEPS + 1)), new_steps
    for step in new_steps:
        np.testing.assert_allclose(after[step][-1], cosine_learning_rate(step - 1), rtol=1e-5,
                                   err_msg=f"step {step}")
    exports = complete_exports(model_dir)
    assert any(os.path.basename(os.path.dirname(e)) == "best" for e in exports)
    for export in exports:
        assert_loads(export)


@pytest.fixture(scope="module")
def full_disk_training(data, tmp_path_factory):
    """Train on a tmpfs that fills up after the first checkpoint: (model_dir, result, step)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        pytest.skip("needs root to mount a small tmpfs")
    mount_point = tmp_path_factory.mktemp("fs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs")
    try:
        model_dir = str(mount_point / "run")
        # A file, not a pipe: nobody reads a pipe while the run is watched, and a full pipe
        # would block it.
        log_path = str(tmp_path_factory.mktemp("logs") / "stderr.txt")
        log = open(log_path, "w")
        process = subprocess.Popen(training_cli(data, model_dir, mode="train", steps=400),
                                   cwd=ROOT, env=training_env(), stdout=subprocess.DEVNULL,
                                   stderr=log)
        # Once checkpoint 10 is being written, checkpoint 5 (data, index, meta graph) is whole.
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if os.path.exists(os.path.join(model_dir, "model.ckpt-10.index")):
                break
            time.sleep(0.01)
        good = os.path.join(model_dir, "model.ckpt-5")
        # Fill the file system: every later write fails with ENOSPC.
        with open(str(mount_point / "filler"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        with open(log_path, encoding="utf-8") as f:
            stderr = f.read()
        os.remove(str(mount_point / "filler"))
        yield model_dir, process.returncode, stderr, good
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_full_disk_during_training_keeps_the_last_good_checkpoint(full_disk_training):
    model_dir, returncode, stderr, good = full_disk_training
    assert os.path.isfile(good + ".index"), "training did not reach step 10"
    assert returncode != 0, "training went on with a full disk"
    latest = tf.train.latest_checkpoint(model_dir)
    step = int(tf.train.load_variable(latest, "global_step"))
    assert step >= int(tf.train.load_variable(good, "global_step"))
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        assert np.all(np.isfinite(reader.get_tensor(name))), name


@pytest.mark.slow
def test_full_disk_during_training_is_one_clear_line(full_disk_training):
    model_dir, returncode, stderr, _ = full_disk_training
    assert returncode == 1
    assert "Traceback" not in stderr, stderr[-2000:]
    latest = tf.train.latest_checkpoint(model_dir)
    assert re.search(rf"No space left on device.*{re.escape(latest)}\b", stderr), stderr[-2000:]
