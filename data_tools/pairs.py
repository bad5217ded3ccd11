"""LFW View 2 pairs files (``pairs.txt``): parsing, fold structure, images on disk.

Format (http://vis-www.cs.umass.edu/lfw/README.txt)::

    10<TAB>300                 header: number of folds, pairs of each kind per fold
    Abel_Pacheco<TAB>1<TAB>4   matched pair: name i j   -> name/name_0001.jpg, name/name_0004.jpg
    ...                        (300 matched lines, then 300 mismatched lines, per fold)
    AJ_Cook<TAB>1<TAB>Marsha_Thomason<TAB>1   mismatched pair: name1 i name2 j

Folds are contiguous blocks of ``2 * n`` lines, so the fold of a pair is its position in the
file divided by ``2 * n``. The parser checks that structure exactly, because an evaluation that
silently drops or shifts pairs (as facenet's loader did for missing images) reports accuracies
over the wrong folds. Tabs or spaces separate fields; CRLF line ends, a UTF-8 byte-order mark and
blank lines are tolerated. A one-number header ``n`` (View 1's ``pairsDevTest.txt``) is one fold.

This module needs no TensorFlow: the evaluation code reads pairs files with it too.
"""

import collections
import os

from data_tools.image_files import IMAGE_EXTENSIONS

Pair = collections.namedtuple("Pair", ["name1", "index1", "name2", "index2", "issame", "fold",
                                       "line"])
Pair.__doc__ = """One pair: both identities and 1-based image numbers, ``issame`` (bool), the
0-based fold and the 1-based line of the pairs file it came from."""

PairsFile = collections.namedtuple("PairsFile", ["num_folds", "pairs_per_fold", "pairs"])
PairsFile.__doc__ = """A parsed pairs file: ``num_folds``, ``pairs_per_fold`` (n: each fold
holds n matched then n mismatched pairs) and ``pairs`` (list of :class:`Pair`, file order)."""


class PairsFormatError(ValueError):
    """A malformed pairs file. The message names the file and the line; ``.line`` holds it."""

    def __init__(self, path, line, message):
        super().__init__(f"{path}, line {line}: {message}")
        self.path = path
        self.line = line


class MissingPairImagesError(ValueError):
    """Images named by a pairs file are absent. ``.missing`` lists every missing path."""

    def __init__(self, image_dir, missing, num_pairs, remedy=None):
        self.image_dir = image_dir
        self.missing = list(missing)
        self.num_pairs = num_pairs
        listed = "\n  ".join(self.missing)
        # The remedy is the calling program's: only it knows which of its flags skips pairs.
        super().__init__(
            f"{len(self.missing)} image(s) named by the pairs file are missing under {image_dir} "
            f"({num_pairs} pair(s) affected{'; ' + remedy if remedy else ''}):\n  {listed}")


def _parse_count(path, line_number, token, what):
    try:
        value = int(token)
    except ValueError:
        raise PairsFormatError(path, line_number, f"{what} must be an integer, got "
                                                  f"{token!r}") from None
    if value < 1:
        raise PairsFormatError(path, line_number, f"{what} must be at least 1, got {value}")
    return value


def _parse_name(path, line_number, token):
    if "/" in token or "\\" in token or token in (".", ".."):
        raise PairsFormatError(path, line_number, f"{token!r} is not an identity folder name")
    return token


def _parse_header(path, line):
    tokens = line.split()
    if len(tokens) == 2:
        return (_parse_count(path, 1, tokens[0], "the number of folds"),
                _parse_count(path, 1, tokens[1], "the number of pairs per fold"))
    if len(tokens) == 1:
        return 1, _parse_count(path, 1, tokens[0], "the number of pairs per fold")
    raise PairsFormatError(path, 1, "expected the header 'folds<TAB>pairs_per_fold', got "
                                    f"{line.strip()!r}")


