"""Where the real LFW-a data lives (../shared/data) and the marks of the tests that need it.

A user's fresh clone has no such folder: those tests skip, saying where they looked.
"""

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
TARBALL = os.path.join(DATA_DIR, "lfw_a_gray250.tar.gz")
PAIRS = os.path.join(DATA_DIR, "lfw_pairs.txt")
AVAILABLE = os.path.isfile(TARBALL) and os.path.isfile(PAIRS)

skip_without_data = pytest.mark.skipif(not AVAILABLE,
                                       reason=f"real LFW-a data not found in {DATA_DIR}")
MARKS = [pytest.mark.real_data, skip_without_data]
