"""Retrieval (Recall@K, MAP@R) and 1:N identification metrics: pure, vectorised, chunked numpy.

Similarity is the cosine of L2-normalised embeddings (the inner product of the normalised
rows; all-zero rows stay zero, as in :func:`evaluation.verification.l2_normalize`). Score matrices
are never built whole: queries go through in chunks of ``chunk_size`` rows, sized by default so
that one chunk of scores takes about ``CHUNK_BYTES`` (64 MB), so a gallery of a million 512-d
embeddings (2 GB in float32) is searched with a few hundred MB on top of it.

**Ties** are broken against the query, so no metric depends on the order of the items: in
:func:`retrieval_metrics` a different-label item with the same similarity as a same-label one
ranks before it; in :func:`identification_metrics` a non-mated gallery identity scoring the same
as the mated one ranks before it, and a score equal to the threshold does not exceed it.

* :func:`retrieval_metrics` (leave one out within one set, as Musgrave et al., *A Metric
  Learning Reality Check*, ECCV 2020): ``recall@K``, ``r_precision``, ``map@r``.
* :func:`identification_metrics` (a gallery and probes, as NIST FRVT 1:N and IJB-C 1:N):
  closed-set ``rank1``, ``rank5``, ... (CMC) and open-set ``tpir@fpir=0.01``, ...
* :func:`search`: the ``top_k`` gallery entries of each probe (the gallery CLI).
"""

import numpy as np

CHUNK_BYTES = 64 << 20
DEFAULT_KS = (1, 5, 10)
DEFAULT_RANKS = (1, 5)
DEFAULT_FPIRS = (0.01, 0.1)


