"""insightface's verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...), read
safely and written.

A ``.bin`` file is a pickle of ``(bins, issame_list)``: ``bins`` holds the encoded images (JPEG
bytes), pair i at positions 2i and 2i+1; ``issame_list`` is a list of bools or a numpy bool
array. insightface evaluates them with ``KFold(10, shuffle=False)``: the folds are contiguous.

Unpickling an untrusted file runs code, so :func:`read_bin` never calls ``pickle.load``: its
unpickler resolves only the globals that real ``.bin`` files hold, each replaced by a checked
stand-in:

* ``_codecs.encode(text, 'latin1')``: how Python 3 writes ``bytes`` at pickle protocol 2;
* ``builtins.bytes()`` with no argument: the empty ``bytes`` at protocol 2;
* ``numpy.ndarray``, ``numpy.dtype`` and ``numpy(._)core.multiarray._reconstruct`` /
  ``numpy(._)core.numeric._frombuffer``: what rebuilds a numpy bool array (protocols 2-5),
  limited to 1-D boolean and integer arrays built from their bytes (numpy's own unpickling of
  the state never runs).

Any other global stops the load with :class:`BinFormatError` naming it; nothing from the file
runs. Files larger than ``max_bytes`` are refused before they are read.
"""

import _compat_pickle
import io
import os
import pickle

import numpy as np

from data_tools import fileio

DEFAULT_MAX_BYTES = 2 << 30
NUM_FOLDS = 10


class BinFormatError(ValueError):
    """A ``.bin`` file that is not a verification set, or holds something else. One line."""


class _Refused(pickle.UnpicklingError):
    """Something a verification set does not hold; the load stops before it is used."""


def _encode(text, encoding="utf-8", *rest):
    if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is allowed only as encode(str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args):
    if args:
        raise _Refused("builtins.bytes is allowed only without arguments")
    return b""


