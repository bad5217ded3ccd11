"""Evaluation protocols as objects (``protocol.py``, ``registry.py``), their metrics (numpy and
the streaming EVAL wrappers), named sets, reports and report tables."""
