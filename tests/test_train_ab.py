"""benchmarks.train_ab: undoing a change rebuilds the old graph form, and the JSON's spread is
the per-round speed-ups'. Timings are never asserted."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from benchmarks import common, train_ab
from model import layers
from runtime import estimator_factory


def _op_types(changes, dtype):
    with tf.Graph().as_default() as graph, train_ab.undone(changes):
        x = tf.zeros([2, 8, 8, 8], dtype)
        layers.prelu(layers.conv2d(x, 8, 3, groups=4, native_groups=True), is_training=True)
    return {(op.type, op.get_attr("T")) for op in graph.get_operations()
            if op.type in ("Select", "SelectV2", "Conv2D", "DepthwiseConv2dNative")}


def test_undone_changes_build_the_old_forms_and_are_restored():
    if not estimator_factory.bfloat16_supported():
        pytest.skip("no bfloat16 CPU kernels in this TensorFlow")
    now = _op_types((), tf.bfloat16)
    assert ("Select", tf.bfloat16) not in now and ("SelectV2", tf.bfloat16) not in now
    old = _op_types(train_ab.CHANGES, tf.bfloat16)
    assert {("SelectV2", tf.bfloat16), ("DepthwiseConv2dNative", tf.bfloat16)} <= old or \
        {("Select", tf.bfloat16), ("DepthwiseConv2dNative", tf.bfloat16)} <= old
    assert _op_types((), tf.bfloat16) == now  # restored
    if layers.grouped_conv2d_supported():
        assert ("Conv2D", tf.float32) in now


def test_train_ab_reports_the_spread_of_its_rounds(capsys):
    result = train_ab.run("tiny", "fp32", 2, 3, ("select_prelu",), num_classes=4)
    assert len(result["speedup_rounds"]) == 3
    q1, median, q3 = np.percentile(result["speedup_rounds"], [25, 50, 75])
    assert result["speedup_median"] == pytest.approx(median, abs=2e-3)
    assert result["speedup_q1"] == pytest.approx(q1, abs=2e-3)
    assert result["speedup_q3"] == pytest.approx(q3, abs=2e-3)
    assert result["cpus"] == common.cpu_count() and len(result["load_average_end"]) == 3
    assert '"benchmark": "train_ab"' in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown change"):
        train_ab.run("tiny", "fp32", 2, 1, ("nonsense",))
