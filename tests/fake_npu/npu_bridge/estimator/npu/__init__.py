"""Fake ``npu_bridge.estimator.npu``: the five modules the estimator factory imports."""
