"""The torch-free reader of the two formats ``torch.save`` writes (see ``pth``): the zip
archive of torch >= 1.6 and the older legacy stream, through a restricted unpickler that
rebuilds only tensors and plain containers, within bounds on what a file may allocate: its
storages and the copies of their views (``Budget``), and what unpickling itself builds
(``metaunlab.data.bounded_unpickler``).
"""

from __future__ import annotations

import collections
import io
import math
import os
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from metaunlab.data import limits
from metaunlab.data.bounded_unpickler import (
    UNPICKLING_ERRORS,
    BoundedUnpickler,
    ClampedReader,
    copying,
)
from metaunlab.data.errors import DataError

__all__ = ["MAX_STORAGE_BYTES", "MAX_TOTAL_BYTES", "Budget", "PthError", "UnsafePickleError",
           "bfloat16", "load_legacy", "load_zip"]

# Bounds on what an untrusted file may make the reader allocate. The largest reference
# checkpoint (WRN-28-10 with its SIB head) holds about 150 MB of tensors; with these bounds a
# hostile file cannot drive the import past 1 GB: MAX_TOTAL_BYTES of storages, the copies of
# their views (each tensor is one copy) up to COPIES_PER_STORAGE_BYTE times the storages and
# MAX_TOTAL_BYTES in all, and what its pickle (MAX_PICKLE_BYTES at most) builds, within
# limits.allowance of its size.
MAX_STORAGE_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 400 * 2**20
MAX_PICKLE_BYTES = 16 * 2**20  # data.pkl of the largest reference checkpoint: about 50 KB
COPIES_PER_STORAGE_BYTE = 4  # the copies of views, per byte of storage
COPIES_SLACK = 16 * 2**20
READ_CHUNK = limits.READ_CHUNK  # bytes read at a time

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class PthError(DataError):
    """A file that is not a readable PyTorch checkpoint."""


class UnsafePickleError(PthError):
    """A checkpoint whose pickle asks for something beyond tensors and plain containers."""


def bfloat16() -> np.dtype:
    import ml_dtypes  # a jax dependency

    return np.dtype(ml_dtypes.bfloat16)


_STORAGE_DTYPES: dict[str, Callable[[], np.dtype]] = {
    "FloatStorage": lambda: np.dtype(np.float32),
    "DoubleStorage": lambda: np.dtype(np.float64),
    "HalfStorage": lambda: np.dtype(np.float16),
    "BFloat16Storage": bfloat16,
    "LongStorage": lambda: np.dtype(np.int64),
    "IntStorage": lambda: np.dtype(np.int32),
    "ShortStorage": lambda: np.dtype(np.int16),
    "CharStorage": lambda: np.dtype(np.int8),
    "ByteStorage": lambda: np.dtype(np.uint8),
    "BoolStorage": lambda: np.dtype(np.bool_),
    "ComplexFloatStorage": lambda: np.dtype(np.complex64),
    "ComplexDoubleStorage": lambda: np.dtype(np.complex128),
    "UntypedStorage": lambda: np.dtype(np.uint8),
}


class _StorageType:
    """Stand-in for a ``torch.<T>Storage`` class referenced by a pickle: just its dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]()


class _Storage:
    """A flat storage: a 1-D numpy array once the bytes are known (legacy files read later);
    `budget` counts the copies made of its views."""

    def __init__(self, dtype: np.dtype, numel: int, budget: Budget,
                 data: np.ndarray | None = None):
        self.dtype, self.numel, self.budget, self.data = dtype, numel, budget, data


class _PendingTensor:
    """A tensor whose storage bytes come after the pickle (legacy format)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(isinstance(v, int) for v in value):
        raise PthError(f"malformed tensor record: {what} is {value!r}, not a tuple of ints.")
    return tuple(int(v) for v in value)


