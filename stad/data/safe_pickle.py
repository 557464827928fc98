"""Load data pickles with an allow-list unpickler: containers, numbers, strings and numpy arrays only.

Annotation and proposal files of the keyframe data sets are pickles made by other projects
(MMAction2's dense proposals ``{"video,ts": (N, 5)}``, ACAR/FBIL's ``(data, idx_to_class)``
annotation tuple, see ``/work/shared/methods/FBIL.md`` §2, STEP's ``label/*.pkl``, see
``/work/shared/methods/STEP.md`` §2). ``pickle.load`` runs whatever callable a file names, so a file
from the internet can execute code. ``safe_load_pickle`` resolves only these globals:

* ``builtins``: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``str``, ``bytes``,
  ``bytearray``, ``int``, ``float``, ``bool``, ``complex`` (``None``/``True``/``False`` and most
  scalars and containers come from opcodes and need no global);
* ``collections.OrderedDict`` and ``collections.defaultdict`` (its factory is itself a global and
  passes the same check);
* ``_codecs.encode``: protocols 0-2 write ``bytes`` (numpy's raw array data) as
  ``_codecs.encode(text, "latin1")``;
* numpy array, dtype and scalar reconstruction: ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy{,._}core.multiarray._reconstruct``, ``numpy{,._}core.multiarray.scalar`` and
  ``numpy{,._}core.numeric._frombuffer`` (protocol 5). The ``numpy.core`` names of numpy 1.x
  pickles are resolved to ``numpy._core`` on numpy 2 (no deprecation warning).

Python 2 names (``__builtin__.set``, ...) are mapped to Python 3 ones as ``pickle`` does
(``_compat_pickle``), and strings are decoded with ``encoding="latin1"``, which numpy needs to read
the raw data of Python 2 array pickles. Any other global raises ``StadError`` naming the file and
the refused global, e.g. ``refused global posix.system``, before it is imported or called.

``safe_torch_load`` is the same rule for ``torch.save`` files: ``torch.load(weights_only=True)``
(tensors, plain containers and numbers only), with extra classes allow-listed by the caller for one
file format (e.g. STEP's ``argparse.Namespace``); a refused file raises ``StadError`` naming the
file and the refused global.
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib
import io
import pickle
import re
from pathlib import Path
from typing import IO, Any, Iterable

from stad.errors import StadError

_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "bool", "complex")

# (module, name) -> the object, for everything that is not in numpy.
_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", name): getattr(__import__("builtins"), name) for name in _BUILTINS},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): __import__("_codecs").encode,
}

# numpy globals: (module as written in the pickle, name) -> (submodule of numpy._core / numpy.core, name).
_NUMPY_GLOBALS: dict[tuple[str, str], tuple[str | None, str]] = {
    ("numpy", "ndarray"): (None, "ndarray"),
    ("numpy", "dtype"): (None, "dtype"),
}
for _prefix in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_prefix}.multiarray", "_reconstruct")] = ("multiarray", "_reconstruct")
    _NUMPY_GLOBALS[(f"{_prefix}.multiarray", "scalar")] = ("multiarray", "scalar")
    _NUMPY_GLOBALS[(f"{_prefix}.numeric", "_frombuffer")] = ("numeric", "_frombuffer")


def _numpy_global(submodule: str | None, name: str) -> Any:
    """The numpy object ``numpy[._core|.core].<submodule>.<name>`` of the installed numpy."""
    import numpy

    if submodule is None:
        return getattr(numpy, name)
    for package in ("numpy._core", "numpy.core"):  # numpy >= 2 first: numpy.core warns there
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"numpy has no {submodule}.{name}")


def allowed_globals() -> list[str]:
    """The ``module.name`` globals ``safe_load_pickle`` resolves (sorted), for messages and docs."""
    return sorted(f"{m}.{n}" for m, n in [*_PLAIN_GLOBALS, *_NUMPY_GLOBALS])


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only the module's allow-list.

    Args:
        file: a binary file object.
        source: the file's name for messages.
        what: what the file holds, for messages (e.g. ``"proposals"``).
    """

    def __init__(self, file: IO[bytes], *, source: str, what: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.what = what

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented on the class
        py3_module, py3_name = module, name
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle maps them
            py3_module, py3_name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            py3_module = _compat_pickle.IMPORT_MAPPING[module]
        key = (py3_module, py3_name)
        if key in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[key]
        if key in _NUMPY_GLOBALS:
            return _numpy_global(*_NUMPY_GLOBALS[key])
        raise StadError(
            f"{self.source}: refused global {py3_module}.{py3_name} while unpickling {self.what}; "
            "only plain containers, numbers, strings and numpy arrays are allowed (stad.data.safe_pickle)"
        )


def safe_load_pickle(path_or_file: str | Path | IO[bytes] | bytes, *, what: str) -> Any:
    """Unpickle a data file with ``RestrictedUnpickler`` (see the module docstring for the allow-list).

    Args:
        path_or_file: a path, an open binary file, or the pickle's bytes.
        what: what the file holds, used in messages (e.g. ``"proposals"``, ``"ACAR annotations"``).

    Returns:
        The unpickled object (dicts, lists, tuples, sets, scalars, strings, numpy arrays).

    Raises:
        FileNotFoundError: ``path_or_file`` is a path that does not exist.
        StadError: a refused global (``"refused global os.system"``) or any other unpickling failure
            (``"cannot unpickle <what>"``), naming the file.
    """
    if isinstance(path_or_file, (bytes, bytearray, memoryview)):
        source, file, close = "<bytes>", io.BytesIO(bytes(path_or_file)), False
    elif isinstance(path_or_file, (str, Path)):
        path = Path(path_or_file)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        source, file, close = str(path), path.open("rb"), True
    else:
        source, file, close = str(getattr(path_or_file, "name", "<file>")), path_or_file, False
    try:
        return RestrictedUnpickler(file, source=source, what=what).load()
    except StadError:
        raise
    except Exception as err:  # noqa: BLE001 - any other unpickling failure means a bad file
        raise StadError(f"{source}: cannot unpickle {what} ({type(err).__name__}: {err})") from None
    finally:
        if close:
            file.close()


def torch_load_refusal(err: BaseException) -> str:
    """The reason in a ``torch.load(weights_only=True)`` error, naming the refused global when there is one.

    torch's ``UnpicklingError`` starts with a generic paragraph; the line that names the global
    (``... GLOBAL posix.system ...``) is kept, as ``refused global posix.system: <torch's line>``.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        match = re.search(r"GLOBAL ([\w.]+)", line)
        if match:
            return f"refused global {match.group(1)}: {line}"
    specific = [line for line in lines if not line.startswith("Weights only load failed")]
    return (specific or lines or [type(err).__name__])[0]


def safe_torch_load(
    path: str | Path, *, what: str, allow: Iterable[Any] = (), map_location: Any = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)``: a file never runs code.

    Args:
        path: the ``torch.save`` file.
        what: what the file should be, for messages (e.g. ``"a weights file"``).
        allow: classes the file format needs beyond tensors and plain values, passed to
            ``torch.serialization.safe_globals`` for this load only (default none).
        map_location: passed to ``torch.load`` (default ``"cpu"``).

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        StadError: ``"<path>: cannot be read as <what> with torch.load(weights_only=True) (refused global
            posix.system: ...)"`` for a refused global, or the first line of any other read failure.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path} (expected {what})")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError ...: not a readable file
        raise StadError(
            f"{path}: cannot be read as {what} with torch.load(weights_only=True) ({torch_load_refusal(err)})"
        ) from None


__all__ = ["RestrictedUnpickler", "allowed_globals", "safe_load_pickle", "safe_torch_load", "torch_load_refusal"]
