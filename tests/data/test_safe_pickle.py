"""The allow-list unpickler: data round-trips, code does not run."""

from __future__ import annotations

import io
import os
import pickle
import re
import subprocess
import warnings
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import pytest

from stad.data.ava import read_proposals
from stad.data.safe_pickle import allowed_globals, safe_load_pickle
from stad.errors import StadError


class _Touch:
    """Unpickling this with plain ``pickle`` runs ``os.system("touch <path>")``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Popen:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.path)],))


class _Custom:
    def __init__(self) -> None:
        self.value = 1


def _data() -> dict:
    return {
        "arrays": [np.arange(6, dtype=np.int32).reshape(2, 3), np.array([0.5, -1.0]), np.zeros((0, 5)), np.array([True, False])],
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "scalars": (np.float32(2.5), np.int64(-3), 7, 1.25, True, None, 1 + 2j),
        "text": ("café", b"\x00\xffbytes", bytearray(b"ab")),
        "sets": ({1, 2}, frozenset({"a"})),
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
        "default": defaultdict(list, {"k": [1]}),
        ("tuple", 1): "tuple key",
    }


def _assert_same(a, b) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.flags.f_contiguous == b.flags.f_contiguous
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
        if isinstance(a, defaultdict):
            assert a.default_factory is b.default_factory
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_round_trip_of_data_and_numpy_for_every_protocol(protocol: int, tmp_path: Path):
    data = _data()
    blob = pickle.dumps(data, protocol=protocol)
    _assert_same(data, safe_load_pickle(blob, what="test data"))
    path = tmp_path / "data.pkl"
    path.write_bytes(blob)
    _assert_same(data, safe_load_pickle(path, what="test data"))
    with path.open("rb") as f:
        _assert_same(data, safe_load_pickle(f, what="test data"))


def test_code_does_not_run_and_the_refused_global_is_named(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"a": _Touch(marker)}, protocol=2))
    system = f"{os.system.__module__}.system"  # posix.system on Linux
    with pytest.raises(StadError, match=rf"evil\.pkl: refused global {re.escape(system)} while unpickling proposals"):
        safe_load_pickle(path, what="proposals")
    assert not marker.exists()
    for protocol in (0, 4, 5):
        with pytest.raises(StadError, match=re.escape(system)):
            safe_load_pickle(pickle.dumps(_Touch(marker), protocol=protocol), what="x")
    with pytest.raises(StadError, match="refused global subprocess.Popen"):
        safe_load_pickle(pickle.dumps([_Popen(marker)]), what="x")
    with pytest.raises(StadError, match="refused global builtins.eval"):
        safe_load_pickle(b"\x80\x02c__builtin__\neval\nX\x03\x00\x00\x001+1\x85R.", what="x")
    with pytest.raises(StadError, match=r"refused global (copyreg\._reconstructor|.*_Custom)"):
        safe_load_pickle(pickle.dumps(_Custom(), protocol=2), what="x")
    with pytest.raises(StadError, match=r"refused global .*_Custom"):
        safe_load_pickle(pickle.dumps(_Custom(), protocol=4), what="x")
    assert not marker.exists()
    # The same file through the proposals reader: the error names the file and the global.
    with pytest.raises(StadError, match=rf"evil\.pkl: refused global {re.escape(system)}"):
        read_proposals(path)
    assert not marker.exists()


def _py2_array_ops(arr: np.ndarray) -> bytes:
    """The opcodes Python 2's cPickle (protocol 2) writes for a float64 vector: numpy.core names, data as a py2 str."""
    raw = arr.astype("<f8").tobytes()
    assert len(raw) < 256 and arr.ndim == 1
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n" b"cnumpy\nndarray\n" b"K\x00\x85" b"U\x01b" b"\x87R"
        b"(K\x01" + b"K" + bytes([arr.size]) + b"\x85"
        b"cnumpy\ndtype\nU\x02f8K\x00K\x01\x87R"
        b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89U" + bytes([len(raw)]) + raw + b"tb"
    )


def test_python2_latin1_pickle_with_numpy_array():
    arr = np.array([0.5, -1.0, 233.25])
    # {'a': array, 's': __builtin__.set([1, 2]), 'name': 'caf\xe9'} as Python 2 writes it (str = bytes).
    blob = b"\x80\x02}(U\x01a" + _py2_array_ops(arr) + b"U\x01sc__builtin__\nset\n](K\x01K\x02e\x85RU\x04nameU\x04caf\xe9u."
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy.core names must not hit numpy 2's deprecation shim
        out = safe_load_pickle(blob, what="py2 data")
    assert sorted(out) == ["a", "name", "s"]
    np.testing.assert_array_equal(out["a"], arr)
    assert out["a"].dtype == np.float64 and out["s"] == {1, 2} and out["name"] == "café"


def test_numpy1_names_in_a_python3_pickle():
    blob = pickle.dumps({"v,0902": np.array([[0.1, 0.2, 0.3, 0.4, 0.9]]), "s": np.float32(1.5)}, protocol=2)
    old = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # GLOBAL lines: numpy 1.x spelling
    assert old != blob
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = safe_load_pickle(old, what="proposals")
    np.testing.assert_array_equal(out["v,0902"], [[0.1, 0.2, 0.3, 0.4, 0.9]])
    assert out["s"] == np.float32(1.5)


def test_bad_input_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        safe_load_pickle(tmp_path / "missing.pkl", what="labels")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(StadError, match=r"junk\.pkl: cannot unpickle labels \("):
        safe_load_pickle(tmp_path / "junk.pkl", what="labels")
    with pytest.raises(StadError, match="<bytes>: cannot unpickle labels"):
        safe_load_pickle(pickle.dumps([1, 2])[:-3], what="labels")
    assert safe_load_pickle(io.BytesIO(pickle.dumps(None)), what="x") is None
    listed = allowed_globals()
    assert "builtins.dict" in listed and "numpy._core.multiarray._reconstruct" in listed
    assert not any(name.startswith(("os.", "posix.", "subprocess.")) for name in listed)