def read_pairs(path):
    """Parse an LFW-format pairs file into a :class:`PairsFile`.

    Raises :class:`PairsFormatError` (a ``ValueError``) naming the line for bytes that are not
    UTF-8, a bad header, a line
    that is neither ``name i j`` nor ``name1 i name2 j``, a non-positive or non-integer image
    number, a pair of an image with itself, a matched pair where the fold expects a mismatched one
    (or the reverse), or a pair count other than ``folds * 2 * n``.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PairsFormatError(path, data[:e.start].count(b"\n") + 1, "not UTF-8 text (byte "
                               f"0x{data[e.start]:02x}); save the file as UTF-8") from None
    # Universal newlines, as text mode would give: CRLF and lone CR end lines too.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines[0].strip():
        raise PairsFormatError(path, 1, "expected the header 'folds<TAB>pairs_per_fold', "
                               "found an empty line")
    num_folds, per_fold = _parse_header(path, lines[0])
    total = num_folds * 2 * per_fold
    pairs = []
    last_line = 1
    for line_number, line in enumerate(lines[1:], start=2):
        tokens = line.split()
        if not tokens:
            continue
        last_line = line_number
        position = len(pairs)
        if position >= total:
            raise PairsFormatError(path, line_number, "more pairs than the header announces "
                                   f"({num_folds} folds x 2 x {per_fold} = {total})")
        if len(tokens) == 3:
            name1 = name2 = _parse_name(path, line_number, tokens[0])
            index1 = _parse_count(path, line_number, tokens[1], "an image number")
            index2 = _parse_count(path, line_number, tokens[2], "an image number")
            issame = True
        elif len(tokens) == 4:
            name1 = _parse_name(path, line_number, tokens[0])
            index1 = _parse_count(path, line_number, tokens[1], "an image number")
            name2 = _parse_name(path, line_number, tokens[2])
            index2 = _parse_count(path, line_number, tokens[3], "an image number")
            issame = False
        else:
            raise PairsFormatError(path, line_number, "expected 'name i j' (matched) or "
                                   f"'name1 i name2 j' (mismatched), got {len(tokens)} fields: "
                                   f"{line.strip()!r}")
        if issame and index1 == index2:
            raise PairsFormatError(path, line_number, f"a matched pair of image {index1} with "
                                                      "itself")
        if not issame and name1 == name2:
            raise PairsFormatError(path, line_number, "a mismatched pair names one identity "
                                   f"twice ({name1})")
        fold, offset = divmod(position, 2 * per_fold)
        expect_same = offset < per_fold
        if issame != expect_same:
            kind = ("matched ('name i j')" if expect_same
                    else "mismatched ('name1 i name2 j')")
            raise PairsFormatError(
                path, line_number, f"pair {offset + 1} of fold {fold + 1} should be {kind}: each "
                f"fold holds {per_fold} matched then {per_fold} mismatched pairs")
        pairs.append(Pair(name1, index1, name2, index2, issame, fold, line_number))
    if len(pairs) != total:
        raise PairsFormatError(path, last_line, f"the file ends after {len(pairs)} pairs; the "
                                                "header "
                               f"announces {num_folds} folds x 2 x {per_fold} = {total}")
    return PairsFile(num_folds, per_fold, pairs)


def write_pairs(path, num_folds, pairs_per_fold, pairs):
    """Write a pairs file in the LFW format (tab-separated, ``\\n`` line ends).

    ``pairs`` holds :class:`Pair` or ``(name1, index1, name2, index2)`` tuples in file order;
    matched pairs (``name1 == name2``) are written as ``name i j``. The structure is not checked
    here: read the file back with :func:`read_pairs` for that.
    """
    lines = [f"{num_folds}\t{pairs_per_fold}"]
    for pair in pairs:
        name1, index1, name2, index2 = pair[:4]
        if name1 == name2:
            lines.append(f"{name1}\t{index1}\t{index2}")
        else:
            lines.append(f"{name1}\t{index1}\t{name2}\t{index2}")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def make_fold_pairs(num_folds, identities_per_fold, images_per_identity, pairs_per_fold, rng):
    """LFW View 2 pairs over identity-disjoint folds of the verification identities.

    Fold ``f`` draws only on identities ``f*k .. f*k+k-1`` (``k = identities_per_fold``).
    ``pairs_per_fold`` is the pairs file header's n, as everywhere in the project: each fold
    holds n matched and n mismatched pairs. Returns one list per fold: first the n matched pairs
    ``(identity, i, identity, j)`` with i < j, then the n mismatched
    ``(identity1, i, identity2, j)`` with identity1 < identity2. Identities are 0-based
    indices, image numbers 1-based (as in pairs.txt). No pair appears twice. ``rng`` (a numpy
    ``RandomState``) draws them; :func:`write_pairs` writes them as a pairs file.
    """
    check_pairs_feasible(num_folds, identities_per_fold, images_per_identity, pairs_per_fold)
    half = pairs_per_fold
    k, m = identities_per_fold, images_per_identity
    folds = []
    for fold in range(num_folds):
        first = fold * k
        # Rejection sampling keeps memory flat for large folds; check_pairs_feasible makes
        # sure enough distinct pairs exist.
        matched = set()
        while len(matched) < half:
            person = first + rng.randint(k)
            i, j = sorted(rng.choice(m, 2, replace=False) + 1)
            matched.add((person, int(i), person, int(j)))
        mismatched = set()
        while len(mismatched) < half:
            p1, p2 = sorted(first + rng.choice(k, 2, replace=False))
            i, j = rng.randint(1, m + 1, 2)
            mismatched.add((int(p1), int(i), int(p2), int(j)))
        folds.append(sorted(matched) + sorted(mismatched))
    return folds


def check_pairs_feasible(num_folds, identities_per_fold, images_per_identity, pairs_per_fold):
    """Raise ValueError unless :func:`make_fold_pairs` can draw these pairs (``pairs_per_fold``
    matched and as many mismatched per fold)."""
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    if identities_per_fold < 2:
        raise ValueError("pair_identities_per_fold must be >= 2 (mismatched pairs need two "
                         f"identities), got {identities_per_fold}")
    if images_per_identity < 2:
        raise ValueError("pair_images_per_identity must be >= 2 (matched pairs need two "
                         f"images), got {images_per_identity}")
    if int(pairs_per_fold) != pairs_per_fold or pairs_per_fold < 1:
        raise ValueError("pairs_per_fold (matched pairs per fold, and as many mismatched) must "
                         f"be at least 1, got {pairs_per_fold}")
    half = pairs_per_fold
    k, m = identities_per_fold, images_per_identity
    max_matched = k * m * (m - 1) // 2
    max_mismatched = k * (k - 1) // 2 * m * m
    if half > max_matched or half > max_mismatched:
        raise ValueError(
            f"pairs_per_fold={pairs_per_fold} needs {half} distinct matched and {half} mismatched "
            f"pairs per fold, but {k} "
            f"identities x {m} images give only {max_matched} matched and {max_mismatched} "
            "mismatched; raise pair_identities_per_fold or pair_images_per_identity")


class _FolderIndex:
    """Looks up ``name_%04d.<ext>`` in identity folders, listing each folder once."""

    def __init__(self, image_dir):
        self.image_dir = image_dir
        self._listings = {}

    def _listing(self, name):
        if name not in self._listings:
            files = {}
            folder = os.path.join(self.image_dir, name)
            try:
                entries = sorted(os.listdir(folder))
            except OSError:
                entries = []
            for filename in entries:
                stem, ext = os.path.splitext(filename)
                if os.path.isfile(os.path.join(folder, filename)):
                    files.setdefault((stem, ext.lower()), filename)
            self._listings[name] = files
        return self._listings[name]

    def find(self, name, index):
        """``(relpath, exists)``; a missing image gets the first extension's path."""
        stem = f"{name}_{index:04d}"
        listing = self._listing(name)
        for ext in IMAGE_EXTENSIONS:
            filename = listing.get((stem, ext))
            if filename is not None:
                return name + "/" + filename, True
        return name + "/" + stem + IMAGE_EXTENSIONS[0], False


