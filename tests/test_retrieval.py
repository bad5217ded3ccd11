"""evaluation/retrieval.py against naive loop implementations of the definitions."""

import itertools
import math

import numpy as np
import pytest

from evaluation import retrieval

# ---------------------------------------------------------------------------------------------
# Brute-force references: plain Python loops over the written definitions.


def _unit(v):
    norm = math.sqrt(sum(float(a) * float(a) for a in v))
    return [float(a) / norm if norm else 0.0 for a in v]


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def brute_retrieval(embeddings, labels, ks):
    rows = [_unit(v) for v in embeddings]
    n = len(rows)
    found = {k: 0 for k in ks}
    rp, mp, queries = 0.0, 0.0, 0
    for i in range(n):
        r = sum(1 for j in range(n) if j != i and labels[j] == labels[i])
        if r == 0:
            continue
        queries += 1
        # Decreasing similarity; a different-label item first among equals.
        ranked = sorted((-_cos(rows[i], rows[j]), labels[j] == labels[i])
                         for j in range(n) if j != i)
        rel = [same for _, same in ranked]
        for k in ks:
            found[k] += any(rel[:k])
        rp += sum(rel[:r]) / float(r)
        total = 0.0
        for pos in range(r):
            if rel[pos]:
                total += sum(rel[:pos + 1]) / float(pos + 1)
        mp += total / r
    if not queries:
        return None
    out = {f"recall@{k}": found[k] / float(queries) for k in ks}
    out.update({"r_precision": rp / queries, "map@r": mp / queries, "num_queries": queries})
    return out


def brute_identification(gallery, gallery_labels, probes, probe_labels, ranks, fpirs):
    g = [_unit(v) for v in gallery]
    ids = sorted(set(gallery_labels))
    mated_ranks, mated_correct_scores, nonmated_best = [], [], []
    for v, label in zip(probes, probe_labels):
        u = _unit(v)
        score = {i: max(_cos(u, g[j]) for j in range(len(g)) if gallery_labels[j] == i)
                 for i in ids}
        if label in score:
            own = score[label]
            others = [s for i, s in score.items() if i != label]
            mated_ranks.append(1 + sum(1 for s in others if s >= own))
            correct = all(own > s for s in others)
            mated_correct_scores.append(own if correct else None)
        else:
            nonmated_best.append(max(score.values()))
    out = {}
    for k in ranks:
        out[f"rank{k}"] = (sum(1 for r in mated_ranks if r <= k) / float(len(mated_ranks))
                             if mated_ranks else float("nan"))
    for f in fpirs:
        if not nonmated_best:
            out[f"tpir@fpir={f:g}"] = float("nan")
            continue
        threshold = None
        for t in [-math.inf] + sorted(nonmated_best):
            if sum(1 for b in nonmated_best if b > t) / float(len(nonmated_best)) <= f:
                threshold = t
                break
        out[f"threshold@fpir={f:g}"] = threshold
        out[f"tpir@fpir={f:g}"] = (
            sum(1 for s in mated_correct_scores if s is not None and s > threshold)
            / float(len(mated_correct_scores)) if mated_correct_scores else float("nan"))
    return out


def assert_same(actual, expected):
    for key, value in expected.items():
        if key == "num_queries":
            assert actual[key] == value
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-12), key


# Unit vectors with components of +-0.5: every product is exact, so ties are exact in float32
# and float64 alike.
HALVES = np.array(list(itertools.product((-0.5, 0.5), repeat=4)))


def tied_set(rng, n, num_labels):
    rows = HALVES[rng.randint(0, len(HALVES), n)]
    return rows, rng.randint(0, num_labels, n)


