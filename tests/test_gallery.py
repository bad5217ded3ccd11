"""The face gallery (export/gallery_index.py, CLI export/gallery.py): enrol identity folders into
an npz index, search it, open-set answers."""

import json
import os

import numpy as np
import pytest
from absl import app
from PIL import Image

import cli
from export import gallery, gallery_index
from tests import tiny_model

SIZE = tiny_model.SIZE


def write_faces(root, identities, per_identity, seed):
    rng = np.random.RandomState(seed)
    for identity in identities:
        base = rng.randint(0, 256, (SIZE, SIZE, 3))
        for i in range(per_identity):
            pixels = np.clip(base + rng.randint(-20, 21, base.shape), 0, 255).astype(np.uint8)
            folder = os.path.join(root, identity)
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(pixels).save(os.path.join(folder, f"{identity}_{i}.png"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    weights = tiny_model.projection(5)
    path = str(tmp_path_factory.mktemp("gallery_model") / "model")
    return tiny_model.build_saved_model(path, weights), tiny_model.Reference(weights)


def run_cli(args):
    return cli.run_main(gallery.define_flags, gallery.main, ["gallery"] + list(args))


def test_enrol_search_and_append(model, tmp_path, capsys):
    saved_model, reference = model
    faces = str(tmp_path / "faces")
    write_faces(faces, ["alice", "bob", "carol"], 3, seed=0)
    index_path = str(tmp_path / "g" / "gallery.npz")
    assert run_cli(["enrol", f"--model={saved_model}", f"--folder={faces}",
                    f"--index={index_path}"]) == 0
    assert "enrolled 9 new image(s)" in capsys.readouterr().out

    with np.load(index_path, allow_pickle=False) as data:  # never pickle
        assert data["embeddings"].shape == (9, tiny_model.DIM)
        assert data["embeddings"].dtype == np.float32
        labels, paths = data["labels"].tolist(), data["paths"].tolist()
        embeddings = data["embeddings"]
    assert sorted(set(labels)) == ["alice", "bob", "carol"]
    for label, path, embedding in zip(labels, paths, embeddings):
        assert os.path.basename(os.path.dirname(path)) == label
        np.testing.assert_allclose(embedding, reference(np.asarray(Image.open(path))),
                                   atol=1e-5)

    # Re-enrolling the same folder adds nothing; a new identity is appended.
    assert run_cli(["enrol", f"--model={saved_model}", f"--folder={faces}",
                    f"--index={index_path}"]) == 0
    assert "enrolled 0 new image(s)" in capsys.readouterr().out
    write_faces(faces, ["dave"], 2, seed=1)
    assert run_cli(["enrol", f"--model={saved_model}", f"--folder={faces}",
                    f"--index={index_path}"]) == 0
    assert f"enrolled 2 new image(s); {index_path} holds 11" in capsys.readouterr().out
    index = gallery_index.load_index(index_path)
    assert index["labels"].tolist()[:9] == labels  # appended, the old entries unchanged

    probe = os.path.join(faces, "bob", "bob_1.png")
    assert run_cli(["search", f"--index={index_path}", "--top_k=3", probe]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{probe}: bob (cosine 1.0000; no threshold)")
    assert len(out) == 4 and out[1].split()[2] == "bob"


def test_open_set_threshold(model, tmp_path, capsys):
    saved_model, _ = model
    faces = str(tmp_path / "faces")
    write_faces(faces, ["alice", "bob"], 2, seed=2)
    stranger = str(tmp_path / "stranger")
    write_faces(stranger, ["eve"], 1, seed=3)
    index_path = str(tmp_path / "gallery.npz")
    assert run_cli(["enrol", f"--model={saved_model}", f"--folder={faces}",
                    f"--index={index_path}"]) == 0
    probes = [os.path.join(faces, "alice", "alice_0.png"),
              os.path.join(stranger, "eve", "eve_0.png")]
    capsys.readouterr()
    assert run_cli(["search", f"--index={index_path}", "--threshold=0.999"] + probes) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert lines[0] == "threshold: cosine 0.9990 (--threshold)"
    assert lines[1].startswith(probes[0] + ": alice (cosine 1.0000 > 0.9990)")
    assert lines[2].startswith(probes[1] + ": unknown (best: ")

    # From an identification report, and from a verification report (squared L2 -> cosine).
    ident = tmp_path / "ident.json"
    ident.write_text(json.dumps({"threshold@fpir=0.01": 0.999}))
    assert gallery_index.threshold_from_report(str(ident), 0.01)[0] == 0.999
    verif = tmp_path / "verif.json"
    verif.write_text(json.dumps({"threshold": 1.2}))
    assert gallery_index.threshold_from_report(str(verif), 0.01)[0] == pytest.approx(0.4)
    assert run_cli(["search", f"--index={index_path}", f"--report={ident}"] + probes) == 0
    assert "unknown" in capsys.readouterr().out


def test_report_threshold_must_match_the_index_flip(model, tmp_path, capsys):
    """Issue 26 item 8: a threshold measured with the other flip setting than the index's
    embeddings is refused in one line naming the enrolment that matches; a flip verification
    report gives a no-flip index its threshold_single."""
    saved_model, _ = model
    faces = str(tmp_path / "faces")
    write_faces(faces, ["alice", "bob"], 2, seed=2)
    index_path = str(tmp_path / "gallery.npz")
    assert run_cli(["enrol", f"--model={saved_model}", f"--folder={faces}",
                    f"--index={index_path}", "--noflip"]) == 0
    probe = os.path.join(faces, "alice", "alice_0.png")
    ident = tmp_path / "ident.json"
    ident.write_text(json.dumps({"threshold@fpir=0.01": 0.9, "extra": {"flip": True}}))
    capsys.readouterr()
    assert run_cli(["search", f"--index={index_path}", f"--report={ident}", probe]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: the threshold of {ident} was measured with flip test-time augmentation and "
        "the index holds embeddings made without it: enrol with --flip, or give --threshold")
    verif = tmp_path / "verif.json"
    verif.write_text(json.dumps({"threshold": 1.2, "threshold_single": 1.0, "flip": True}))
    assert gallery_index.threshold_from_report(str(verif), 0.01, flip=False)[0] == 0.5
    assert gallery_index.threshold_from_report(str(verif), 0.01, flip=True)[0] == 0.4
    verif.write_text(json.dumps({"threshold": 1.2, "flip": False}))
    with pytest.raises(gallery_index.GalleryError, match="measured without flip"):
        gallery_index.threshold_from_report(str(verif), 0.01, flip=True)


def test_search_results_ties_and_order():
    index = {"embeddings": np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32),
             "labels": np.array(["a", "b", "c"]), "paths": np.array(["pa", "pb", "pc"])}
    results = gallery_index.search(index, np.array([[1.0, 0.1]]), top_k=2, threshold=0.5)
    assert results[0]["answer"] == "a"  # a tie with b goes to the first enrolled
    assert [m[1] for m in results[0]["matches"]] == ["a", "b"]
    results = gallery_index.search(index, np.array([[-1.0, 0.0]]), top_k=1, threshold=0.5)
    assert results[0]["answer"] == "unknown"


def test_one_line_errors(model, tmp_path, capsys):
    saved_model, _ = model
    missing = str(tmp_path / "none.npz")
    assert run_cli(["search", f"--index={missing}", "x.jpg"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: no gallery index at {missing} (run 'enrol' first)")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert run_cli(["search", f"--index={bad}", "x.jpg"]) == 1
    assert "is not a gallery index" in capsys.readouterr().err
    # An npz holding a pickled object array is refused, not unpickled.
    np.savez(str(tmp_path / "evil.npz"), embeddings=np.zeros((1, 2)),
             labels=np.array([{"x": 1}], dtype=object), paths=np.array(["p"]),
             model=np.array("m"), flip=np.array(True), version=np.array(1))
    assert run_cli(["search", f"--index={tmp_path / 'evil.npz'}", "x.jpg"]) == 1
    assert "is not a gallery index" in capsys.readouterr().err
    assert run_cli(["enrol", f"--model={saved_model}", f"--folder={tmp_path / 'no'}",
                    f"--index={tmp_path / 'g.npz'}"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(app.UsageError, match="command"):
        run_cli(["find", "--index=x.npz"])
    with pytest.raises(app.UsageError, match="not both"):
        run_cli(["search", "--index=x.npz", "--threshold=0.3", "--report=r.json", "a.jpg"])


def test_dimension_mismatch_on_append(model, tmp_path):
    saved_model, _ = model
    index_path = str(tmp_path / "g.npz")
    gallery_index.save_index(index_path, np.zeros((1, 3)), ["x"], ["/p"], "m", True)
    faces = str(tmp_path / "faces")
    write_faces(faces, ["alice"], 1, seed=0)
    from export import embedder as embed  # noqa: PLC0415

    with embed.load_saved_model(saved_model) as embedder:
        with pytest.raises(gallery_index.GalleryError,
                           match="3-d embeddings, the model gives 16-d"):
            gallery_index.enrol(embedder, faces, index_path, progress=False)
