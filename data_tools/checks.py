"""The checks every typed settings value runs in its constructor (``InputConfig``, the model's,
the runtime's and the run spec's configs): one family of helpers, at the bottom of the house
so that every layer may use it. Plain Python: no TensorFlow, no numpy."""

import numbers


def check(condition, message):
    """Raise ``ValueError(message)`` (one line, the settings' failure type) unless ``condition``."""
    if not condition:
        raise ValueError(message)


def is_int(value):
    """An integer, and not a bool (``True`` is an ``Integral`` to Python, never a count here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value):
    """A real number, and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def one_of(value, choices, what):
    """``value`` is one of ``choices``; else a one-line error naming them."""
    check(value in choices, f"{what} must be one of {', '.join(choices)}, got {value!r}")
