"""An unpickler that charges every allocation a pickle asks for to a budget.

A pickle is a program: its opcodes build objects and call the callables it names. Restricting
the callables (``safe_pickle``, ``interop.pth_formats``) stops it running code, but not
allocating: ``bytes(N)`` or ``numpy.ndarray(N, object)`` allocate from a number in the file,
an array's ``__setstate__`` allocates the shape the file declares, and a callable that copies
(``list(x)``, ``bytes(x)``) can be called again and again on one large memoized argument. The
C unpickler adds its own: ``LONG_BINPUT`` with index 2**28 makes it zero a 4 GiB memo table.

:class:`BoundedUnpickler` is the pure-Python unpickler (``pickle._Unpickler``), whose memo is a
dict and which reads only what its input holds, with every opcode charged to a
:class:`~metaunlab.data.limits.Budget` by an upper estimate of what CPython allocates for it,
and a numpy array's state checked against its content and charged before numpy allocates.
The callables a restricted unpickler allows are wrapped by :func:`copying`, :func:`bytes_from`
and :func:`numpy_rebuilders`, which refuse an allocation sized by a number and charge the size
of each copy before making it.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from metaunlab.data.errors import DataError
from metaunlab.data.limits import Budget, element_count, size_text

_PurePythonUnpickler = pickle._Unpickler  # the pure-Python one: see the module docstring

# Upper estimates, in bytes, of what CPython allocates for one opcode: a small object and its
# stack slot by default, an empty hashed container, a memo entry, a list or tuple. Opcodes that
# hash the items since the mark into a table pay per item too.
_OPCODE_BYTES = 48
_OPCODE_BYTES_BY_CODE = {
    **dict.fromkeys((pickle.EMPTY_SET, pickle.FROZENSET, pickle.EMPTY_DICT, pickle.DICT), 256),
    **dict.fromkeys((pickle.MEMOIZE, pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT), 128),
    **dict.fromkeys((pickle.MARK, pickle.EMPTY_LIST, pickle.LIST, pickle.TUPLE, pickle.TUPLE1,
                     pickle.TUPLE2, pickle.TUPLE3), 72),
}
_BYTES_PER_STACK_ITEM = {pickle.SETITEMS: 32, pickle.DICT: 32, pickle.ADDITEMS: 64,
                         pickle.FROZENSET: 64}
# A container built from an iterable: its slot for each item, plus the item when iterating
# creates one (a numpy scalar or row view).
BYTES_PER_ITEM = 128
_OBJECT_POINTER = 8
# What the pure-Python unpickler raises on a damaged pickle (the C one says UnpicklingError).
UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                     IndexError, KeyError, struct.error, OverflowError, RecursionError,
                     MemoryError)


def _charged(load: Callable, fixed: int, per_item: int) -> Callable:
    def charged_load(self: BoundedUnpickler) -> None:
        self.budget.charge(fixed + per_item * len(self.stack), "to build its objects")
        load(self)

    return charged_load


def _charged_dispatch(table: dict[int, Callable]) -> dict[int, Callable]:
    charged = {}
    for code, load in table.items():
        key = bytes([code])
        charged[code] = _charged(load, _OPCODE_BYTES_BY_CODE.get(key, _OPCODE_BYTES),
                                 _BYTES_PER_STACK_ITEM.get(key, 0))
    return charged


class BoundedUnpickler(_PurePythonUnpickler):
    """``pickle._Unpickler`` with every opcode and every numpy array state charged to ``budget``.

    Args:
      file: a binary file-like object holding the pickle (see :class:`ClampedReader`).
      budget: what the pickle may make us allocate.
      **kwargs: ``encoding`` and ``errors`` of ``pickle.Unpickler``.
    """

    dispatch = _charged_dispatch(_PurePythonUnpickler.dispatch)

    def __init__(self, file, budget: Budget, **kwargs):
        super().__init__(file, **kwargs)
        self.budget = budget

    def load_build(self) -> None:
        if isinstance(self.stack[-2], np.ndarray):
            self._charge_array_state(self.stack[-1])
        _PurePythonUnpickler.load_build(self)

    def load_bytearray8(self) -> None:
        # The base class allocates bytearray(N) for an N read from the file before reading.
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # at most what the input holds
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.budget.charge(size, "a bytearray")
        self.append(bytearray(data))

    dispatch[pickle.BUILD[0]] = _charged(load_build, _OPCODE_BYTES, 0)
    dispatch[pickle.BYTEARRAY8[0]] = _charged(load_bytearray8, _OPCODE_BYTES, 0)

    def _charge_array_state(self, state: Any) -> None:
        """Check a numpy array's pickled state (version, shape, dtype, fortran, data) against
        what it holds, and charge its size, before ``ndarray.__setstate__`` allocates it."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            return  # numpy refuses it before allocating
        shape, dtype, rawdata = state[-4], state[-3], state[-1]
        if not isinstance(shape, tuple) or not isinstance(dtype, np.dtype):
            return  # numpy refuses it before allocating
        count = element_count(shape)
        nbytes = count * max(dtype.itemsize, _OBJECT_POINTER if dtype.hasobject else 0)
        what = f"a numpy array of shape {shape} and dtype {dtype}"
        if dtype.hasobject:
            # numpy allocates the declared shape, then reads that many items from the list,
            # past its end if the list is shorter.
            if not isinstance(rawdata, list) or len(rawdata) != count:
                held = len(rawdata) if isinstance(rawdata, list) else type(rawdata).__name__
                raise pickle.UnpicklingError(f"{what} holds {held} items, not {count}")
        elif isinstance(rawdata, str):
            nbytes += len(rawdata)  # numpy encodes a Python 2 str to bytes first
        self.budget.charge(nbytes, what)


