"""A restricted unpickler for dataset files.

Dataset pickles (the learn2learn / Ren miniImageNet cache, the MetaOptNet / Gidaris
pickles, the tieredImageNet label and PNG pickles) are files the user chose, but a
pickle can run any code on load. This unpickler resolves only plain containers,
numbers, strings, bytes and numpy arrays / dtypes / scalars; any other global
(``os.system``, ``builtins.eval``, a class from some module, ...) is refused with a
``DataError`` naming the file. Python 2 pickles (MetaOptNet's) are retried with
``encoding='latin1'``, as numpy documents for them.
"""

from __future__ import annotations

import builtins
import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["safe_load", "safe_loads", "ALLOWED_GLOBALS"]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import _codecs

    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    table: dict[tuple[str, str], Any] = {}
    for module in ("builtins", "__builtin__"):
        for name in ("list", "dict", "set", "frozenset", "tuple", "bytearray", "bytes",
                     "str", "int", "float", "complex", "bool"):
            table[(module, name)] = getattr(builtins, name)
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("_codecs", "encode")] = _codecs.encode  # bytes pickled with protocol < 3
    # numpy >= 2 writes numpy._core.*, older numpy (and Python 2 files) numpy.core.*;
    # both names resolve to the installed module without importing the deprecated one.
    for core in ("numpy.core", "numpy._core"):
        table[(core + ".multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(core + ".multiarray", "scalar")] = multiarray.scalar
        table[(core + ".numeric", "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    return table


ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, origin: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._origin = origin

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._origin}: refused to unpickle {module}.{name} (dataset pickles may "
                "only hold containers, numbers, strings, bytes and numpy arrays)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._origin}: refused to unpickle a persistent id")


def _load(read, origin: str) -> Any:
    for encoding in ("ASCII", "latin1"):
        try:
            with read() as f:
                return _RestrictedUnpickler(f, origin=origin, encoding=encoding).load()
        except DataError:
            raise
        except UnicodeDecodeError:
            continue  # a Python 2 pickle holding binary str: retry as latin1
        except MemoryError:
            raise
        except Exception as exc:  # truncated / corrupt / not a pickle at all
            raise DataError(f"{origin}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    raise DataError(f"{origin}: not a readable pickle (undecodable strings)")


def safe_load(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only data (see module docstring); DataError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return _load(lambda: open(path, "rb"), str(path))


def safe_loads(data: bytes, origin: str = "<bytes>") -> Any:
    """Unpickle bytes with the same restrictions as :func:`safe_load`."""
    return _load(lambda: io.BytesIO(data), origin)
