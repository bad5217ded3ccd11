"""Every flagfile in configs/ parses and passes estimator_main's validation as shipped."""

import glob
import os

import pytest

from runtime import estimator_factory
from tests import records_helpers as rh
from tests.test_npu import FAKE_NPU, forget_npu_modules
from training.params import build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("config_data")
    # With a 128-d teacher column (dlib's size), for the distillation recipe (face_small.flags).
    rh.write_image_records(str(root / "train"), num_classes=4, per_class=2, size=32,
                           teacher_dim=128)
    rh.write_pair_records(str(root / "pairs"), num_pairs=20, size=32, n_folds=10)
    return root


def test_the_recipes_are_all_here():
    names = {os.path.basename(c) for c in CONFIGS}
    assert {"demo.flags", "lfw_holdout.flags", "ms1m_paper.flags", "ascend_seed.flags",
            "face_small.flags"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_flagfile_validates(config, data, tmp_path, parse_flags, monkeypatch):
    lines = _flag_lines(os.path.basename(config))
    if "--device=npu" in lines:  # validated against the fake npu_bridge of tests/fake_npu
        forget_npu_modules()
        monkeypatch.syspath_prepend(FAKE_NPU)
    args = [f"--flagfile={config}", f"--train_records={data / 'train'}",
            f"--eval_records={data / 'pairs'}", f"--model_dir={tmp_path}"]
    if not any(line.startswith(("--train_steps", "--train_epochs")) for line in lines):
        args.append("--train_steps=1200")  # scripts/demo.sh passes it
    if any(line.startswith("--train_epochs") for line in lines):
        # 8 test images make a one-step epoch: the warm-up is checked at MS1MV2 size below.
        args.append("--warmup_steps=0")
    values = parse_flags(args)
    if "--precision=bf16" in lines and not estimator_factory.bfloat16_supported():
        with pytest.raises(estimator_factory.DeviceUnavailableError, match="bf16"):
            build_params(values)
        return
    p = build_params(values)
    forget_npu_modules()
    assert p["train_steps"] > p["warmup_steps"] >= 0
    assert p["num_classes"] == 4 and p["num_pairs"] == 20


def _flag_lines(name):
    with open(os.path.join(ROOT, "configs", name)) as f:
        return {line.strip() for line in f if line.startswith("--")}


def test_scale_recipes_keep_the_published_settings():
    """The numbers the paper and the seed used (README: recipes for real scale)."""
    paper = _flag_lines("ms1m_paper.flags")
    assert {"--head=circle", "--margin=0.25", "--gamma=256", "--batch_size=512",
            "--learning_rate=0.1", "--schedule=piecewise", "--decay_boundaries=0.5,0.7,0.9",
            "--image_size=112"} <= paper
    # Warm-ups are a small part of training on MS1MV2 (5.8 M images), 20 epochs.
    for name in ("ms1m_paper.flags", "ascend_seed.flags"):
        flags_ = dict(line.split("=", 1) for line in _flag_lines(name) if "=" in line)
        total = 20 * 5800000 // int(flags_["--batch_size"])
        assert int(flags_["--warmup_steps"]) < 0.05 * total
    seed = _flag_lines("ascend_seed.flags")
    assert {"--device=npu", "--npu_precision_mode=allow_mix_precision", "--batch_size=30",
            "--learning_rate=0.1"} <= seed