class ClampedReader:
    """A binary file whose reads never ask for more than ``size`` bytes in all.

    ``BufferedReader.read(n)`` allocates ``n`` bytes before reading; a length read from a
    pickle must not size that buffer.
    """

    def __init__(self, file, size: int):
        self._file, self._left = file, size

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._file.readline(self._left)
        self._left -= len(data)
        return data


def refused(budget: Budget, call: str,
            why: str = "allocates memory from a number written in the file") -> DataError:
    """The one-sentence refusal of a call the file asks for."""
    return DataError(f"{budget.source} asks for {call}, which {why} and which no data file "
                     "needs, so it was refused; download the file again from a source you "
                     "trust.")


def copying(kind: Callable, budget: Budget, name: str) -> Callable:
    """``kind`` (``list``, ``dict``, ``set``, ...) called with nothing or one sized iterable,
    charging ``BYTES_PER_ITEM`` per item before copying."""
    def build(*args):
        if len(args) > 1:
            raise TypeError(f"{name} takes at most one argument from a data pickle")
        if args:
            budget.charge(len(args[0]) * BYTES_PER_ITEM, f"{name}() of {len(args[0])} items")
        return kind(*args)

    return build


def bytes_from(kind: type, budget: Budget, name: str) -> Callable:
    """``bytes`` / ``bytearray`` from text or a buffer, charged by its size; never from a
    number (``bytes(N)`` is N zero bytes), nor anything with ``__index__`` (numpy ints)."""
    def build(*args):
        if not args:
            return kind()
        source = args[0]
        if hasattr(source, "__index__"):
            raise refused(budget, f"{name}({_number_text(source)})")
        if isinstance(source, str):
            nbytes = 4 * len(source)  # the widest encoding
        elif isinstance(source, list | tuple):
            nbytes = len(source)
        else:
            nbytes = memoryview(source).nbytes
        budget.charge(nbytes, f"{name}() of {size_text(nbytes)}")
        return kind(*args)

    return build


def _number_text(value: Any) -> str:
    # repr of a huge int is slow or refused (sys.set_int_max_str_digits)
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit number"
    return repr(value)[:40]


_LATIN1 = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"}


def latin1_encode(budget: Budget) -> Callable:
    """``_codecs.encode(text, "latin1")``, the only call protocol 2 stores bytes with; any
    other codec (hex, base64, zlib, ...) is refused: those transform rather than store."""
    def encode(text, encoding="utf-8", errors="strict"):
        if not isinstance(text, str) or not isinstance(encoding, str) or (
                encoding.lower() not in _LATIN1):
            raise refused(budget, f"_codecs.encode(..., {repr(encoding)[:40]})",
                          "transforms data where pickles only store bytes as latin1")
        budget.charge(len(text), f"_codecs.encode() of {size_text(len(text))}")
        return text.encode("latin1", errors)

    return encode


class _Marker:
    """``numpy.ndarray`` as a pickle names it: only an argument of ``_reconstruct``; calling
    it (``ndarray(shape)``) would allocate from the numbers in the file."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


NDARRAY = _Marker()


def _numpy_functions() -> dict[str, Callable]:
    # The functions numpy itself pickles with, rather than private modules imported by name:
    # numpy 1.x calls the module numpy.core, numpy 2.x numpy._core.
    array = np.zeros(1)
    return {"_reconstruct": array.__reduce__()[0], "scalar": np.float64(0).__reduce__()[0],
            "_frombuffer": array.__reduce_ex__(5)[0]}


_NUMPY = _numpy_functions()


def numpy_rebuilders(budget: Budget) -> dict[str, Callable]:
    """numpy's ``_reconstruct``, ``scalar`` and ``_frombuffer``, each charging what it allocates.

    Returns:
      name -> callable, for the names numpy pickles with.
    """
    def reconstruct(subtype, shape, dtype):
        if subtype is not NDARRAY:
            raise refused(budget, f"numpy _reconstruct of {subtype!r}, not of a plain array")
        itemsize = max(np.dtype(dtype).itemsize, _OBJECT_POINTER)
        budget.charge(element_count(shape) * itemsize, f"an empty numpy array of shape {shape}")
        return _NUMPY["_reconstruct"](np.ndarray, shape, dtype)

    def scalar(dtype, obj=None):
        if not isinstance(dtype, np.dtype):
            raise TypeError("numpy scalar without a dtype")
        extra = len(obj) if isinstance(obj, str) else 0
        budget.charge(2 * dtype.itemsize + extra, f"a numpy {dtype} scalar")
        return _NUMPY["scalar"](dtype, obj) if obj is not None else _NUMPY["scalar"](dtype)

    def frombuffer(buf, dtype, shape, order, *axis_order):
        # A view of bytes the pickle holds: nothing to charge.
        return _NUMPY["_frombuffer"](buf, dtype, shape, order, *axis_order)

    return {"_reconstruct": reconstruct, "scalar": scalar, "_frombuffer": frombuffer}
