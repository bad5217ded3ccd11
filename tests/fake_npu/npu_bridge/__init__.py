"""A stand-in for Huawei Ascend's ``npu_bridge`` (TF 1.15 adapter), for tests only.

It lives outside the ``tests`` package on purpose: tests put ``tests/fake_npu`` on ``sys.path``
so that ``import npu_bridge`` finds it exactly where the real one would be found. The classes
keep the real constructor signatures and run on the CPU; each records how it was used in a
module-level list so that tests can tell the estimator factory really went through it.
"""

FAKE = True
