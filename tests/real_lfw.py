"""Where the real LFW-a data lives (../shared/data) and the marks of the tests that need it.

A user's fresh clone has no such folder: those tests skip, saying where they looked. In CI
(``CI`` set, as ``.ci/run`` is run) with the folder present they must not skip: a real-data test
that skips there (say, a file missing or unreadable in the folder) fails instead, naming the
reason (``ci_failure`` below, applied by ``tests/conftest.py``).
"""

import os
import tarfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
TARBALL = os.path.join(DATA_DIR, "lfw_a_gray250.tar.gz")
PAIRS = os.path.join(DATA_DIR, "lfw_pairs.txt")
AVAILABLE = os.path.isfile(TARBALL) and os.path.isfile(PAIRS)

skip_without_data = pytest.mark.skipif(not AVAILABLE,
                                       reason=f"real LFW-a data not found in {DATA_DIR}")
MARKS = [pytest.mark.real_data, skip_without_data]


def extract(directory):
    """Extract the LFW-a archive into ``directory``; returns its image root (``lfw_gray250``).

    Only folders and regular files, none with an absolute path or ``..``; the "data" filter
    (Python 3.8.17+/3.11.4+) refuses links out of the target directory too. Tests take the
    extraction from the ``real_lfw_dir`` fixture (tests/conftest.py): one per session.
    """
    with tarfile.open(TARBALL, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isdir() or m.isfile()]
        assert all(not m.name.startswith("/") and ".." not in m.name.split("/") for m in members)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(str(directory), members=members, **safe)
    return os.path.join(str(directory), "lfw_gray250")


def in_ci(environ=None):
    """True when running in CI: ``CI`` set to anything but empty, 0 or false."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def ci_failure(skip_reason, environ=None, data_dir=None):
    """The failure message for a real-data test that skipped, or None when skipping is fine
    (not in CI, or no data folder; ``data_dir`` defaults to ``DATA_DIR``)."""
    data_dir = DATA_DIR if data_dir is None else data_dir
    if not in_ci(environ) or not os.path.isdir(data_dir):
        return None
    return (f"real-data test skipped in CI although {data_dir} exists (CI must run it): "
            f"{skip_reason}")
