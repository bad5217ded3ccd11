"""``pairs_per_fold`` means one thing everywhere: n, the pairs.txt header's second number, each
fold holding n matched and n mismatched pairs (LFW View 2: 300). The synthetic dataset, the
pairs generator, the pairs and ``.bin`` converters' manifests all use it so; until issue 26 the
synthetic dataset's ``pairs_per_fold=60`` meant 30 + 30 (header 30, its own record 60)."""

import json
import os

from data_tools import conversion, manifest, pairs, pairs_generation
from data_tools.insightface import bin_from_pairs
from data_tools.insightface import convert as insightface
from data_tools.synthetic import dataset as synthetic_dataset

N, FOLDS = 1, 10


def test_every_tool_means_n_matched_and_n_mismatched_per_fold(tmp_path):
    summary = synthetic_dataset.generate(
        str(tmp_path / "synthetic"), num_train_identities=1, train_images_per_identity=1,
        num_folds=FOLDS, pair_identities_per_fold=2, pair_images_per_identity=2,
        pairs_per_fold=N, image_size=32, num_workers=1, progress=False)
    written = pairs.read_pairs(summary["pairs_path"])
    assert (written.num_folds, written.pairs_per_fold, len(written.pairs)) == (FOLDS, N, 20)
    assert summary["num_pairs"] == 2 * N * FOLDS
    for fold in range(FOLDS):
        kinds = [p.issame for p in written.pairs if p.fold == fold]
        assert kinds == [True] * N + [False] * N
    with open(os.path.join(str(tmp_path / "synthetic"), "synthetic.json")) as f:
        assert json.load(f)["options"]["matched_pairs_per_fold"] == N

    generated = pairs_generation.write_pairs_file(
        summary["lfw_dir"], str(tmp_path / "made.txt"), num_folds=FOLDS, pairs_per_fold=N)
    assert generated["pairs_per_fold"] == N
    assert generated["num_pairs"] == 2 * N * FOLDS
    assert pairs.read_pairs(str(tmp_path / "made.txt")).pairs_per_fold == N

    conversion.convert_pairs(summary["pairs_path"], summary["lfw_dir"], str(tmp_path / "recs"),
                             num_workers=1, progress=False)
    assert manifest.read_manifest(str(tmp_path / "recs"))["pairs_per_fold"] == N

    bin_path = str(tmp_path / "set.bin")
    bin_from_pairs.make_bin(summary["pairs_path"], summary["lfw_dir"], bin_path)
    insightface.convert_bin(bin_path, str(tmp_path / "from_bin"), num_workers=1, progress=False)
    assert manifest.read_manifest(str(tmp_path / "from_bin"))["pairs_per_fold"] == N
