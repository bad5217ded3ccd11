"""The SQLite gallery (export/gallery_store.py), the in-memory search index
(export/search_index.py) and export.gallery on a .db index (enrol, search, import of an npz)."""

import hashlib
import os
import sqlite3

import numpy as np
import pytest

from export import gallery_index, gallery_store, search_index
from tests import tiny_model
from tests.test_gallery import model, run_cli, write_faces  # noqa: F401 - the fixture

DIM = 16


def unit_rows(n, dim=DIM, seed=0):
    rows = np.random.RandomState(seed).randn(n, dim).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def faces_of(embeddings, tag):
    return [(hashlib.sha256(f"{tag}{i}".encode()).hexdigest(), f"{tag}{i}.png", e)
            for i, e in enumerate(embeddings)]


def test_store_round_trip_wal_and_duplicates(tmp_path):
    path = str(tmp_path / "g.db")
    emb = unit_rows(5)
    with gallery_store.GalleryStore(path, "m1", DIM, model_path="/m") as store:
        added, total = store.enrol("alice", faces_of(emb[:3], "a"))
        assert (len(added), total) == (3, 3)
        # the same images again: nothing added; one new image: one row
        added, total = store.enrol("alice", faces_of(emb[:3], "a") + faces_of(emb[3:4], "x"))
        assert (len(added), total) == (1, 4)
        store.enrol("bob", faces_of(emb[4:], "b"))
        assert store.identities() == [("alice", 4), ("bob", 1)]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA page_size").fetchone()[0] == gallery_store.PAGE_SIZE
    with gallery_store.GalleryStore(path, "m1", DIM) as store:
        names, sources, stored = store.faces()
        assert names == ["alice"] * 4 + ["bob"]
        assert sources[0] == "a0.png"
        np.testing.assert_array_equal(stored, emb[[0, 1, 2, 3, 4]])
        assert store.delete("alice") == 4
        assert store.delete("alice") is None
        assert store.identities() == [("bob", 1)]
        assert len(store) == 1


def test_store_refuses_another_model_size_or_flip(tmp_path):
    path = str(tmp_path / "g.db")
    gallery_store.GalleryStore(path, "model-a", DIM, model_path="/runs/a").close()
    with pytest.raises(gallery_store.ModelMismatchError, match="another model.*/runs/a"):
        gallery_store.GalleryStore(path, "model-b", DIM)
    with pytest.raises(gallery_store.GalleryStoreError, match="16-d"):
        gallery_store.GalleryStore(path, "model-a", 32)
    with pytest.raises(gallery_store.GalleryStoreError, match="flip"):
        gallery_store.GalleryStore(path, "model-a", DIM, flip=False)
    not_db = tmp_path / "text.db"
    not_db.write_text("hello, not a database " * 100)
    with pytest.raises(gallery_store.GalleryStoreError, match="not a gallery database"):
        gallery_store.GalleryStore(str(not_db), "m", DIM)


def test_enrol_is_one_transaction(tmp_path):
    path = str(tmp_path / "g.db")
    with gallery_store.GalleryStore(path, "m", DIM) as store:
        store.enrol("alice", faces_of(unit_rows(2), "a"))
        bad = faces_of(unit_rows(2, seed=1), "c") + [("f" * 64, None, np.zeros(DIM + 1))]
        with pytest.raises(gallery_store.GalleryStoreError, match="17-d"):
            store.enrol("carol", bad)
        # carol's first two rows were rolled back with her identity; alice is untouched
        assert store.identities() == [("alice", 2)]


@pytest.mark.parametrize("name", ["a/b", "..", ".", "a\\b", "", "   ", "x\x00y", "tab\there",
                                  "n" * 129])
def test_identity_names_refused(name):
    with pytest.raises(gallery_store.GalleryStoreError):
        gallery_store.check_identity_name(name)


def test_identity_names_accepted():
    assert gallery_store.check_identity_name(" José Ñúñez ") == "José Ñúñez"
    assert gallery_store.check_identity_name("李小龙") == "李小龙"


def test_model_fingerprint_tracks_the_weights(tmp_path):
    a = tiny_model.build_saved_model(str(tmp_path / "a"), tiny_model.projection(1))
    b = tiny_model.build_saved_model(str(tmp_path / "b"), tiny_model.projection(2))
    fa, fb = gallery_store.model_fingerprint(a), gallery_store.model_fingerprint(b)
    assert fa != fb
    assert fa == gallery_store.model_fingerprint(a) and len(fa) == 64


def brute_force(gallery, labels, probe, top_k):
    """Reference: every score, best per label, sorted."""
    best = {}
    for row, label in zip(gallery @ probe, labels):
        best[label] = max(best.get(label, -np.inf), float(row))
    return sorted(best.items(), key=lambda kv: -kv[1])[:top_k]


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_search_index_matches_brute_force(backend):
    if backend == "faiss" and search_index.faiss_module() is None:
        pytest.skip("faiss is not installed (optional)")
    rng = np.random.RandomState(3)
    gallery = unit_rows(600, seed=4)
    labels = [f"id{rng.randint(40)}" for _ in range(600)]
    index = search_index.make_index(DIM, backend)
    for label in dict.fromkeys(labels):
        rows = [i for i, name in enumerate(labels) if name == label]
        index.add(gallery[rows], label)
    order = [i for label in dict.fromkeys(labels) for i, name in enumerate(labels)
             if name == label]
    assert len(index) == 600
    for probe in unit_rows(5, seed=9):
        for top_k in (1, 5, 40, 100):
            got = index.search(probe, top_k)
            want = brute_force(gallery[order], [labels[i] for i in order], probe, top_k)
            assert [g[0] for g in got] == [w[0] for w in want]
            np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-5)
    removed = index.remove("id0")
    assert removed == labels.count("id0") and len(index) == 600 - removed
    assert all(label != "id0" for label, _ in index.search(gallery[0], 100))


