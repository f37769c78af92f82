"""Reading downloaded pickles without running code from them, within a memory budget.

``pickle.load`` calls whatever callable a pickle names, so a pickle from a file host can
run ``os.system`` on load. The data sets shared as pickles (the miniImageNet caches, the
tieredImageNet label files, CIFAR-100) only need numpy arrays and plain containers, so
``load_data_pickle`` resolves exactly those names and refuses every other one before
anything is called. It also charges every allocation to the file's memory allowance
(``limits.allowance``): the allowed callables never allocate from a number in the file
(``bytes(N)``, an array of a declared shape), and copies of one large object are counted
each time (``bounded_unpickler``).
"""

from __future__ import annotations

import collections
import io
import os
from pathlib import Path

import numpy as np

from metaunlab.data import limits
from metaunlab.data.bounded_unpickler import (
    NDARRAY,
    UNPICKLING_ERRORS,
    BoundedUnpickler,
    bytes_from,
    copying,
    latin1_encode,
    numpy_rebuilders,
)
from metaunlab.data.errors import DataError, looks_like_html

_CONTAINERS = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple}
_NUMPY_MODULES = {"_reconstruct": ("numpy.core.multiarray", "numpy._core.multiarray"),
                  "scalar": ("numpy.core.multiarray", "numpy._core.multiarray"),
                  "_frombuffer": ("numpy.core.numeric", "numpy._core.numeric")}


def _allowed(budget: limits.Budget) -> dict[tuple[str, str], object]:
    """(module, name) -> object. Pickles written by numpy 1.x and 2.x, and by Python 2
    (module "__builtin__"), all name these; nothing here can reach the file system, processes
    or the import machinery, and each callable charges ``budget`` before it allocates."""
    builtins = {name: copying(kind, budget, name) for name, kind in _CONTAINERS.items()}
    builtins |= {name: bytes_from(kind, budget, name)
                 for name, kind in (("bytes", bytes), ("bytearray", bytearray))}
    rebuilders = numpy_rebuilders(budget)
    return {
        **{(module, name): rebuilders[name] for name, modules in _NUMPY_MODULES.items()
           for module in modules},
        ("numpy", "ndarray"): NDARRAY,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): copying(collections.OrderedDict, budget, "OrderedDict"),
        # Protocol 2 stores bytes as _codecs.encode(text, "latin1"): a pure text-to-bytes call.
        ("_codecs", "encode"): latin1_encode(budget),
        **{(module, name): obj for module in ("builtins", "__builtin__")
           for name, obj in builtins.items()},
    }


class _DataOnlyUnpickler(BoundedUnpickler):
    def __init__(self, file, source: str, encoding: str, budget: limits.Budget):
        super().__init__(file, budget, encoding=encoding)
        self._source = source
        self._allowed = _allowed(budget)

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source} asks to run {module}.{name} while loading, which a data "
                "pickle never needs, so it was refused; download the file again from a "
                "source you trust."
            ) from None


def load_data_pickle(path: str | os.PathLike, *, encoding: str = "ASCII") -> object:
    """Unpickle ``path`` allowing only numpy arrays, numpy scalars and plain containers.

    ``encoding`` is how Python 2 ``str`` objects are decoded; pickles written by Python 2
    with numpy arrays in them need ``"latin1"`` (numpy's own advice). The file's size is
    checked against the memory budget before it is read.
    """
    path = Path(path)
    data = limits.read_file(path, limits.memory_budget(), "pickle")
    return loads_data_pickle(data, str(path), encoding=encoding)


def loads_data_pickle(data: bytes, source: str, *, encoding: str = "ASCII") -> object:
    """``load_data_pickle`` for bytes already read (a member of an archive, say);
    ``source`` names them in errors. What unpickling allocates is limited to
    ``limits.allowance(len(data))``."""
    if looks_like_html(data[:512]):
        raise DataError(
            f"{source} is an HTML page, not a pickle (a download or quota page was saved "
            "in its place); download the file again."
        )
    budget = limits.Budget(source, limits.allowance(len(data)))
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), source, encoding, budget).load()
    except DataError:
        raise
    except UNPICKLING_ERRORS as error:
        raise DataError(
            f"{source} is not a readable pickle ({type(error).__name__}: {error}); the file is "
            "truncated or corrupt, so download it again."
        ) from error