def _materialize(storage: _Storage, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> np.ndarray:
    """A copy of the strided view, after checking that it stays inside the storage."""
    data = storage.data
    if data is None:
        raise PthError("a tensor refers to a storage whose bytes are missing from the file.")
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(
            s < 0 for s in stride):
        raise PthError(f"malformed tensor record: offset {offset}, size {size}, stride {stride}.")
    if 0 in size:
        return np.zeros(size, data.dtype.newbyteorder("="))
    if math.prod(size) > data.shape[0]:
        raise PthError(f"a tensor of size {size} has more elements than its storage of "
                       f"{data.shape[0]}; such views are not saved by torch.save.")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.shape[0]:
        raise PthError(f"a tensor of size {size} at offset {offset} (stride {stride}) reads "
                       f"past its storage of {data.shape[0]} elements.")
    item = data.dtype.itemsize
    storage.budget.copy(math.prod(size) * item, size)
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=size,
                                           strides=tuple(s * item for s in stride),
                                           writeable=False)
    return np.array(view, dtype=data.dtype.newbyteorder("="), copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, _Storage) or not isinstance(storage_offset, int):
        raise PthError("malformed tensor record: its storage is not a persistent storage.")
    size, stride = _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride")
    if storage.data is None:
        return _PendingTensor(storage, storage_offset, size, stride)
    return _materialize(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    if not isinstance(data, np.ndarray | _PendingTensor):
        raise PthError("malformed parameter record: its data is not a tensor.")
    return data


class _RestrictedUnpickler(BoundedUnpickler):
    """Resolves only the globals needed to rebuild tensors and plain containers; what the
    pickle builds is charged to a budget of `limits.allowance(pickle_size)`."""

    def __init__(self, file, source: str, load_storage: Callable[[tuple], _Storage],
                 pickle_size: int):
        budget = limits.Budget(source, limits.allowance(pickle_size))
        super().__init__(file, budget)
        self._source = source
        self._load_storage = load_storage
        self._ordered_dict = copying(collections.OrderedDict, budget, "OrderedDict")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return self._ordered_dict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"{self._source}: refusing to load: its pickle asks for {module}.{name}, which is "
            "not needed to rebuild tensors (only tensors, storages and plain containers are "
            "allowed); the file may be malicious, or holds more than weights.")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self._source}: refusing to load: unexpected persistent "
                                    f"id {str(pid)[:80]!r} (only tensor storages are allowed).")
        return self._load_storage(pid)


def _check_numel(numel: Any, source: str) -> int:
    if not isinstance(numel, int) or numel < 0:
        raise PthError(f"{source}: malformed storage record (element count {numel!r}).")
    return numel


class Budget:
    """The bytes a file's storages may take, in all and one by one, and the bytes of the
    copies of their views (a tensor is a copy of a view; a pickle may ask for the same view
    again and again)."""

    def __init__(self, source: str):
        self.source, self.used, self.copied = source, 0, 0

    def take(self, nbytes: int, key: str) -> None:
        if nbytes > MAX_STORAGE_BYTES or self.used + nbytes > MAX_TOTAL_BYTES:
            raise PthError(f"{self.source}: storage {key!r} declares {nbytes} bytes, beyond "
                           f"the {MAX_STORAGE_BYTES // 2**20} MiB per storage and "
                           f"{MAX_TOTAL_BYTES // 2**20} MiB in all a SIB checkpoint needs; the "
                           "file is not one of the reference checkpoints.")
        self.used += nbytes

    def copy(self, nbytes: int, size: tuple) -> None:
        # Each tensor of a checkpoint is a view of its own storage, or of a storage shared by a
        # few (tied weights, slices of one buffer): their copies take about what the storages
        # take, never many times more.
        limit = min(MAX_TOTAL_BYTES, COPIES_PER_STORAGE_BYTE * self.used + COPIES_SLACK)
        if self.copied + nbytes > limit:
            raise PthError(f"{self.source}: its tensors take more than {limit // 2**20} MiB (at "
                           f"a tensor of size {size}), {COPIES_PER_STORAGE_BYTE} times what its "
                           "storages hold; a checkpoint's tensors are views of its storages, so "
                           "the file is not one of the reference checkpoints.")
        self.copied += nbytes


def _read_exactly(f, buffer: np.ndarray, source: str, key: str) -> None:
    """Fill `buffer` from the file object `f` in chunks; the member must hold exactly that."""
    filled = limits.read_into(f, buffer)
    if filled < buffer.nbytes:
        raise PthError(f"{source}: storage {key!r} is truncated ({filled} of {buffer.nbytes} "
                       "bytes).")
    if f.read(1):
        raise PthError(f"{source}: storage {key!r} holds more bytes than its elements need.")


# --------------------------------------------------------------------------------------------
# the zip format (torch >= 1.6)
# --------------------------------------------------------------------------------------------