def test_index_grows_and_keeps_old_snapshots():
    index = search_index.ExactIndex(DIM)
    rows = unit_rows(100)
    index.add(rows[:10], "a")
    before = index._snapshot
    for i in range(10, 100):
        index.add(rows[i:i + 1], f"p{i}")
    assert before.count == 10 and len(index) == 100
    assert index.search(rows[57], 1) == [("p57", pytest.approx(1.0, abs=1e-5))]


def test_gallery_cli_enrol_search_import_on_db(model, tmp_path, capsys):  # noqa: F811
    model_dir, _ = model
    faces = str(tmp_path / "faces")
    write_faces(faces, ["ann", "ben", "cat"], 3, seed=1)
    db = str(tmp_path / "g.db")
    assert run_cli([f"--model={model_dir}", f"--folder={faces}", f"--index={db}", "enrol"]) == 0
    assert "enrolled 9 new image(s)" in capsys.readouterr().out
    assert run_cli([f"--model={model_dir}", f"--folder={faces}", f"--index={db}", "enrol"]) == 0
    assert "enrolled 0 new image(s); " + db + " holds 9" in capsys.readouterr().out
    probe = os.path.join(faces, "ben", "ben_1.png")
    assert run_cli([f"--index={db}", "--top_k=2", "search", probe]) == 0
    out = capsys.readouterr().out
    assert f"{probe}: ben" in out
    # the same folder in an npz, imported: the same rows as the .db enrolment
    npz = str(tmp_path / "g.npz")
    assert run_cli([f"--model={model_dir}", f"--folder={faces}", f"--index={npz}", "enrol"]) == 0
    db2 = str(tmp_path / "imported.db")
    assert run_cli([f"--npz={npz}", f"--index={db2}", "import"]) == 0
    assert "imported 9 new image(s)" in capsys.readouterr().out
    a, b = gallery_index.load_index(db), gallery_index.load_index(db2)
    order_a, order_b = np.argsort(a["paths"]), np.argsort(b["paths"])
    np.testing.assert_array_equal(a["labels"][order_a], b["labels"][order_b])
    np.testing.assert_allclose(a["embeddings"][order_a], b["embeddings"][order_b], atol=1e-6)


def test_gallery_cli_refuses_db_of_another_model(model, tmp_path, capsys):  # noqa: F811
    model_dir, _ = model
    other = tiny_model.build_saved_model(str(tmp_path / "other"), tiny_model.projection(9))
    faces = str(tmp_path / "faces")
    write_faces(faces, ["ann"], 2, seed=2)
    db = str(tmp_path / "g.db")
    assert run_cli([f"--model={model_dir}", f"--folder={faces}", f"--index={db}", "enrol"]) == 0
    capsys.readouterr()
    assert run_cli([f"--model={other}", f"--folder={faces}", f"--index={db}", "enrol"]) == 1
    err = capsys.readouterr().err
    # the transform line, then the refusal in one line
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "enrolled with another model" in errors[0]
    probe = os.path.join(faces, "ann", "ann_0.png")
    assert run_cli([f"--model={other}", f"--index={db}", "search", probe]) == 1
    assert "another model" in capsys.readouterr().err


def test_search_benchmark_smoke(capsys):
    from benchmarks import gallery_search  # noqa: PLC0415

    results = gallery_search.run(sizes=(200,), dim=DIM, probes=3, store_faces=100)
    assert {r["backend"] for r in results} >= {"numpy"}
    assert all(r["search_ms"] > 0 for r in results)
    assert all(r["index_mib"] == pytest.approx(200 * DIM * 4 / 2 ** 20, abs=1e-3)
               for r in results)
    lines = capsys.readouterr().out.strip().splitlines()
    # the store line, each measured size, then its 10^7 extrapolation
    assert len(lines) == 1 + 2 * len(results)
    assert '"benchmark": "gallery_store", "faces": 100' in lines[0]


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_add_rows_is_add_per_identity(backend):
    if backend == "faiss" and search_index.faiss_module() is None:
        pytest.skip("faiss is not installed (optional)")
    rows = unit_rows(300, seed=5)
    labels = [f"id{i % 37}" for i in range(300)]  # interleaved, as enrolments over time
    bulk = search_index.make_index(DIM, backend)
    bulk.add_rows(rows, labels)
    late = unit_rows(2, seed=7)
    bulk.add(late, "late")  # grows past the adopted matrix
    for probe in unit_rows(4, seed=6):
        want = brute_force(np.concatenate([rows, late]), labels + ["late"] * 2, probe, 10)
        got = bulk.search(probe, 10)
        assert [g[0] for g in got] == [w[0] for w in want]
    with pytest.raises(ValueError, match="labels"):
        bulk.add_rows(rows[:3], ["a"])