def l2_normalize(x, dtype=np.float32, rows=None):
    """Rows of ``x`` (or ``x[rows]``, in that order) divided by their L2 norm, as ``dtype``;
    all-zero rows stay zero.

    Normalised in slices, so a float32 input of 2 GB needs neither a float64 copy nor, with
    ``rows``, a reordered one: the output is the only new array.
    """
    x = np.asarray(x)
    count = x.shape[0] if rows is None else len(rows)
    out = np.empty((count,) + x.shape[1:], dtype=dtype)
    step = max(1, (CHUNK_BYTES // 8) // max(1, x.shape[-1]))
    for start in range(0, count, step):
        where = slice(start, start + step) if rows is None else rows[start:start + step]
        block = x[where].astype(np.float64)
        norms = np.sqrt(np.sum(np.square(block), axis=1, keepdims=True))
        norms[norms == 0.0] = 1.0
        out[start:start + step] = block / norms
    return out


def _check_embeddings(x, name, dim=None):
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, dim], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, the gallery {dim}")
    step = max(1, (CHUNK_BYTES // 8) // max(1, x.shape[1]))
    for start in range(0, x.shape[0], step):
        finite = np.isfinite(x[start:start + step]).all(axis=1)
        if not finite.all():
            raise ValueError(f"{name} has NaN or infinite values (first in row "
                             f"{start + int(np.flatnonzero(~finite)[0])})")
    return x


def _check_labels(labels, count, name):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != count:
        raise ValueError(f"{name} must be a 1-D array of {count} labels, got shape {labels.shape}")
    return labels


def _check_positive_ints(values, name):
    values = tuple(values)
    if not values or any(isinstance(v, bool) or int(v) != v or v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers, got {values!r}")
    return tuple(int(v) for v in values)


def _chunk_rows(columns, dtype, chunk_size):
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
        return int(chunk_size)
    return max(1, CHUNK_BYTES // (max(1, columns) * np.dtype(dtype).itemsize))


def _codes(labels):
    """Labels of any type (ints, strings) as int codes 0..L-1; returns (codes, uniques)."""
    uniques, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), uniques


def retrieval_metrics(embeddings, labels, ks=DEFAULT_KS, chunk_size=None, dtype=np.float32):
    """Leave-one-out retrieval metrics of a labelled set of embeddings.

    Every item is a query against all the others, ranked by decreasing cosine similarity (ties
    against the query: see the module docstring). A query whose label has no other item is left
    out. With R the number of other items of the query's label and rel(i) = 1 when the i-th
    nearest has it:

    * ``recall@K``: fraction of queries with at least one same-label item among the K nearest
      (Precision@1 for K = 1);
    * ``r_precision``: mean over queries of (same-label items among the R nearest) / R;
    * ``map@r``: mean over queries of (1/R) Σ_{i≤R} P(i)·rel(i), P(i) the precision of the i
      nearest.

    ``embeddings`` is [N, D] (any scale; L2-normalised here, compared in ``dtype``); ``labels``
    N labels (ints or strings). Also returns ``num_queries``, ``num_items`` and
    ``num_left_out`` (queries without a same-label item). With no query left, every metric is
    NaN.
    """
    x = _check_embeddings(embeddings, "embeddings")
    codes, _ = _codes(_check_labels(labels, x.shape[0], "labels"))
    ks = _check_positive_ints(ks, "ks")
    n = x.shape[0]
    counts = np.bincount(codes, minlength=1) if n else np.zeros(1, np.int64)
    others = counts[codes] - 1 if n else np.zeros(0, np.int64)
    queries = np.flatnonzero(others > 0)
    result = {"num_items": int(n), "num_queries": int(queries.size),
              "num_left_out": int(n - queries.size)}
    names = [f"recall@{k}" for k in ks] + ["r_precision", "map@r"]
    if queries.size == 0:
        result.update((name, float("nan")) for name in names)
        return result

    x = l2_normalize(x, dtype)
    found = np.zeros(len(ks), np.int64)
    r_precision_sum = 0.0
    map_sum = 0.0
    rows = _chunk_rows(n, dtype, chunk_size)
    for start in range(0, queries.size, rows):
        q = queries[start:start + rows]
        scores = np.dot(x[q], x.T)
        scores[np.arange(q.size), q] = -np.inf  # leave the query itself out
        r = others[q]
        depth = min(n - 1, max(*ks, int(r.max())))
        rel = _ranked_relevance(scores, codes == codes[q][:, None], depth)
        for i, k in enumerate(ks):
            found[i] += np.count_nonzero(rel[:, :min(k, depth)].any(axis=1))
        within = np.arange(1, depth + 1)[None, :] <= r[:, None]
        hits = rel & within
        precision = np.cumsum(rel, axis=1) / np.arange(1, depth + 1)[None, :]
        r_precision_sum += float(np.sum(np.count_nonzero(hits, axis=1) / r))
        map_sum += float(np.sum(np.sum(precision * hits, axis=1) / r))
    for i, k in enumerate(ks):
        result[f"recall@{k}"] = float(found[i]) / queries.size
    result["r_precision"] = r_precision_sum / queries.size
    result["map@r"] = map_sum / queries.size
    return result


def _ranked_relevance(scores, relevant, depth):
    """rel[q, i] for the ``depth`` best-ranked items of each row, ties against the query.

    The depth-th largest score of each row bounds the candidates; every item at least as high
    is kept (a tie group is kept whole, so the tie-break below sees all of it), then sorted by
    decreasing score with the non-relevant item first among equals.
    """
    n = scores.shape[1]
    if depth < n:
        kth = -np.partition(-scores, depth - 1, axis=1)[:, depth - 1]
        width = int(np.max(np.count_nonzero(scores >= kth[:, None], axis=1)))
    else:
        width = n
    if width < n:
        candidates = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    else:
        candidates = np.broadcast_to(np.arange(n), scores.shape)
    values = np.take_along_axis(scores, candidates, axis=1)
    rel = np.take_along_axis(relevant, candidates, axis=1)
    order = np.lexsort((rel, -values), axis=1)
    return np.take_along_axis(rel, order, axis=1)[:, :depth]


def identification_metrics(gallery_embeddings, gallery_labels, probe_embeddings, probe_labels,
                           ranks=DEFAULT_RANKS, fpirs=DEFAULT_FPIRS, chunk_size=None,
                           dtype=np.float32):
    """1:N identification of probes against a gallery (cosine similarity, ties as above).

    A gallery identity's score for a probe is the best score of its gallery entries (one entry
    per identity is the usual gallery; several are allowed). A probe is *mated* when its label
    is in the gallery, *non-mated* otherwise.

    * ``rank1``, ``rank5``, ... (closed set, over mated probes): fraction whose identity is among
      the K best-scoring gallery identities (the CMC curve at K);
    * ``tpir@fpir=0.01``, ... (open set, NIST FRVT / IJB-C 1:N): the threshold t is the lowest
      for which the fraction of non-mated probes whose best gallery score exceeds t (``>``) is
      at most the target FPIR; TPIR is the fraction of mated probes whose best-scoring identity
      is theirs (rank 1) with a score above t. ``threshold@fpir=0.01`` is that t (-inf for an
      FPIR of 1), ``fpir@fpir=0.01`` the FPIR reached.

    Also ``num_gallery_entries``, ``num_gallery_identities``, ``num_mated_probes``,
    ``num_nonmated_probes``. With no mated probe the rank and TPIR values are NaN; with no
    non-mated probe every FPIR figure is NaN (there is nothing to set the threshold on).
    """
    g = _check_embeddings(gallery_embeddings, "gallery_embeddings")
    p = _check_embeddings(probe_embeddings, "probe_embeddings", dim=g.shape[1])
    g_labels = _check_labels(gallery_labels, g.shape[0], "gallery_labels")
    p_labels = _check_labels(probe_labels, p.shape[0], "probe_labels")
    ranks = _check_positive_ints(ranks, "ranks")
    fpirs = tuple(float(f) for f in fpirs)
    if not fpirs or any(not 0.0 < f <= 1.0 for f in fpirs):
        raise ValueError(f"fpirs must be in (0, 1], got {fpirs!r}")
    if g.shape[0] == 0:
        raise ValueError("the gallery is empty")

    best = best_scores(g, g_labels, p, p_labels, chunk_size=chunk_size, dtype=dtype)
    mated = best["mated"]
    num_mated = int(np.count_nonzero(mated))
    num_nonmated = int(mated.size - num_mated)
    result = {"num_gallery_entries": int(g.shape[0]),
              "num_gallery_identities": int(best["num_identities"]),
              "num_mated_probes": num_mated, "num_nonmated_probes": num_nonmated}
    rank = best["rank"][mated]
    for k in ranks:
        result[f"rank{k}"] = (float(np.count_nonzero(rank <= k)) / num_mated
                                if num_mated else float("nan"))
    nonmated_best = best["best"][~mated]
    correct = rank == 1
    mated_score = best["mated_score"][mated]
    for f in fpirs:
        key = f"{f:g}"
        if not num_nonmated:
            threshold = fpir = tpir = float("nan")
        else:
            threshold = fpir_threshold(nonmated_best, f)
            fpir = float(np.count_nonzero(nonmated_best > threshold)) / num_nonmated
            tpir = (float(np.count_nonzero(correct & (mated_score > threshold))) / num_mated
                    if num_mated else float("nan"))
        result[f"tpir@fpir={key}"] = tpir
        result[f"threshold@fpir={key}"] = threshold
        result[f"fpir@fpir={key}"] = fpir
    return result


def fpir_threshold(nonmated_best_scores, fpir):
    """The lowest t with #(scores > t) / len(scores) <= ``fpir``: the (c+1)-th highest score for
    the largest allowed count c (``-inf`` when every score may exceed it)."""
    scores = np.sort(np.asarray(nonmated_best_scores, dtype=np.float64))[::-1]
    n = scores.size
    allowed = int(np.count_nonzero(np.arange(n + 1) / float(n) <= fpir)) - 1
    return float(scores[allowed]) if allowed < n else float("-inf")


def best_scores(gallery_embeddings, gallery_labels, probe_embeddings, probe_labels,
                chunk_size=None, dtype=np.float32):
    """Per probe: ``best`` (highest gallery score), ``mated`` (label in the gallery),
    ``mated_score`` (its identity's score; NaN if non-mated) and ``rank`` (1 + the number of
    other identities scoring at least as high; 0 if non-mated). Inputs are not re-checked."""
    g_labels = np.asarray(gallery_labels)
    p_labels = np.asarray(probe_labels)
    identities, g_codes = np.unique(g_labels, return_inverse=True)
    g_codes = g_codes.reshape(-1)
    num_identities = identities.size
    order = np.argsort(g_codes, kind="stable")
    g = l2_normalize(gallery_embeddings, dtype, rows=order)
    starts = np.flatnonzero(np.r_[True, np.diff(g_codes[order]) != 0])
    pooled = starts.size != g.shape[0]
    # Probe label -> identity column, or -1.
    where = np.searchsorted(identities, p_labels) if num_identities else np.zeros(0, int)
    where = np.minimum(where, num_identities - 1)
    mated = identities[where] == p_labels if p_labels.size else np.zeros(0, bool)
    column = np.where(mated, where, -1)

    num_probes = p_labels.shape[0]
    best = np.empty(num_probes, np.float64)
    mated_score = np.full(num_probes, np.nan)
    rank = np.zeros(num_probes, np.int64)
    rows = _chunk_rows(g.shape[0], dtype, chunk_size)
    probes = np.asarray(probe_embeddings)
    for start in range(0, num_probes, rows):
        stop = min(start + rows, num_probes)
        scores = np.dot(l2_normalize(probes[start:stop], dtype), g.T)
        if pooled:
            scores = np.maximum.reduceat(scores, starts, axis=1)
        best[start:stop] = scores.max(axis=1)
        c = column[start:stop]
        m = np.flatnonzero(c >= 0)
        if m.size:
            own = scores[m, c[m]]
            mated_score[start + m] = own
            rank[start + m] = np.count_nonzero(scores[m] >= own[:, None], axis=1)
    return {"best": best, "mated": mated, "mated_score": mated_score, "rank": rank,
            "num_identities": num_identities}


def search(gallery_embeddings, probe_embeddings, top_k=5, chunk_size=None, dtype=np.float32):
    """The ``top_k`` gallery entries of each probe by cosine similarity.

    Returns ``(scores, indices)``, both [num_probes, min(top_k, gallery size)], best first (ties
    by gallery index).
    """
    g = l2_normalize(_check_embeddings(gallery_embeddings, "gallery_embeddings"), dtype)
    p = _check_embeddings(probe_embeddings, "probe_embeddings", dim=g.shape[1])
    top_k = _check_positive_ints([top_k], "top_k")[0]
    k = min(top_k, g.shape[0])
    scores_out = np.zeros((p.shape[0], k), np.float64)
    index_out = np.zeros((p.shape[0], k), np.int64)
    rows = _chunk_rows(g.shape[0], dtype, chunk_size)
    for start in range(0, p.shape[0], rows):
        scores = np.dot(l2_normalize(p[start:start + rows], dtype), g.T)
        if k < g.shape[0]:
            # Everything at least as high as the k-th score, so ties are resolved by index.
            kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
            width = int(np.max(np.count_nonzero(scores >= kth[:, None], axis=1)))
            part = np.argpartition(-scores, width - 1, axis=1)[:, :width] \
                if width < g.shape[0] else np.broadcast_to(np.arange(g.shape[0]), scores.shape)
        else:
            part = np.broadcast_to(np.arange(g.shape[0]), scores.shape)
        values = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -values), axis=1)[:, :k]
        index_out[start:start + rows] = np.take_along_axis(part, order, axis=1)
        scores_out[start:start + rows] = np.take_along_axis(values, order, axis=1)
    return scores_out, index_out
