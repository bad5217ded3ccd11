"""make_pairs (library data_tools/pairs_generation.py): identity-disjoint LFW-format folds from a
face folder, seeded and checked."""

import itertools
import os
import subprocess
import sys

import pytest

from data_tools import conversion, manifest
from data_tools import pairs as pairs_lib
from data_tools import pairs_generation as generation
from tests import _folder_fixtures as ff

# 30 identities of 1 to 6 images (names only: make_pairs never reads an image).
COUNTS = [1 + (7 * i) % 6 for i in range(30)]


def make_tree(root, counts, ext="jpg", start=0):
    for i, count in enumerate(counts):
        name = f"P{start + i:02d}"
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index in range(1, count + 1):
            with open(os.path.join(root, name, f"{name}_{index:04d}.{ext}"), "wb") as f:
                f.write(b"not read")
    return str(root)


@pytest.fixture
def faces(tmp_path):
    return make_tree(str(tmp_path / "faces"), COUNTS)


def write(faces, tmp_path, name="pairs.txt", **kwargs):
    path = str(tmp_path / name)
    summary = generation.write_pairs_file(faces, path, **kwargs)
    return path, summary


def fold_names(parsed):
    names = [set() for _ in range(parsed.num_folds)]
    for pair in parsed.pairs:
        names[pair.fold].update((pair.name1, pair.name2))
    return names


def test_folds_are_identity_disjoint_and_complete(faces, tmp_path):
    path, summary = write(faces, tmp_path)
    parsed = pairs_lib.read_pairs(path)  # checks n matched then n mismatched in every fold
    n = summary["pairs_per_fold"]
    assert (parsed.num_folds, parsed.pairs_per_fold) == (10, n)
    assert len(parsed.pairs) == summary["num_pairs"] == 10 * 2 * n
    names = fold_names(parsed)
    for a, b in itertools.combinations(names, 2):
        assert not a & b
    keys = [(p.name1, p.index1, p.name2, p.index2) for p in parsed.pairs]
    unordered = {frozenset([(p.name1, p.index1), (p.name2, p.index2)]) for p in parsed.pairs}
    assert len(unordered) == len(keys)  # no pair twice, in either order
    for pair in parsed.pairs:
        assert (pair.name1 == pair.name2) == pair.issame
        assert 1 <= pair.index1 <= COUNTS[int(pair.name1[1:])]
        assert 1 <= pair.index2 <= COUNTS[int(pair.name2[1:])]
    # Every image the converter will look up exists.
    relpaths, kept, missing = pairs_lib.resolve_pairs(parsed, faces)
    assert len(kept) == len(parsed.pairs) and not missing
    first = parsed.pairs[0]
    assert relpaths[0][0].startswith(f"{first.name1}/{first.name1}_{first.index1:04d}.jpg")


def test_default_takes_the_most_every_fold_can_hold(faces, tmp_path):
    _, summary = write(faces, tmp_path)
    n = summary["pairs_per_fold"]
    assert 1 <= n < generation.DEFAULT_MAX_PAIRS_PER_FOLD
    write(faces, tmp_path, "n.txt", pairs_per_fold=n)
    with pytest.raises(generation.MakePairsError, match=rf"--pairs_per_fold={n + 1} is more than "
                       rf"the data allows.*--pairs_per_fold={n} or less"):
        write(faces, tmp_path, "more.txt", pairs_per_fold=n + 1)
    assert not (tmp_path / "more.txt").exists()


def test_default_stops_at_lfws_300(tmp_path):
    faces = make_tree(str(tmp_path / "big"), [30] * 40)
    path, summary = write(faces, tmp_path)
    assert summary["pairs_per_fold"] == 300
    with open(path) as f:
        assert f.readline() == "10\t300\n"
    # Matched pairs spread over the fold's identities instead of piling on one.
    parsed = pairs_lib.read_pairs(path)
    per_identity = {}
    for pair in parsed.pairs:
        if pair.issame:
            per_identity[pair.name1] = per_identity.get(pair.name1, 0) + 1
    assert sorted(set(per_identity.values())) == [75]  # 4 identities a fold, 300 / 4 each


def test_same_seed_same_file_other_seed_other_file(faces, tmp_path):
    first, _ = write(faces, tmp_path, "a.txt", seed=3)
    again, _ = write(faces, tmp_path, "b.txt", seed=3)
    other, _ = write(faces, tmp_path, "c.txt", seed=4)
    with open(first, "rb") as f1, open(again, "rb") as f2, open(other, "rb") as f3:
        a, b, c = f1.read(), f2.read(), f3.read()
    assert a == b
    assert a != c


def test_fold_count_and_size_options(faces, tmp_path):
    path, summary = write(faces, tmp_path, num_folds=3, pairs_per_fold=5, seed=1)
    parsed = pairs_lib.read_pairs(path)
    assert (parsed.num_folds, parsed.pairs_per_fold, len(parsed.pairs)) == (3, 5, 30)
    assert sum(summary["fold_identities"]) == len(COUNTS)
    names = fold_names(parsed)
    for a, b in itertools.combinations(names, 2):
        assert not a & b


