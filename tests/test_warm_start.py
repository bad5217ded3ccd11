"""--warm_start_from fine-tunes across identity sets: the backbone carries over, the [D, C]
proxies only when the class count matches (or on request, checked before anything runs)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import app

import estimator_main
from tests import records_helpers as rh

SIZE = 32
NET = ["--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16", "--batch_size=8",
       "--gamma=32", "--noprogress", "--norandom_flip", "--mode=train"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 4-identity run, and records of 6 other identities to fine-tune on."""
    root = tmp_path_factory.mktemp("warm")
    rh.write_image_records(str(root / "four"), num_classes=4, per_class=4, size=SIZE)
    rh.write_image_records(str(root / "six"), num_classes=6, per_class=4, size=SIZE)
    model_dir = str(root / "base")
    estimator_main.FLAGS.unparse_flags()
    estimator_main.FLAGS(["estimator_main.py", f"--train_records={root / 'four'}",
                          f"--model_dir={model_dir}", "--train_steps=3"] + NET)
    estimator_main.main(["estimator_main.py"])
    estimator_main.FLAGS.unparse_flags()
    return root, tf.train.latest_checkpoint(model_dir)


def fine_tune(parse_flags, records, checkpoint, model_dir, *extra):
    parse_flags([f"--train_records={records}", f"--model_dir={model_dir}",
                 f"--warm_start_from={checkpoint}", "--train_steps=1",
                 "--learning_rate=1e-9", "--momentum=0", "--weight_decay=0"] + NET + list(extra))
    estimator_main.main(["estimator_main.py"])
    return tf.train.latest_checkpoint(str(model_dir))


def kernels(checkpoint):
    return {name: tf.train.load_variable(checkpoint, name)
            for name, _ in tf.train.list_variables(checkpoint)
            if name.startswith("backbone/") and name.endswith("kernel")}


def test_fine_tuning_on_other_identities_keeps_the_backbone(pretrained, parse_flags, tmp_path):
    root, base = pretrained
    tuned = fine_tune(parse_flags, root / "six", base, tmp_path / "six")
    before, after = kernels(base), kernels(tuned)
    assert before and sorted(before) == sorted(after)
    for name in before:  # a 1e-9 learning rate: the step leaves the warm-started kernels
        np.testing.assert_allclose(after[name], before[name], atol=1e-6, err_msg=name)
    assert tf.train.load_variable(tuned, "head/proxies").shape == (16, 6)


def test_same_identities_warm_start_the_head_too(pretrained, parse_flags, tmp_path):
    root, base = pretrained
    tuned = fine_tune(parse_flags, root / "four", base, tmp_path / "four")
    np.testing.assert_allclose(tf.train.load_variable(tuned, "head/proxies"),
                               tf.train.load_variable(base, "head/proxies"), atol=1e-6)


def test_warm_starting_everything_needs_the_same_classes(pretrained, parse_flags, tmp_path):
    root, base = pretrained
    with pytest.raises(app.UsageError, match="checkpoint's head has 4 classes, this run 6"):
        fine_tune(parse_flags, root / "six", base, tmp_path / "all", "--warm_start_vars=all")
    assert not (tmp_path / "all").exists()


def test_an_unreadable_checkpoint_is_a_one_line_error(pretrained, parse_flags, tmp_path):
    root, _ = pretrained
    with pytest.raises(app.UsageError, match="no readable checkpoint"):
        fine_tune(parse_flags, root / "six", tmp_path / "missing", tmp_path / "run")