# ---------------------------------------------------------------------------------------------
# retrieval_metrics


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_matches_brute_force_on_random_embeddings(seed):
    rng = np.random.RandomState(seed)
    n = rng.randint(2, 60)
    labels = rng.randint(0, rng.randint(1, 12), n)
    centres = rng.randn(12, 8)
    x = centres[labels] + rng.randn(n, 8) * rng.uniform(0.3, 2.0)
    got = retrieval.retrieval_metrics(x, labels, ks=(1, 2, 5, 10), dtype=np.float64,
                                      chunk_size=rng.randint(1, 9))
    expected = brute_retrieval(x, labels.tolist(), (1, 2, 5, 10))
    if expected is None:
        assert got["num_queries"] == 0
    else:
        assert_same(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_retrieval_ties_are_broken_against_the_query(seed, dtype):
    rng = np.random.RandomState(100 + seed)
    x, labels = tied_set(rng, 40, 5)
    got = retrieval.retrieval_metrics(x, labels, ks=(1, 3, 7), dtype=dtype, chunk_size=7)
    assert_same(got, brute_retrieval(x, labels.tolist(), (1, 3, 7)))


def test_retrieval_identical_embeddings_count_as_misses():
    # Every item has the same embedding: each query's neighbours tie, the others come first.
    x = np.ones((4, 3))
    got = retrieval.retrieval_metrics(x, [0, 0, 1, 1], ks=(1, 2, 3))
    assert got["recall@1"] == 0.0 and got["recall@2"] == 0.0 and got["recall@3"] == 1.0
    assert got["r_precision"] == 0.0
    assert got["map@r"] == 0.0


def test_retrieval_is_independent_of_item_order():
    rng = np.random.RandomState(7)
    x, labels = tied_set(rng, 50, 6)
    first = retrieval.retrieval_metrics(x, labels)
    perm = rng.permutation(50)
    second = retrieval.retrieval_metrics(x[perm], labels[perm])
    assert first == pytest.approx(second, abs=1e-12)  # sums in another order


def test_retrieval_leaves_out_singletons_and_queries_without_positives():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    got = retrieval.retrieval_metrics(x, ["a", "a", "b", "b", "lonely"], ks=(1,))
    assert got["num_queries"] == 4 and got["num_left_out"] == 1 and got["num_items"] == 5
    assert got["recall@1"] == 1.0 and got["map@r"] == 1.0 and got["r_precision"] == 1.0


@pytest.mark.parametrize("labels", [[0, 1, 2], [5], []])
def test_retrieval_without_any_query_gives_nan(labels):
    x = np.random.RandomState(0).randn(len(labels), 4)
    got = retrieval.retrieval_metrics(x, labels, ks=(1, 5))
    assert got["num_queries"] == 0
    for key in ("recall@1", "recall@5", "r_precision", "map@r"):
        assert math.isnan(got[key])


def test_retrieval_k_beyond_the_set_and_large_r():
    # One label of 30 items (R = 29 > every K) and K larger than the set.
    rng = np.random.RandomState(3)
    x = rng.randn(33, 5)
    labels = [0] * 30 + [1, 1, 2]
    got = retrieval.retrieval_metrics(x, labels, ks=(1, 50), dtype=np.float64)
    assert got["recall@50"] == 1.0
    assert_same(got, brute_retrieval(x, labels, (1, 50)))


def test_retrieval_chunking_does_not_change_anything():
    rng = np.random.RandomState(11)
    x = rng.randn(200, 16).astype(np.float32)
    labels = rng.randint(0, 30, 200)
    whole = retrieval.retrieval_metrics(x, labels)
    for chunk in (1, 3, 64):
        assert retrieval.retrieval_metrics(x, labels, chunk_size=chunk) == pytest.approx(
            whole, abs=1e-12)


@pytest.mark.parametrize("bad, message", [
    (dict(embeddings=np.zeros((3,))), "2-D"),
    (dict(embeddings=np.array([[0.0, np.nan], [1.0, 0.0], [0.0, 1.0]])), "NaN"),
    (dict(labels=[0, 1]), "labels"),
    (dict(ks=(0,)), "ks"),
    (dict(ks=()), "ks"),
])
def test_retrieval_rejects_bad_input(bad, message):
    args = dict(embeddings=np.eye(3), labels=[0, 0, 1], ks=(1,))
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        retrieval.retrieval_metrics(**args)


# ---------------------------------------------------------------------------------------------
# identification_metrics

FPIRS = (0.01, 0.1, 0.25, 0.5, 1.0)


def identification_case(rng, gallery_ids, per_id, mated, nonmated, dim=6, noise=1.0):
    centres = rng.randn(gallery_ids + nonmated, dim)
    g_labels = np.repeat(np.arange(gallery_ids), per_id)
    gallery = centres[g_labels] + noise * rng.randn(len(g_labels), dim)
    p_labels = np.r_[rng.randint(0, gallery_ids, mated),
                     gallery_ids + np.arange(nonmated)].astype(int)
    probes = centres[p_labels] + noise * rng.randn(len(p_labels), dim)
    return gallery, g_labels, probes, p_labels


@pytest.mark.parametrize("seed", range(8))
def test_identification_matches_brute_force(seed):
    rng = np.random.RandomState(seed)
    per_id = 1 + seed % 3  # one or several gallery entries per identity
    case = identification_case(rng, rng.randint(1, 15), per_id, rng.randint(1, 40),
                               rng.randint(1, 40))
    got = retrieval.identification_metrics(*case, ranks=(1, 2, 5), fpirs=FPIRS,
                                           dtype=np.float64, chunk_size=rng.randint(1, 9))
    expected = brute_identification(*[c.tolist() for c in case], ranks=(1, 2, 5), fpirs=FPIRS)
    assert_same(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_identification_ties(seed, dtype):
    rng = np.random.RandomState(50 + seed)
    gallery, g_labels = tied_set(rng, 12, 6)
    probes, p_labels = tied_set(rng, 60, 9)  # labels 6..8 are not in the gallery
    got = retrieval.identification_metrics(gallery, g_labels, probes, p_labels, ranks=(1, 3),
                                           fpirs=FPIRS, dtype=dtype)
    expected = brute_identification(gallery.tolist(), g_labels.tolist(), probes.tolist(),
                                    p_labels.tolist(), (1, 3), FPIRS)
    assert_same(got, expected)


def test_identification_threshold_rule_by_hand():
    # Non-mated best scores 0.9, 0.5, 0.5, 0.1 (gallery: unit vectors at those cosines).
    gallery = np.array([[1.0, 0.0]])
    angles = np.arccos([0.9, 0.5, 0.5, 0.1])
    nonmated = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    mated = np.array([[0.95, math.sqrt(1 - 0.95 ** 2)], [0.7, math.sqrt(1 - 0.49)],
                      [0.3, math.sqrt(1 - 0.09)]])
    probes = np.r_[mated, nonmated]
    labels = ["g"] * 3 + ["x1", "x2", "x3", "x4"]
    got = retrieval.identification_metrics(gallery, ["g"], probes, labels, ranks=(1,),
                                           fpirs=(0.25, 0.5, 0.7, 1.0), dtype=np.float64)
    assert got["rank1"] == 1.0
    # FPIR 0.25: one of four may exceed t -> t = 0.5 (the 2nd highest); 0.95 and 0.7 pass.
    assert got["threshold@fpir=0.25"] == pytest.approx(0.5)
    assert got["fpir@fpir=0.25"] == 0.25
    assert got["tpir@fpir=0.25"] == pytest.approx(2 / 3.0)
    # FPIR 0.5 and 0.7 allow two: t = the 3rd highest, 0.5 again (a tie), FPIR reached 0.25.
    assert got["threshold@fpir=0.5"] == pytest.approx(0.5)
    assert got["fpir@fpir=0.7"] == 0.25
    # FPIR 1: no threshold at all, TPIR = rank-1 rate.
    assert got["threshold@fpir=1"] == -math.inf
    assert got["tpir@fpir=1"] == 1.0


def test_identification_empty_mated_or_nonmated_sets():
    rng = np.random.RandomState(0)
    gallery = rng.randn(3, 4)
    only_nonmated = retrieval.identification_metrics(gallery, [0, 1, 2], rng.randn(5, 4),
                                                     [7] * 5)
    assert only_nonmated["num_mated_probes"] == 0 and only_nonmated["num_nonmated_probes"] == 5
    assert math.isnan(only_nonmated["rank1"]) and math.isnan(only_nonmated["tpir@fpir=0.01"])
    assert np.isfinite(only_nonmated["threshold@fpir=0.01"])
    only_mated = retrieval.identification_metrics(gallery, [0, 1, 2], gallery, [0, 1, 2])
    assert only_mated["rank1"] == 1.0 and only_mated["rank5"] == 1.0
    assert math.isnan(only_mated["tpir@fpir=0.01"])
    no_probes = retrieval.identification_metrics(gallery, [0, 1, 2], np.zeros((0, 4)), [])
    assert math.isnan(no_probes["rank1"]) and math.isnan(no_probes["tpir@fpir=0.1"])


def test_identification_key_names():
    rng = np.random.RandomState(0)
    case = identification_case(rng, 5, 1, 10, 10)
    got = retrieval.identification_metrics(*case)
    for key in ("rank1", "rank5", "tpir@fpir=0.01", "tpir@fpir=0.1"):
        assert key in got


def test_identification_is_independent_of_order_and_chunks():
    rng = np.random.RandomState(5)
    gallery, g_labels = tied_set(rng, 10, 5)
    probes, p_labels = tied_set(rng, 40, 8)
    first = retrieval.identification_metrics(gallery, g_labels, probes, p_labels, fpirs=FPIRS)
    gp, pp = rng.permutation(10), rng.permutation(40)
    second = retrieval.identification_metrics(gallery[gp], g_labels[gp], probes[pp],
                                              p_labels[pp], fpirs=FPIRS, chunk_size=3)
    assert first == pytest.approx(second, abs=1e-12)


def test_identification_rejects_bad_input():
    g = np.eye(3)
    with pytest.raises(ValueError, match="dimension"):
        retrieval.identification_metrics(g, [0, 1, 2], np.ones((2, 4)), [0, 1])
    with pytest.raises(ValueError, match="fpirs"):
        retrieval.identification_metrics(g, [0, 1, 2], g, [0, 1, 2], fpirs=(0.0,))
    with pytest.raises(ValueError, match="empty"):
        retrieval.identification_metrics(np.zeros((0, 3)), [], g, [0, 1, 2])


# ---------------------------------------------------------------------------------------------
# search


@pytest.mark.parametrize("seed", range(3))
def test_search_matches_brute_force_with_ties_by_index(seed):
    rng = np.random.RandomState(seed)
    gallery, _ = tied_set(rng, 30, 1)
    probes, _ = tied_set(rng, 9, 1)
    scores, indices = retrieval.search(gallery, probes, top_k=7, chunk_size=4)
    for row, probe in enumerate(probes):
        ranked = sorted((-_cos(_unit(probe), _unit(g)), j) for j, g in enumerate(gallery))
        assert indices[row].tolist() == [j for _, j in ranked[:7]]
        assert scores[row].tolist() == pytest.approx([-s for s, _ in ranked[:7]])


def test_search_top_k_beyond_the_gallery():
    scores, indices = retrieval.search(np.eye(3), np.array([[1.0, 0.5, 0.0]]), top_k=10)
    assert indices.tolist() == [[0, 1, 2]]
    assert scores.shape == (1, 3)
