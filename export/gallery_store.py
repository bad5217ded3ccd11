"""A face gallery in SQLite: identities, the sha256 of each enrolled image, its embedding.

The one store behind the face-recognition service (``python -m export.serve``) and
``python -m export.gallery`` with a ``.db`` index. Python's own ``sqlite3`` (no server, one
file), opened in WAL mode so that readers never block the writer and a crash loses at most the
transaction in flight.

* One transaction per enrolment (:meth:`GalleryStore.enrol`): an identity and all the images of
  one request are committed together or not at all, so ``kill -9`` mid-enrolment leaves every
  identity complete or absent, and everything committed before intact.
* The store records the model it was enrolled with (:func:`model_fingerprint`: the sha256 of the
  SavedModel's graph and variables). Embeddings of two models are not comparable, so opening it
  with another model is refused (:class:`ModelMismatchError`), as is another embedding size.
* Embeddings are float32 blobs (little-endian), one row per image; an image already enrolled
  for an identity (same sha256) is not added twice.

No TensorFlow here: :mod:`export.search_index` searches the rows in memory.
"""

import hashlib
import os
import sqlite3
import threading
import time

import numpy as np

SCHEMA_VERSION = 1
PAGE_SIZE = 32768
# Identity names: printable, no path characters (they end up in URLs, file names, logs).
MAX_NAME_LENGTH = 128
_FORBIDDEN_NAME_CHARS = set('/\\\x00')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    source TEXT,
    embedding BLOB NOT NULL,
    UNIQUE (identity_id, sha256));
CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity_id);
"""


class GalleryStoreError(ValueError):
    """A gallery file that cannot be used as asked (one line for the CLI and the service)."""


class ModelMismatchError(GalleryStoreError):
    """The gallery was enrolled with another model."""


def check_identity_name(name):
    """``name`` stripped, or :class:`GalleryStoreError` saying why it cannot be an identity."""
    if not isinstance(name, str):
        raise GalleryStoreError("an identity name must be text")
    name = name.strip()
    if not name:
        raise GalleryStoreError("the identity name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryStoreError(f"the identity name is longer than {MAX_NAME_LENGTH} characters")
    if name in (".", "..") or any(c in _FORBIDDEN_NAME_CHARS for c in name):
        raise GalleryStoreError(f"the identity name {name!r} holds path characters (/ \\ or a "
                                "lone . or ..)")
    if any(not c.isprintable() for c in name):
        raise GalleryStoreError(f"the identity name {name!r} holds control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise GalleryStoreError("the identity name is not valid UTF-8 text") from None
    return name


def model_fingerprint(saved_model_dir):
    """The sha256 (hex) of a SavedModel's ``saved_model.pb`` and ``variables/`` files: the same
    for a copy of the model, different for another training or export."""
    digest = hashlib.sha256()
    files = [os.path.join(saved_model_dir, "saved_model.pb")]
    variables = os.path.join(saved_model_dir, "variables")
    if os.path.isdir(variables):
        files += [os.path.join(variables, name) for name in sorted(os.listdir(variables))]
    for path in files:
        if not os.path.isfile(path):
            continue
        digest.update(os.path.basename(path).encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _to_blob(embedding):
    return np.ascontiguousarray(embedding, dtype="<f4").tobytes()


class GalleryStore:
    """A gallery file (see the module docstring). Safe to share between threads: writes are
    serialised by a lock; each thread reads with the same connection under that lock."""

    def __init__(self, path, model_id, embedding_size, model_path=None, flip=True,
                 create=True):
        self.path = path
        if not create and not os.path.isfile(path):
            raise GalleryStoreError(f"no gallery at {path}")
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            # A 2 KiB embedding row does not fit twice in SQLite's default 4 KiB page (4.2 kB
            # per face measured); 32 KiB pages hold 15 (2.2 kB per face). Only a new file
            # takes it, before WAL mode is set.
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise GalleryStoreError(f"{path} is not a gallery database ({e})") from None
        try:
            self._check_meta(model_id, int(embedding_size), model_path, bool(flip))
        except Exception:
            self._db.close()
            raise

    @classmethod
    def open_existing(cls, path):
        """Open a gallery as it is (for reading): its own model and sizes, nothing checked."""
        if not os.path.isfile(path):
            raise GalleryStoreError(f"no gallery at {path}")
        meta = read_meta(path)
        return cls(path, meta["model_id"], int(meta["embedding_size"]),
                   meta.get("model_path"), meta.get("flip") == "1", create=False)

    def _check_meta(self, model_id, embedding_size, model_path, flip):
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            with self._transaction():
                for key, value in (("schema_version", str(SCHEMA_VERSION)),
                                   ("model_id", model_id),
                                   ("model_path", model_path or ""),
                                   ("embedding_size", str(embedding_size)),
                                   ("flip", "1" if flip else "0")):
                    self._db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise GalleryStoreError(f"{self.path} has gallery schema {meta.get('schema_version')}"
                                    f"; this version reads schema {SCHEMA_VERSION}")
        if meta.get("model_id") != model_id:
            raise ModelMismatchError(
                f"{self.path} was enrolled with another model ({meta.get('model_path') or '?'}, "
                f"fingerprint {meta.get('model_id', '?')[:12]}); this model's fingerprint is "
                f"{model_id[:12]}: embeddings of two models cannot be compared, use a new "
                "gallery file or the gallery's own model")
        if meta.get("embedding_size") != str(embedding_size):
            raise GalleryStoreError(f"{self.path} holds {meta.get('embedding_size')}-d "
                                    f"embeddings; this model gives {embedding_size}-d")
        if meta.get("flip") != ("1" if flip else "0"):
            raise GalleryStoreError(f"{self.path} was enrolled "
                                    f"{'with' if meta.get('flip') == '1' else 'without'} flip "
                                    "test-time augmentation; use the same setting")
        self.model_id = model_id
        self.model_path = meta.get("model_path") or None
        self.embedding_size = embedding_size
        self.flip = flip

    def _transaction(self, mode="IMMEDIATE"):
        """``BEGIN IMMEDIATE`` (a writer: takes the write lock now) or ``DEFERRED`` (a reader:
        one consistent snapshot, never blocking the writer in WAL mode) ... ``COMMIT``, or
        ``ROLLBACK`` on an exception."""
        store = self

        class _Transaction:
            def __enter__(self):
                store._db.execute(f"BEGIN {mode}")

            def __exit__(self, exc_type, exc, tb):
                store._db.execute("COMMIT" if exc_type is None else "ROLLBACK")

        return _Transaction()

    def enrol(self, name, faces):
        """Add ``faces`` (``[(sha256 hex, source or None, embedding [D])]``) to identity
        ``name`` (created if new) in one transaction. Returns ``(added rows [(sha256,
        embedding)], images of the identity now)``; images already enrolled are skipped."""
        name = check_identity_name(name)
        added = []
        with self._lock, self._transaction():
            row = self._db.execute("SELECT id FROM identities WHERE name = ?",
                                   (name,)).fetchone()
            if row is None:
                identity_id = self._db.execute(
                    "INSERT INTO identities (name, created) VALUES (?, ?)",
                    (name, time.time())).lastrowid
            else:
                identity_id = row[0]
            for sha256, source, given in faces:
                embedding = np.asarray(given, np.float32).reshape(-1)
                if embedding.shape[0] != self.embedding_size:
                    raise GalleryStoreError(f"a {embedding.shape[0]}-d embedding for a gallery "
                                            f"of {self.embedding_size}-d ones")
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO faces (identity_id, sha256, source, embedding) "
                    "VALUES (?, ?, ?, ?)", (identity_id, sha256, source, _to_blob(embedding)))
                if cursor.rowcount:
                    added.append((sha256, embedding))
            total = self._db.execute("SELECT COUNT(*) FROM faces WHERE identity_id = ?",
                                     (identity_id,)).fetchone()[0]
        return added, total

    def delete(self, name):
        """Remove identity ``name`` and its images; returns how many images it had (None when
        there is no such identity)."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT id FROM identities WHERE name = ?",
                                   (name,)).fetchone()
            if row is None:
                return None
            count = self._db.execute("DELETE FROM faces WHERE identity_id = ?",
                                     (row[0],)).rowcount
            self._db.execute("DELETE FROM identities WHERE id = ?", (row[0],))
        return count

    def identities(self):
        """``[(name, images)]`` sorted by name."""
        with self._lock:
            return [(name, count) for name, count in self._db.execute(
                "SELECT i.name, COUNT(f.id) FROM identities i LEFT JOIN faces f "
                "ON f.identity_id = i.id GROUP BY i.id ORDER BY i.name").fetchall()]

    def faces(self):
        """``(names, sources, embeddings [N, D] float32)`` of every enrolled image, in the
        order of enrolment."""
        names, sources = [], []
        with self._lock, self._transaction("DEFERRED"):  # the count and the rows agree
            count = self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
            embeddings = np.zeros((count, self.embedding_size), np.float32)
            # Row by row into the matrix: a million blobs are never all in memory at once.
            cursor = self._db.execute(
                "SELECT i.name, f.source, f.embedding FROM faces f JOIN identities i "
                "ON f.identity_id = i.id ORDER BY f.id")
            for i, (name, source, blob) in enumerate(cursor):
                embeddings[i] = np.frombuffer(blob, dtype="<f4")
                names.append(name)
                sources.append(source)
        return names, sources, embeddings

    def __len__(self):
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]

    def close(self):
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_meta(path):
    """The ``meta`` table of a gallery file as a dict (raises :class:`GalleryStoreError`)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise GalleryStoreError(f"{path} is not a gallery database ({e})") from None


def is_gallery_db(path):
    """True when ``path`` names a SQLite gallery (by extension, or by its file header)."""
    if path.lower().endswith((".db", ".sqlite", ".sqlite3")):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\0"
    except OSError:
        return False