def load_zip(path: str) -> Any:
    budget = Budget(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PthError(f"{path} is a zip file but not a PyTorch checkpoint (no single "
                           "<name>/data.pkl in it).")
        prefix = pickles[0][: -len("data.pkl")]
        order = "<"
        if f"{prefix}byteorder" in names:
            limits.check_compression(archive.getinfo(f"{prefix}byteorder"), path)
            with archive.open(f"{prefix}byteorder") as marker:  # "little" or "big"
                order = ">" if marker.read(16).strip() == b"big" else "<"
        cache: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            storage_type, key, numel = pid[1], str(pid[2]), _check_numel(pid[4], path)
            if key not in cache:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise PthError(f"{path}: storage {key!r} is missing from the archive.")
                dtype = storage_type.dtype.newbyteorder(order)
                declared = archive.getinfo(member).file_size
                if declared != numel * dtype.itemsize:
                    raise PthError(f"{path}: storage {key!r} holds {declared} bytes where its "
                                   f"{numel} elements need {numel * dtype.itemsize}.")
                budget.take(declared, key)
                data = np.empty(numel, dtype)
                with archive.open(member) as f:
                    _read_exactly(f, data, path, key)
                cache[key] = _Storage(dtype, numel, budget, data)
            return cache[key]

        info = archive.getinfo(pickles[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise PthError(f"{path}: its pickle {pickles[0]} declares {info.file_size} bytes, more "
                           f"than the {MAX_PICKLE_BYTES // 2**20} MiB a SIB checkpoint's could "
                           "need; the file is not one of the reference checkpoints.")
        data = limits.read_member(archive, info, MAX_PICKLE_BYTES, f"{path}:{pickles[0]}")
        return _RestrictedUnpickler(io.BytesIO(data), path, load_storage, len(data)).load()


# --------------------------------------------------------------------------------------------
# the legacy format (torch < 1.6, or _use_new_zipfile_serialization=False)
# --------------------------------------------------------------------------------------------


def _resolve_pending(obj: Any) -> Any:
    if isinstance(obj, _PendingTensor):
        return _materialize(obj.storage, obj.offset, obj.size, obj.stride)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve_pending(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _resolve_pending(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve_pending(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve_pending(v) for v in obj)
    return obj


def load_legacy(path: str) -> Any:
    budget = Budget(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        def unpickler(load_storage: Callable[[tuple], _Storage]) -> _RestrictedUnpickler:
            # Reads stop at the end of the file, whatever length the pickle declares.
            return _RestrictedUnpickler(ClampedReader(f, size - f.tell()), path, load_storage,
                                        size)

        def header():
            return unpickler(_no_storage(path)).load()

        try:
            magic = header()
        except UNPICKLING_ERRORS as error:
            if isinstance(error, DataError):  # refused, not unreadable
                raise
            raise PthError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a "
                           "legacy torch.save stream).") from None
        if magic != _LEGACY_MAGIC:
            raise PthError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a "
                           "legacy torch.save stream).")
        if header() != _LEGACY_PROTOCOL:
            raise PthError(f"{path}: unsupported legacy torch.save protocol.")
        sys_info = header()
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        order = "<" if little else ">"
        roots: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            storage_type, root_key = pid[1], str(pid[2])
            numel = _check_numel(pid[4], path)
            view = pid[5] if len(pid) > 5 else None
            if root_key not in roots:
                dtype = storage_type.dtype.newbyteorder(order)
                budget.take(numel * dtype.itemsize, root_key)
                roots[root_key] = _Storage(dtype, numel, budget)
            root = roots[root_key]
            if view is None:
                return root
            _view_key, offset, size = view
            return _ViewStorage(root, _check_numel(offset, path), _check_numel(size, path))

        result = unpickler(load_storage).load()
        keys = header()
        if not isinstance(keys, list):
            raise PthError(f"{path}: malformed legacy checkpoint (no storage key list).")
        for key in keys:
            storage = roots.get(str(key))
            if storage is None:
                raise PthError(f"{path}: storage {key!r} is listed but never used.")
            (count,) = struct.unpack(order + "q", f.read(8))
            if count != storage.numel:
                raise PthError(f"{path}: storage {key!r} is truncated or has the wrong size.")
            data = np.empty(count, storage.dtype)
            view = memoryview(data.view(np.uint8))
            if f.readinto(view) != len(view):
                raise PthError(f"{path}: storage {key!r} is truncated or has the wrong size.")
            storage.data = data
    return _resolve_pending(result)


class _ViewStorage(_Storage):
    """A legacy storage view: elements [offset, offset + numel) of a root storage."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        super().__init__(root.dtype, numel, root.budget)
        self.root, self.offset = root, offset

    @property
    def data(self) -> np.ndarray | None:
        if self.root.data is None:
            return None
        return self.root.data[self.offset:self.offset + self.numel]

    @data.setter
    def data(self, value) -> None:
        del value


def _no_storage(path: str) -> Callable[[tuple], _Storage]:
    def refuse(pid: tuple) -> _Storage:
        raise PthError(f"{path}: malformed legacy checkpoint (a storage in its header).")

    return refuse
