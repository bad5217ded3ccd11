"""The 1:N protocol on image records (evaluation/identification.py, CLI
export/identification.py) and the held-out identities' links (data_tools/holdout_split.py)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import cli
from data_tools import conversion, holdout_split
from evaluation import identification as identification_protocol
from evaluation import retrieval
from export import identification
from tests import tiny_model

SIZE = tiny_model.SIZE


def test_gallery_probe_split():
    identities = ["b", "a", "b", "c", "a", "b", "d"]
    filenames = ["b/2", "a/1", "b/1", "c/1", "a/2", "b/3", "d/9"]
    gallery, probes = identification_protocol.gallery_probe_split(identities, filenames)
    assert gallery.tolist() == [1, 2]  # a/1 and b/1: the first file of each identity with 2+
    assert probes.tolist() == [0, 3, 4, 5, 6]  # the rest; c and d are non-mated probes


def test_no_gallery_is_an_error():
    with pytest.raises(identification_protocol.IdentificationError, match="no gallery"):
        identification_protocol.evaluate(np.eye(2), ["a", "b"], ["a/1", "b/1"])


def write_faces(root, counts, seed=0):
    rng = np.random.RandomState(seed)
    for i, count in enumerate(counts):
        base = rng.randint(0, 256, (SIZE, SIZE, 3))
        folder = os.path.join(root, f"id{i:02d}")
        os.makedirs(folder)
        for j in range(count):
            pixels = np.clip(base + rng.randint(-60, 61, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{j}.png"))


def run_cli(args):
    return cli.run_main(identification.define_flags, identification.main,
                        ["identification"] + list(args))


def test_cli_on_records(tmp_path, capsys):
    faces = str(tmp_path / "faces")
    write_faces(faces, [3, 2, 4, 1, 1, 2, 1])
    records = str(tmp_path / "records")
    conversion.convert_folder(faces, records, num_workers=1, progress=False)
    weights = tiny_model.projection(2)
    model = tiny_model.build_saved_model(str(tmp_path / "model"), weights)
    out = str(tmp_path / "report")
    assert run_cli([f"--model={model}", f"--records={records}",
                    f"--report_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "gallery: 4 identities; probes: 7 mated, 3 non-mated" in printed
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)

    # Reference: numpy embeddings of the PNGs, the split written out by hand.
    reference = tiny_model.Reference(weights)
    names = sorted(os.listdir(faces))
    gallery, g_labels, probes, p_labels, everything, labels = [], [], [], [], [], []
    for name in names:
        files = sorted(os.listdir(os.path.join(faces, name)))
        for k, file in enumerate(files):
            e = reference(np.asarray(Image.open(os.path.join(faces, name, file))))
            everything.append(e)
            labels.append(name)
            if len(files) >= 2 and k == 0:
                gallery.append(e)
                g_labels.append(name)
            else:
                probes.append(e)
                p_labels.append(name)
    expected = retrieval.identification_metrics(np.array(gallery), g_labels, np.array(probes),
                                                p_labels, dtype=np.float64)
    expected.update(retrieval.retrieval_metrics(np.array(everything), labels, dtype=np.float64))
    for key in ("rank1", "rank5", "tpir@fpir=0.01", "tpir@fpir=0.1", "recall@1", "map@r",
                "num_mated_probes", "num_nonmated_probes"):
        assert report[key] == pytest.approx(expected[key], abs=1e-6), key
    assert report["threshold@fpir=0.1"] == pytest.approx(expected["threshold@fpir=0.1"],
                                                         abs=1e-5)
    assert report["extra"]["flip"] is True


def test_cli_errors(tmp_path, capsys):
    assert run_cli([f"--model={tmp_path}", f"--records={tmp_path / 'none'}"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_lfw_identification_links(tmp_path):
    lfw = tmp_path / "lfw"
    for name, count in (("A", 2), ("B", 1), ("C", 3), ("D", 1)):
        (lfw / name).mkdir(parents=True)
        for i in range(count):
            (lfw / name / f"{name}_{i + 1:04d}.jpg").write_bytes(b"x")
    pairs = tmp_path / "pairs.txt"
    # Two folds of one matched and one mismatched pair; fold 2 holds A and B.
    pairs.write_text("2\t1\nC\t1\t2\nC\t1\tD\t1\nA\t1\t2\nA\t1\tB\t1\n")
    out = tmp_path / "ids"
    summary = holdout_split.link_identities(str(lfw), str(pairs), [2], str(out))
    assert sorted(os.listdir(out)) == ["A", "B"]
    assert summary == {"identities": 2, "images": 3, "identities_with_2_or_more": 1,
                       "single_image_identities": 1}
    assert os.readlink(out / "A") == str(lfw / "A")
