"""insightface verification .bin files: the restricted unpickler, hostile pickles, the writer."""

import os
import pickle
import subprocess

import numpy as np
import pytest

from data_tools.insightface import bin_format as insightface_bin

BINS = [b"\xff\xd8\xffone", b"\xff\xd8\xfftwo", b"\x89PNG three", b""[:0] + b"four"]
ISSAME = [True, False]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("as_array", [False, True])
def test_real_shapes_load_at_every_protocol(protocol, as_array):
    issame = np.array(ISSAME, dtype=bool) if as_array else ISSAME
    data = pickle.dumps((BINS, issame), protocol=protocol)
    bins, got = insightface_bin.loads(data)
    assert bins == BINS and got == ISSAME
    assert all(type(b) is bytes for b in bins) and all(type(s) is bool for s in got)


def test_python2_pickle_of_str_images_loads_as_bytes():
    # Python 2's pickle.dump((bins, issame_list), f, protocol=2) with str images:
    # PROTO 2, ([SHORT_BINSTRING x2], [NEWTRUE]) as a TUPLE2.
    data = b"\x80\x02](U\x04abcdU\x04efghe]\x88a\x86."
    assert insightface_bin.loads(data) == ([b"abcd", b"efgh"], [True])


def test_writer_round_trip(tmp_path):
    path = str(tmp_path / "set.bin")
    insightface_bin.write_bin(path, BINS, ISSAME)
    with open(path, "rb") as f:  # what insightface's load_bin does, on our own trusted file
        assert pickle.load(f, encoding="bytes") == (BINS, ISSAME)
    assert insightface_bin.read_bin(path) == (BINS, ISSAME)
    insightface_bin.write_bin(path, BINS, ISSAME, protocol=2)
    assert insightface_bin.read_bin(path) == (BINS, ISSAME)


# ------------------------------------------------------------------ hostile files


def _hostile(marker):
    command = f"touch {marker}"

    class Reduce:
        def __init__(self, func, args):
            self.func, self.args = func, args

        def __reduce__(self):
            return self.func, self.args

    return {
        "os.system": Reduce(os.system, (command,)),
        "builtins.eval": Reduce(eval, (f"open({marker!r}, 'w')",)),
        "builtins.exec": Reduce(exec, (f"open({marker!r}, 'w')",)),
        "subprocess.Popen": Reduce(subprocess.Popen, (["touch", marker],)),
        "subprocess.call": Reduce(subprocess.call, (["touch", marker],)),
        "builtins.__import__": Reduce(__import__, ("os",)),
        "reduce_to_own_class": _Evil(marker),
    }


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _Evil._run, (self.marker,)

    @staticmethod
    def _run(marker):
        open(marker, "w").close()


_NAMES = {"os.system": ("posix.system", "os.system", "nt.system"),
          "builtins.eval": ("builtins.eval",), "builtins.exec": ("builtins.exec",),
          "subprocess.Popen": ("subprocess.Popen",), "subprocess.call": ("subprocess.call",),
          "builtins.__import__": ("builtins.__import__",),
          # Protocols < 4 reach a nested name through getattr.
          "reduce_to_own_class": ("tests.test_insightface_bin._Evil._run",
                                  "test_insightface_bin._Evil._run", "builtins.getattr")}


@pytest.mark.parametrize("name", sorted(_NAMES))
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("where", ["top", "in_bins", "as_issame"])
def test_hostile_pickles_never_run(tmp_path, name, protocol, where):
    marker = str(tmp_path / "pwned")
    payload = _hostile(marker)[name]
    value = {"top": payload, "in_bins": ([b"a", payload], [True]),
             "as_issame": ([b"a", b"b"], payload)}[where]
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    with pytest.raises(insightface_bin.BinFormatError) as info:
        insightface_bin.read_bin(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert any(f"refusing global {n}" in message for n in _NAMES[name]), message
    assert not os.path.exists(marker)


@pytest.mark.parametrize("data, needle", [
    (b"cos\nsystem\n(S'touch /tmp/never'\ntR.", "refusing global os.system"),
    (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85R.", "not a readable pickle"),
    # numpy object arrays would unpickle arbitrary objects: refused at the dtype.
    (pickle.dumps(np.array([1, None], dtype=object), protocol=2), "numpy dtype 'O"),
    (pickle.dumps(([b"a", b"b"], np.array([[True]])), protocol=2), "only 1-D numpy arrays"),
    (b"\x80\x02]q\x00.", "expected a pickled (bins, issame_list) pair"),
    (pickle.dumps(([b"a"], [True])), "1 images for 1 pairs"),
    (pickle.dumps(([b"a", "b"], [True])), "bins[1] is a str"),
    (pickle.dumps(([b"a", b"b"], [2])), "issame_list[0] is 2"),
    (pickle.dumps(([b"a", b"b"], [True]))[:-5], "not a readable pickle"),
    (b"\x80\x04\x95", "not a readable pickle"),
])
def test_bad_files_are_one_line_errors(data, needle):
    with pytest.raises(insightface_bin.BinFormatError) as info:
        insightface_bin.loads(data, "x.bin")
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_size_cap_refuses_before_reading(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(pickle.dumps((BINS, ISSAME)))
    with pytest.raises(insightface_bin.BinFormatError, match="limit"):
        insightface_bin.read_bin(str(path), max_bytes=10)


def test_folds_are_sklearn_kfold_without_shuffle():
    assert insightface_bin.fold_sizes(6000) == [600] * 10
    assert insightface_bin.fold_sizes(7001) == [701] + [700] * 9
    assert insightface_bin.fold_sizes(23) == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    folds = insightface_bin.folds(23)
    assert folds == sorted(folds) and len(folds) == 23
