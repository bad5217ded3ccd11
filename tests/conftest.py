"""Fixtures shared by several test files, and the CI rule for real-data tests."""

import json
import os
import subprocess
import sys

import pytest

import estimator_main
from tests import real_lfw
from tests import records_helpers as rh

# The program's flags on absl's global FLAGS, as its entry point defines them.
estimator_main.define_flags()


@pytest.fixture
def parse_flags():
    """``parse(args) -> flag_values()`` on the global FLAGS; the defaults come back afterwards."""

    def parse(args):
        estimator_main.FLAGS.unparse_flags()
        estimator_main.FLAGS(["estimator_main.py"] + list(args))
        return estimator_main.flag_values()

    yield parse
    estimator_main.FLAGS.unparse_flags()


@pytest.fixture(scope="module")
def small_records(tmp_path_factory):
    """Training image records of 4 identities x 8 images of 32x32 (one copy per test module)."""
    root = tmp_path_factory.mktemp("small_records")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=8, size=32)
    return root / "train"


@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory):
    """Verification pair records: 10 pairs of 32x32 images in 2 folds (one copy per module)."""
    root = tmp_path_factory.mktemp("small_pairs")
    rh.write_pair_records(str(root / "pairs"), num_pairs=10, size=32, n_folds=2)
    return root / "pairs"


@pytest.fixture(scope="session")
def real_lfw_dir(tmp_path_factory):
    """The real LFW-a images (``lfw_gray250``), extracted once per session; tests read them and
    write elsewhere. Only tests marked with ``real_lfw.MARKS`` (skipped without the data) use it."""
    return real_lfw.extract(tmp_path_factory.mktemp("real_lfw"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A ``real_data`` test that skips in CI while ../shared/data exists is a failure."""
    outcome = yield
    report = outcome.get_result()
    if (not report.skipped or hasattr(report, "wasxfail")
            or item.get_closest_marker("real_data") is None):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    message = real_lfw.ci_failure(reason)
    if message is not None:
        report.outcome = "failed"
        report.longrepr = message


RECORDED_RUN_SIZE = 32
RECORDED_RUN_TRANSFORM = {"crop_box": None, "image_size": RECORDED_RUN_SIZE,
                          "resampling": "lanczos",
                          "record_shape": [RECORDED_RUN_SIZE, RECORDED_RUN_SIZE]}


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory):
    """One tiny ``train_and_evaluate`` run through the real CLI, with the LFW recipe's flagfile
    (tiny network, 20 steps, an evaluation every 10) on records whose manifests carry a
    transform: ``(records root, model_dir, finished process)``. Shared by the run-record and
    training-output tests."""
    root = tmp_path_factory.mktemp("recorded_run")
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=8,
                           size=RECORDED_RUN_SIZE)
    rh.write_pair_records(str(root / "pairs"), num_pairs=10, size=RECORDED_RUN_SIZE, n_folds=2)
    for records in ("train", "pairs"):  # as the converter records them
        path = root / records / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["transform"] = RECORDED_RUN_TRANSFORM
        path.write_text(json.dumps(manifest))
    model_dir = str(root / "run")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, "estimator_main.py", "--flagfile=configs/lfw_holdout.flags",
         "--precision=fp32", "--min_crop_scale=1", "--train_steps=20", "--log_every_n_steps=5",
         f"--train_records={root / 'train'}", f"--eval_records={root / 'pairs'}",
         f"--model_dir={model_dir}", "--backbone=tiny", f"--image_size={RECORDED_RUN_SIZE}",
         "--embedding_size=16", "--batch_size=8", "--save_checkpoints_steps=10", "--gamma=32",
         "--eval_batch_size=4", "--eval_throttle_secs=0"],
        cwd=repo, env=env, capture_output=True, encoding="utf-8", timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, model_dir, proc