class _Dtype:
    """Stand-in for ``numpy.dtype``: bool and integer type codes only. Its pickled state may
    set the byte order, nothing else (numpy's own ``__setstate__`` also takes flags that would
    make numpy read the array's bytes as object pointers)."""

    def __init__(self, spec, *args):
        if isinstance(spec, bytes):  # Python 2 pickles loaded with encoding='bytes'
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 8:
            raise _Refused("numpy.dtype is allowed only with a type code")
        try:
            dtype = np.dtype(spec)
        except TypeError:
            raise _Refused(f"numpy dtype {spec!r} is not a type code") from None
        if dtype.kind not in "biu" or dtype.hasobject:
            raise _Refused(f"numpy dtype {spec!r} is not allowed (bool or integer only)")
        self.dtype = dtype

    def __setstate__(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if isinstance(order, bytes):
            order = order.decode("latin1")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _Array:
    """Stand-in for the ndarray that ``_reconstruct`` creates and its state fills: the array is
    built from the raw bytes with a checked :class:`_Dtype`, never by numpy's unpickling."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("unexpected numpy array state")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _from_bytes(raw, dtype, shape, order):
    if not isinstance(dtype, _Dtype):
        raise _Refused("numpy arrays are allowed only with bool or integer dtypes")
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused("numpy array data must be bytes")
    if (not isinstance(shape, tuple) or len(shape) > 1
            or not all(isinstance(n, int) and n >= 0 for n in shape)):
        raise _Refused(f"only 1-D numpy arrays are allowed, got shape {shape!r}")
    count = shape[0] if shape else 1
    if len(raw) != count * dtype.dtype.itemsize:
        raise _Refused(f"numpy array of {count} items holds {len(raw)} bytes")
    return np.frombuffer(bytes(raw), dtype=dtype.dtype).reshape(shape, order=order)


class _NdarrayClass:
    """Stand-in for ``numpy.ndarray``: only an argument of ``_reconstruct``, never callable
    (``ndarray(shape)`` would allocate whatever a hostile file asks for)."""


_NDARRAY = _NdarrayClass()


def _reconstruct(subtype, shape, dtype_code):
    if subtype is not _NDARRAY:
        raise _Refused("_reconstruct is allowed only for numpy.ndarray")
    return _Array()


def _frombuffer(buffer, dtype, shape, order):
    array = _Array()
    array.array = _from_bytes(buffer, dtype, shape, order)
    return array


_ALLOWED = {
    ("_codecs", "encode"): _encode,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Python 2 names (protocols < 3) as Python 3 reads them: only to look up and to name
        # the global; nothing is imported.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"refusing global {module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused(f"refusing persistent id {pid!r}")


def loads(data, path="<bytes>"):
    """``(bins, issame)`` of a ``.bin`` file's bytes: ``bins`` a list of ``bytes`` (pair i at
    2i and 2i+1), ``issame`` a list of bools. Raises :class:`BinFormatError` (one line, naming
    ``path``) for a refused global, a broken pickle, or another structure."""
    try:
        value = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BinFormatError(f"{path}: not a safe verification .bin ({detail}); nothing in it "
                             f"was run") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle raises anything
        first_line = str(e).split("\n")[0][:200]
        raise BinFormatError(f"{path}: not a readable pickle ({type(e).__name__}: "
                             f"{first_line})") from None
    return _check_structure(value, path)


def _check_structure(value, path):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise BinFormatError(f"{path}: expected a pickled (bins, issame_list) pair, got "
                             f"{type(value).__name__}")
    bins, issame = value
    if isinstance(issame, _Array):
        issame = issame.array
    if not isinstance(bins, (list, tuple)):
        raise BinFormatError(f"{path}: bins is a {type(bins).__name__}, expected a list of "
                             f"encoded images")
    if isinstance(issame, np.ndarray):
        if issame.ndim != 1:
            raise BinFormatError(f"{path}: issame_list is an array of shape {issame.shape}, "
                                 f"expected 1-D bools")
        issame = issame.tolist()
    if not isinstance(issame, (list, tuple)):
        raise BinFormatError(f"{path}: issame_list is a {type(issame).__name__}, expected a "
                             f"list of bools")
    for i, flag in enumerate(issame):
        if not isinstance(flag, (bool, int, np.bool_, np.integer)) or int(flag) not in (0, 1):
            raise BinFormatError(f"{path}: issame_list[{i}] is {flag!r}, expected a bool")
    if len(bins) != 2 * len(issame):
        raise BinFormatError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected 2 "
                             f"per pair)")
    if not issame:
        raise BinFormatError(f"{path}: holds no pairs")
    images = []
    for i, image in enumerate(bins):
        if not isinstance(image, (bytes, bytearray)):
            raise BinFormatError(f"{path}: bins[{i}] is a {type(image).__name__}, expected "
                                 f"encoded image bytes")
        images.append(bytes(image))
    return images, [bool(flag) for flag in issame]


def read_bin(path, max_bytes=DEFAULT_MAX_BYTES):
    """``(bins, issame)`` of a verification ``.bin`` file, loaded without running anything from
    it (see the module docstring). Files larger than ``max_bytes`` are refused unread."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise BinFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    if size > max_bytes:
        raise BinFormatError(f"{path}: {size} bytes, more than the {max_bytes}-byte limit for a "
                             f"verification set")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    return loads(data, path)


def fold_sizes(num_pairs, num_folds=NUM_FOLDS):
    """Pairs per fold of sklearn's ``KFold(num_folds, shuffle=False)``, which insightface uses:
    contiguous, the first ``num_pairs % num_folds`` folds one larger."""
    if num_pairs < num_folds:
        raise BinFormatError(f"{num_pairs} pairs cannot make {num_folds} folds")
    return [num_pairs // num_folds + (1 if k < num_pairs % num_folds else 0)
            for k in range(num_folds)]


def folds(num_pairs, num_folds=NUM_FOLDS):
    """The fold of each pair (contiguous, as :func:`fold_sizes`)."""
    return [k for k, size in enumerate(fold_sizes(num_pairs, num_folds)) for _ in range(size)]


def dumps(bins, issame, protocol=4):
    """The bytes of a ``.bin`` file (what insightface's ``load_bin`` reads)."""
    bins = [bytes(b) for b in bins]
    issame = [bool(s) for s in issame]
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
    return pickle.dumps((bins, issame), protocol=protocol)


def write_bin(path, bins, issame, protocol=4):
    """Write ``(bins, issame)`` as a ``.bin`` file, atomically."""
    data = dumps(bins, issame, protocol)
    fileio.atomic_write(path, lambda f: f.write(data))
    return len(data)
