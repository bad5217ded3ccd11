"""Fake ``npu_bridge.estimator`` (see ``npu_bridge``)."""
