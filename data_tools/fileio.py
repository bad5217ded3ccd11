"""Files written whole or not at all, and their checksums: the project's neutral I/O helpers.

No TensorFlow and no project imports: every layer (``data_tools``, ``model``, ``export``) may use
them.
"""

import datetime
import hashlib
import json
import math
import os


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path):
    # Makes a rename durable on power loss; not every platform lets a directory be opened.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call ``write(binary_file)`` on a temporary file next to ``path``, then rename it over
    ``path``: readers see the old file or the new one, never a partial one, even if the process
    dies. Used for manifests, labels, shard plans, reports and saved embeddings.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk must not keep a partial temporary file eating the space that is left.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(directory)


def atomic_write_text(path, text):
    """``atomic_write`` of ``text`` as UTF-8."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_metrics_json(path, metrics, extra=None, **fields):
    """``metrics`` (non-finite values -> null), ``fields``, the time (``created``) and ``extra`` as
    one sorted JSON object, written atomically to ``path``; returns ``path``."""
    data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in metrics.items()}
    data.update(fields)
    data["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if extra:
        data["extra"] = extra
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
