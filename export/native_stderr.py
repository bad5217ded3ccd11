"""What the TFLite converter and interpreter write straight to the process's stderr (C++,
file descriptor 2, past Python's logging and ``TF_CPP_MIN_LOG_LEVEL``), sorted into what a user
needs and what only reads like a failure.

The MLIR converter prints "Summary on the non-converted ops ... % non-converted = 34.78 %"
after every successful conversion: the ops it lists are ``arith.constant`` (the model's weights,
held as constant tensors, which TFLite stores as buffers, not as ops) and it is no failure. The
interpreter announces "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." Both are
replaced by at most one explained line; anything else (a real error) passes through unchanged.
"""

import contextlib
import os
import re
import sys
import tempfile

SUMMARY_HEADER = "Summary on the non-converted ops:"
_COUNTS = re.compile(r"Non-Converted Ops: (\d+), Total Ops (\d+)")
_OP_LINE = re.compile(r"^- ([\w.]+):\s+(\d+) occurrences")
# Lines of the summary block after its header: rulers, bullet points, op counts, dtype counts.
_SUMMARY_LINE = re.compile(r"^(\s*|-{3,}|\s*\* .*|- [\w.]+:.*|\s+\(\w+: .*\).*)$")
_DROPPED = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


def explain_converter_log(text):
    """``(kept, note)``: ``text`` without the converter's op summary and the interpreter's
    delegate line, and one sentence explaining the summary (None when there was none)."""
    kept, note, in_summary = [], None, False
    ops, counts = [], None
    for line in text.splitlines():
        if line.strip() == SUMMARY_HEADER:
            in_summary = True
            continue
        if in_summary and _SUMMARY_LINE.match(line):
            counts = counts or _COUNTS.search(line)
            op = _OP_LINE.match(line)
            if op:
                ops.append(op.group(1))
            continue
        in_summary = False
        if line.strip() not in _DROPPED:
            kept.append(line)
    if counts:
        non_converted, total = counts.groups()
        if set(ops) <= {"arith.constant"}:
            what = "constants (the weights, which TFLite stores as buffers, not as ops)"
        else:
            what = "left to TFLite's own kernels: " + ", ".join(sorted(set(ops)))
        note = (f"the TFLite converter's \"{non_converted} of {total} ops non-converted\" are "
                f"{what}; it is not a failure")
    return "\n".join(kept) + ("\n" if kept else ""), note


@contextlib.contextmanager
def filtered(notes):
    """Capture file descriptor 2 for the block; afterwards write back what
    :func:`explain_converter_log` keeps and append its note (if any) to the list ``notes``.
    Python's own writes to ``sys.stderr`` in the block are kept like any other line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept, note = explain_converter_log(capture.read().decode("utf-8", "replace"))
            if kept.strip():
                sys.stderr.write(kept)
                sys.stderr.flush()
            if note:
                notes.append(note)
