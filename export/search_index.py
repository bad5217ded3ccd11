"""The in-memory search index of a face gallery: cosine similarity of L2-normalised embeddings.

:class:`ExactIndex` keeps the gallery in one float32 matrix and scores a probe against every row
with one matrix product (numpy's BLAS). It grows by doubling its capacity, and readers take a
``(matrix, labels, count)`` snapshot that an enrolment never changes in place (rows past
``count`` are written, then ``count`` moves): searches need no lock and never wait for an
enrolment. Deleting an identity builds a new snapshot.

:class:`FaissIndex` does the same search with FAISS's ``IndexFlatIP`` (exact inner product) when
the ``faiss`` package is importable; FAISS is not safe to search while another thread adds to
it, so it takes a lock. It searches with one OpenMP thread (``threads``): the service searches
for many requests at once, and OpenMP's spinning workers on busy cores made one probe 3x slower
(262 ms against 77 ms at 200,000 faces on the 2-core development VM under load).
:func:`make_index` picks one (``backend='auto'``: FAISS when importable).

Answers are identities, not images: :meth:`search` returns, best first, the ``top_k`` identities
of the best-scoring gallery images, each with its best score.
"""

import threading

import numpy as np

BACKENDS = ("auto", "numpy", "faiss")


def faiss_module():
    """The ``faiss`` module, or None when it is not installed (it is optional)."""
    try:
        import faiss  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return faiss


class _Snapshot:
    """What a search reads: the first ``count`` rows of ``matrix`` and ``labels``."""

    __slots__ = ("matrix", "labels", "count")

    def __init__(self, matrix, labels, count):
        self.matrix, self.labels, self.count = matrix, labels, count


def _as_matrix(embeddings, dim):
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ValueError(f"expected embeddings of shape [N, {dim}], got {embeddings.shape}")
    return embeddings


def _best_identities(scores, rows, labels, top_k):
    """``[(label, score)]`` of the first ``top_k`` distinct labels along ``rows`` (best first)."""
    matches, seen = [], set()
    for row in rows:
        label = labels[row]
        if label in seen:
            continue
        seen.add(label)
        matches.append((label, float(scores[row])))
        if len(matches) == top_k:
            break
    return matches


def _candidate_count(total, top_k):
    # Several images per identity: look at more rows than top_k so that top_k identities come
    # out of the first pass almost always; a full sort is the fallback.
    return min(total, top_k * 8 + 32)


class ExactIndex:
    """Exact cosine search with numpy (see the module docstring)."""

    backend = "numpy"

    def __init__(self, dim):
        self.dim = int(dim)
        self._write_lock = threading.Lock()
        self._snapshot = _Snapshot(np.zeros((16, self.dim), np.float32), [None] * 16, 0)

    def __len__(self):
        return self._snapshot.count

    def add(self, embeddings, label):
        """Append the rows of ``embeddings`` ([N, dim], L2-normalised) under ``label``."""
        embeddings = _as_matrix(embeddings, self.dim)
        with self._write_lock:
            snap = self._snapshot
            needed = snap.count + len(embeddings)
            matrix, labels = snap.matrix, snap.labels
            if needed > matrix.shape[0]:
                capacity = max(needed, 2 * matrix.shape[0])
                grown = np.zeros((capacity, self.dim), np.float32)
                grown[:snap.count] = matrix[:snap.count]
                matrix = grown
                labels = labels[:snap.count] + [None] * (capacity - snap.count)
            matrix[snap.count:needed] = embeddings
            labels[snap.count:needed] = [label] * len(embeddings)
            self._snapshot = _Snapshot(matrix, labels, needed)

    def add_rows(self, embeddings, labels):
        """Append rows with a label each (the gallery at start: into an empty index the matrix
        is taken as it is, no copy)."""
        embeddings = _as_matrix(embeddings, self.dim)
        labels = list(labels)
        if len(labels) != len(embeddings):
            raise ValueError(f"{len(labels)} labels for {len(embeddings)} rows")
        with self._write_lock:
            if self._snapshot.count == 0 and labels:
                self._snapshot = _Snapshot(np.ascontiguousarray(embeddings), labels,
                                           len(labels))
                return
        for start in range(len(labels)):
            self.add(embeddings[start:start + 1], labels[start])

    def remove(self, label):
        """Drop every row of ``label``; returns how many."""
        with self._write_lock:
            snap = self._snapshot
            keep = [i for i in range(snap.count) if snap.labels[i] != label]
            removed = snap.count - len(keep)
            if removed:
                capacity = max(16, snap.matrix.shape[0])
                matrix = np.zeros((capacity, self.dim), np.float32)
                matrix[:len(keep)] = snap.matrix[keep]
                labels = [snap.labels[i] for i in keep] + [None] * (capacity - len(keep))
                self._snapshot = _Snapshot(matrix, labels, len(keep))
            return removed

    def search(self, probe, top_k):
        """``[(label, score)]``: the best ``top_k`` identities for one embedding [dim]."""
        snap = self._snapshot
        if snap.count == 0 or top_k < 1:
            return []
        scores = snap.matrix[:snap.count] @ np.asarray(probe, np.float32).reshape(self.dim)
        candidates = _candidate_count(snap.count, top_k)
        if candidates < snap.count:
            rows = np.argpartition(-scores, candidates - 1)[:candidates]
            rows = rows[np.argsort(-scores[rows], kind="stable")]
            matches = _best_identities(scores, rows, snap.labels, top_k)
            if len(matches) == top_k:
                return matches
        rows = np.argsort(-scores, kind="stable")
        return _best_identities(scores, rows, snap.labels, top_k)