def test_the_converter_reads_the_pairs_with_real_images(tmp_path):
    root = str(tmp_path / "lfw")
    ff.make_face_tree(root, [3, 2, 1, 2, 4, 1], exts=("jpg", "png"))
    path, _ = write(root, tmp_path, num_folds=2, pairs_per_fold=2)
    summary = conversion.convert_pairs(path, root, str(tmp_path / "records"),
                                           num_workers=1, progress=False)
    assert (summary["num_pairs"], summary["missing_pairs"]) == (8, 0)
    info = manifest.read_manifest(str(tmp_path / "records"))
    assert (info["num_folds"], info["fold_sizes"]) == (2, [4, 4])


def test_a_dominant_identity_does_not_leave_a_fold_without_mismatched_pairs(tmp_path):
    # One identity with 50 images and three with 2, in 2 folds: each fold needs two people.
    faces = make_tree(str(tmp_path / "skewed"), [50, 2, 2, 2])
    path, summary = write(faces, tmp_path, num_folds=2)
    # The two 2-image identities together: 2 matched and 4 mismatched pairs at most.
    assert summary["fold_identities"] == [2, 2] and summary["pairs_per_fold"] == 2
    parsed = pairs_lib.read_pairs(path)
    assert all(not a & b for a, b in itertools.combinations(fold_names(parsed), 2))


@pytest.mark.parametrize("counts, message", [
    ([2] * 9 + [1] * 20, r"found 9 with 2 or more images of 29"),
    ([2] * 15, r"20 identities in all"),
    ([], r"found 0 with 2 or more"),
])
def test_too_few_identities(tmp_path, counts, message):
    faces = make_tree(str(tmp_path / "few"), counts)
    os.makedirs(faces, exist_ok=True)
    with pytest.raises(generation.MakePairsError, match="too few identities.*" + message):
        write(faces, tmp_path)


@pytest.mark.parametrize("relpath", [
    "P03/img1.jpg", "P03/P03_01.jpg", "P03/P03_00001.jpg", "P03/P03_0000.jpg",
    "P03/p03_0001.jpg", "P03/P04_0001.jpg", "P03/sub/P03_0001.jpg"])
def test_files_a_pairs_file_cannot_name_are_refused(faces, tmp_path, relpath):
    os.makedirs(os.path.dirname(os.path.join(faces, relpath)), exist_ok=True)
    with open(os.path.join(faces, relpath), "wb") as f:
        f.write(b"x")
    with pytest.raises(generation.MakePairsError, match="1 image file.*not named the LFW way.*"
                       + relpath):
        write(faces, tmp_path)


def test_other_files_and_hidden_ones_are_ignored(faces, tmp_path):
    for relpath in ("P03/notes.txt", "P03/.P03_0009.jpg", ".hidden/x.jpg", "P04/Thumbs.db"):
        os.makedirs(os.path.dirname(os.path.join(faces, relpath)), exist_ok=True)
        with open(os.path.join(faces, relpath), "wb") as f:
            f.write(b"x")
    os.makedirs(os.path.join(faces, "empty"))
    reference, _ = write(make_tree(str(tmp_path / "clean"), COUNTS), tmp_path, "clean.txt")
    path, summary = write(faces, tmp_path)
    assert summary["identities"] == len(COUNTS)
    with open(path) as f1, open(reference) as f2:
        assert f1.read() == f2.read()


def test_whitespace_in_a_name_is_refused(faces, tmp_path):
    os.makedirs(os.path.join(faces, "John Doe"))
    for index in (1, 2):
        with open(os.path.join(faces, "John Doe", f"John Doe_{index:04d}.jpg"), "wb") as f:
            f.write(b"x")
    with pytest.raises(generation.MakePairsError, match="whitespace.*'John Doe'"):
        write(faces, tmp_path)


def test_an_existing_other_file_needs_overwrite(faces, tmp_path):
    path, _ = write(faces, tmp_path, seed=0)
    write(faces, tmp_path, seed=0)  # the same content: fine
    with pytest.raises(generation.MakePairsError, match="exists with other pairs.*--overwrite"):
        write(faces, tmp_path, seed=1)
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".")] == []
    write(faces, tmp_path, seed=1, overwrite=True)
    other, _ = write(faces, tmp_path, "other.txt", seed=1)
    with open(path) as f1, open(other) as f2:
        assert f1.read() == f2.read()


def test_missing_input_dir(tmp_path):
    with pytest.raises(generation.MakePairsError, match="is not a directory"):
        write(str(tmp_path / "nowhere"), tmp_path)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "data_tools.make_pairs"] + list(args),
                          cwd=ff.REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_command_line(faces, tmp_path):
    out = str(tmp_path / "cli.txt")
    proc = run_cli(f"--input_dir={faces}", f"--output={out}", "--seed=2")
    assert proc.returncode == 0, proc.stderr
    assert "10 folds x (" in proc.stdout and out in proc.stdout
    reference, _ = write(faces, tmp_path, "ref.txt", seed=2)
    with open(out) as f1, open(reference) as f2:
        assert f1.read() == f2.read()
    proc = run_cli(f"--input_dir={faces}", f"--output={out}", "--num_folds=20")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make_pairs: error: too few identities")
