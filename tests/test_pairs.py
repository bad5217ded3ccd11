"""pairs.py: the LFW View 2 pairs.txt parser and image resolution."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools import pairs
from data_tools.image_files import IMAGE_EXTENSIONS

# 2 folds of 2 matched + 2 mismatched pairs.
VALID_LINES = [
    "2\t2",
    "Ann\t1\t2", "Bob\t1\t3",
    "Ann\t1\tCid\t1", "Bob\t2\tDee\t1",
    "Eve\t2\t4", "Fay\t1\t2",
    "Eve\t1\tGus\t1", "Fay\t2\tHal\t3",
]
# name1, index1, name2, index2 of VALID_LINES[1:].
VALID_TUPLES = [("Ann", 1, "Ann", 2), ("Bob", 1, "Bob", 3), ("Ann", 1, "Cid", 1),
                ("Bob", 2, "Dee", 1), ("Eve", 2, "Eve", 4), ("Fay", 1, "Fay", 2),
                ("Eve", 1, "Gus", 1), ("Fay", 2, "Hal", 3)]


def write(tmp_path, text, binary=False):
    path = tmp_path / "pairs.txt"
    if binary:
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return str(path)


def expected_pairs(tuples, per_fold, first_line=2):
    # Independent of the parser: LFW folds are contiguous blocks of n matched + n mismatched.
    return [pairs.Pair(n1, i1, n2, i2, issame=(k % (2 * per_fold)) < per_fold,
                       fold=k // (2 * per_fold), line=first_line + k)
            for k, (n1, i1, n2, i2) in enumerate(tuples)]


@pytest.mark.parametrize("variant", ["tabs", "spaces", "crlf", "trailing_blank", "bom",
                                     "no_final_newline"])
def test_read_valid(tmp_path, variant):
    lines = list(VALID_LINES)
    newline, suffix, prefix = "\n", "\n", ""
    if variant == "spaces":
        lines = [line.replace("\t", "  ") for line in lines]
    elif variant == "crlf":
        newline, suffix = "\r\n", "\r\n"
    elif variant == "trailing_blank":
        suffix = "\n\n  \n\t\n"
    elif variant == "bom":
        prefix = "\ufeff"
    elif variant == "no_final_newline":
        suffix = ""
    parsed = pairs.read_pairs(write(tmp_path, prefix + newline.join(lines) + suffix))
    assert (parsed.num_folds, parsed.pairs_per_fold) == (2, 2)
    assert parsed.pairs == expected_pairs(VALID_TUPLES, 2)


def test_single_number_header_is_one_fold(tmp_path):
    parsed = pairs.read_pairs(write(tmp_path, "1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"))
    assert (parsed.num_folds, parsed.pairs_per_fold) == (1, 1)
    assert parsed.pairs == expected_pairs([("Ann", 1, "Ann", 2), ("Ann", 1, "Bob", 1)], 1)


def replace_line(number, text):
    lines = list(VALID_LINES)
    lines[number - 1] = text
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, line, message", [
    ("", 1, "header"),
    ("\n" + "\n".join(VALID_LINES[1:]), 1, "header"),
    (replace_line(1, "ten\t2"), 1, "number of folds must be an integer"),
    (replace_line(1, "2\t2\t2"), 1, "expected the header"),
    (replace_line(1, "0\t2"), 1, "at least 1"),
    (replace_line(3, "Bob\t1"), 3, "got 2 fields"),
    (replace_line(3, "Bob 1 3 Cid 4 5"), 3, "got 6 fields"),
    (replace_line(2, "Ann\tone\t2"), 2, "an image number must be an integer"),
    (replace_line(4, "Ann\t0\tCid\t1"), 4, "at least 1"),
    (replace_line(5, "Bob\t2\t3"), 5, "pair 4 of fold 1 should be mismatched"),
    (replace_line(7, "Fay\t2\tHal\t3"), 7, "pair 2 of fold 2 should be matched"),
    (replace_line(2, "Ann\t2\t2"), 2, "with itself"),
    (replace_line(4, "Ann\t1\tAnn\t3"), 4, "names one identity twice"),
    (replace_line(6, "../etc\t1\t2"), 6, "not an identity folder name"),
    (replace_line(6, "a/b\t1\t2"), 6, "not an identity folder name"),
    ("\n".join(VALID_LINES[:-1]) + "\n\n", 8, "ends after 7 pairs"),
    ("\n".join(VALID_LINES + ["Ann\t1\t2"]), 10, "more pairs than the header"),
])
def test_malformed_names_the_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(pairs.PairsFormatError) as error:
        pairs.read_pairs(path)
    assert isinstance(error.value, ValueError)
    assert error.value.line == line
    assert f"line {line}:" in str(error.value)
    assert message in str(error.value)


def make_images(root, relpaths):
    for relpath in relpaths:
        path = os.path.join(str(root), relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x")  # resolution looks at names only


ALL_IMAGES = ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg", "Bob/Bob_0002.jpg",
              "Bob/Bob_0003.jpg", "Cid/Cid_0001.jpg", "Dee/Dee_0001.jpg", "Eve/Eve_0001.jpg",
              "Eve/Eve_0002.jpg", "Eve/Eve_0004.jpg", "Fay/Fay_0001.jpg", "Fay/Fay_0002.jpg",
              "Gus/Gus_0001.jpg", "Hal/Hal_0003.jpg"]


def test_resolve_all_present(tmp_path):
    make_images(tmp_path / "img", ALL_IMAGES)
    parsed = pairs.read_pairs(write(tmp_path, "\n".join(VALID_LINES)))
    relpaths, kept, missing = pairs.resolve_pairs(parsed, str(tmp_path / "img"))
    assert kept == parsed.pairs and missing == []
    assert relpaths == [(f"{n1}/{n1}_{i1:04d}.jpg", f"{n2}/{n2}_{i2:04d}.jpg")
                        for n1, i1, n2, i2 in VALID_TUPLES]


def test_missing_images_error_lists_every_path(tmp_path):
    gone = ["Bob/Bob_0003.jpg", "Cid/Cid_0001.jpg", "Hal/Hal_0003.jpg"]
    make_images(tmp_path / "img", [p for p in ALL_IMAGES if p not in gone])
    parsed = pairs.read_pairs(write(tmp_path, "\n".join(VALID_LINES)))
    with pytest.raises(pairs.MissingPairImagesError) as error:
        pairs.resolve_pairs(parsed, str(tmp_path / "img"))
    assert error.value.missing == gone  # each once, in order of first mention
    assert error.value.num_pairs == 3
    for path in gone:
        assert path in str(error.value)

    relpaths, kept, missing = pairs.resolve_pairs(parsed, str(tmp_path / "img"),
                                                  allow_missing=True)
    assert missing == gone
    assert [p.line for p in kept] == [2, 5, 6, 7, 8]  # file lines 3, 4 and 9 are left out
    assert [p.fold for p in kept] == [0, 0, 1, 1, 1]
    assert len(relpaths) == len(kept)


def test_extension_lookup_order_and_case(tmp_path):
    make_images(tmp_path / "img", ["Ann/Ann_0001.png", "Ann/Ann_0001.pgm", "Ann/Ann_0002.JPG",
                                   "Bob/Bob_0001.jpg", "Bob/Bob_0001.png", "Bob/Bob_0002.webp"])
    parsed = pairs.read_pairs(write(tmp_path, "1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"))
    relpaths, _, _ = pairs.resolve_pairs(parsed, str(tmp_path / "img"))
    assert relpaths == [("Ann/Ann_0001.png", "Ann/Ann_0002.JPG"),
                        ("Ann/Ann_0001.png", "Bob/Bob_0001.jpg")]
    assert IMAGE_EXTENSIONS.index(".png") < IMAGE_EXTENSIONS.index(".pgm")
    assert pairs.pair_image_relpaths(parsed.pairs[0], str(tmp_path / "img")) == relpaths[0]
    missing = pairs.Pair("Zed", 1, "Bob", 2, False, 0, 9)
    assert pairs.pair_image_relpaths(missing, str(tmp_path / "img")) == (
        "Zed/Zed_0001.jpg", "Bob/Bob_0002.webp")


def test_missing_image_dir(tmp_path):
    parsed = pairs.read_pairs(write(tmp_path, "\n".join(VALID_LINES)))
    with pytest.raises(ValueError, match="does not exist"):
        pairs.resolve_pairs(parsed, str(tmp_path / "nowhere"))


names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-'.",
                min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@st.composite
def pairs_files(draw):
    num_folds = draw(st.integers(1, 4))
    per_fold = draw(st.integers(1, 4))
    tuples = []
    for _ in range(num_folds):
        for _ in range(per_fold):
            name = draw(names)
            i = draw(st.integers(1, 9999))
            j = draw(st.integers(1, 9999).filter(lambda v, i=i: v != i))
            tuples.append((name, i, name, j))
        for _ in range(per_fold):
            name1 = draw(names)
            name2 = draw(names.filter(lambda v, n=name1: v != n))
            tuples.append((name1, draw(st.integers(1, 9999)), name2,
                           draw(st.integers(1, 9999))))
    return num_folds, per_fold, tuples


@settings(max_examples=40, deadline=None)
@given(pairs_files())
def test_write_read_round_trip(tmp_path_factory, data):
    num_folds, per_fold, tuples = data
    path = str(tmp_path_factory.mktemp("pairs") / "pairs.txt")
    pairs.write_pairs(path, num_folds, per_fold, tuples)
    parsed = pairs.read_pairs(path)
    assert (parsed.num_folds, parsed.pairs_per_fold) == (num_folds, per_fold)
    assert parsed.pairs == expected_pairs(tuples, per_fold)