class FaissIndex:
    """Exact inner-product search with FAISS's ``IndexFlatIP`` (see the module docstring)."""

    backend = "faiss"

    def __init__(self, dim, faiss=None, threads=1):
        self.dim = int(dim)
        self._faiss = faiss or faiss_module()
        if self._faiss is None:
            raise ImportError("faiss is not installed (pip install faiss-cpu)")
        if threads:
            self._faiss.omp_set_num_threads(int(threads))  # process-wide, as OpenMP has it
        self._lock = threading.Lock()
        self._index = self._faiss.IndexFlatIP(self.dim)
        self._labels = []

    def __len__(self):
        return len(self._labels)

    def add(self, embeddings, label):
        embeddings = np.ascontiguousarray(_as_matrix(embeddings, self.dim))
        with self._lock:
            self._index.add(embeddings)
            self._labels.extend([label] * len(embeddings))

    def add_rows(self, embeddings, labels):
        embeddings = np.ascontiguousarray(_as_matrix(embeddings, self.dim))
        labels = list(labels)
        if len(labels) != len(embeddings):
            raise ValueError(f"{len(labels)} labels for {len(embeddings)} rows")
        with self._lock:
            self._index.add(embeddings)
            self._labels.extend(labels)

    def remove(self, label):
        with self._lock:
            keep = [i for i, name in enumerate(self._labels) if name != label]
            removed = len(self._labels) - len(keep)
            if removed:
                vectors = (self._index.reconstruct_n(0, len(self._labels))[keep]
                           if keep else np.zeros((0, self.dim), np.float32))
                self._index = self._faiss.IndexFlatIP(self.dim)
                self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
                self._labels = [self._labels[i] for i in keep]
            return removed

    def search(self, probe, top_k):
        probe = np.ascontiguousarray(np.asarray(probe, np.float32).reshape(1, self.dim))
        with self._lock:
            total = len(self._labels)
            if total == 0 or top_k < 1:
                return []
            candidates = _candidate_count(total, top_k)
            while True:
                scores, rows = self._index.search(probe, candidates)
                row_scores = dict(zip(rows[0].tolist(), scores[0].tolist()))
                ordered = [r for r in rows[0].tolist() if r >= 0]
                matches = _best_identities(row_scores, ordered, self._labels, top_k)
                if len(matches) == top_k or candidates >= total:
                    return matches
                candidates = min(total, candidates * 4)


def make_index(dim, backend="auto"):
    """An empty index of ``dim``-d embeddings: ``'numpy'``, ``'faiss'``, or ``'auto'`` (FAISS
    when importable, numpy otherwise)."""
    if backend not in BACKENDS:
        raise ValueError(f"index backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "faiss" or (backend == "auto" and faiss_module() is not None):
        return FaissIndex(dim)
    return ExactIndex(dim)