def pair_image_relpaths(pair, image_dir):
    """Paths (relative to ``image_dir``, ``/``-separated) of the two images of ``pair``.

    Each image is ``name/name_%04d.<ext>`` with the first extension of
    ``image_files.IMAGE_EXTENSIONS`` (jpg, jpeg, png, pgm, ...) that exists, compared
    case-insensitively. An image found under no extension gets the ``.jpg`` path, which does not
    exist; :func:`resolve_pairs` reports such images.
    """
    index = _FolderIndex(image_dir)
    return (index.find(pair.name1, pair.index1)[0], index.find(pair.name2, pair.index2)[0])


def resolve_pairs(pairs_file, image_dir, allow_missing=False, remedy=None):
    """Find every pair's images under ``image_dir``.

    Returns ``(relpaths, kept, missing)``: ``relpaths`` a list of ``(relpath1, relpath2)`` and
    ``kept`` the matching list of :class:`Pair`, both for the pairs whose two images exist, in
    file order; ``missing`` the missing image paths, each once, in order of first mention.
    A missing image raises :class:`MissingPairImagesError` listing every missing path unless
    ``allow_missing`` is true, in which case the pairs that need it are left out; ``remedy``
    (e.g. ``"pass --allow_missing_pairs to skip those pairs"``) ends its first line.
    """
    if not os.path.isdir(image_dir):
        raise ValueError(f"image directory {image_dir} does not exist or is not a directory")
    index = _FolderIndex(image_dir)
    relpaths, kept, missing, seen_missing = [], [], [], set()
    num_affected = 0
    for pair in pairs_file.pairs:
        found = [index.find(pair.name1, pair.index1), index.find(pair.name2, pair.index2)]
        absent = [path for path, exists in found if not exists]
        for path in absent:
            if path not in seen_missing:
                seen_missing.add(path)
                missing.append(path)
        if absent:
            num_affected += 1
            continue
        relpaths.append((found[0][0], found[1][0]))
        kept.append(pair)
    if missing and not allow_missing:
        raise MissingPairImagesError(image_dir, missing, num_affected, remedy)
    return relpaths, kept, missing
