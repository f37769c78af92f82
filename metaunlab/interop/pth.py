"""Safe loading of PyTorch ``.pth`` checkpoints into numpy arrays, with or without torch.

A ``.pth`` file is a pickle, and unpickling can run arbitrary code. Both readers here only
rebuild tensors and plain containers:

* with torch installed, ``torch.load(path, map_location="cpu", weights_only=True)``;
* without it (or with ``use_torch=False``), a restricted reader of the two formats
  ``torch.save`` writes: the zip archive of torch >= 1.6 (``<name>/data.pkl`` plus one
  ``<name>/data/<key>`` file per storage) and the older "legacy" stream (magic number,
  protocol, system info, the pickle, the storage keys, then the raw storages).

The restricted unpickler's ``find_class`` resolves only ``torch._utils._rebuild_tensor_v2``,
``torch._utils._rebuild_parameter``, ``collections.OrderedDict`` and the typed storage
classes (``torch.FloatStorage`` ...), which it replaces by torch-free stand-ins; any other
global (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError` before
anything is called. Tensor views are bounds-checked against their storage.

Tensors come back as numpy arrays (copies, native byte order, the tensor's dtype; bfloat16
as ``ml_dtypes.bfloat16``); containers keep their types (dict, ``OrderedDict``, list, ...).
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
import zlib
from typing import Any

from metaunlab.data import limits
from metaunlab.data.bounded_unpickler import UNPICKLING_ERRORS
from metaunlab.data.errors import DataError
from metaunlab.interop.pth_formats import (
    MAX_STORAGE_BYTES,
    MAX_TOTAL_BYTES,
    READ_CHUNK,
    Budget,
    PthError,
    UnsafePickleError,
    bfloat16,
    load_legacy,
    load_zip,
)

__all__ = ["MAX_STORAGE_BYTES", "MAX_TOTAL_BYTES", "PthError", "UnsafePickleError", "load_pth"]


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------


def _torch_to_numpy(obj: Any, torch) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise PthError(f"a tensor of size {tuple(t.shape)} has more elements than its "
                           "storage; such views are not saved by torch.save.")
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(bfloat16()).copy()
        return t.numpy().copy()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _torch_to_numpy(v, torch)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _torch_to_numpy(v, torch) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_torch_to_numpy(v, torch) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_torch_to_numpy(v, torch) for v in obj)
    return obj


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def load_pth(path: str | os.PathLike, *, use_torch: bool | None = None) -> Any:
    """Load a ``.pth`` file; tensors become numpy arrays.

    ``use_torch``: None (default) uses ``torch.load(..., weights_only=True)`` when torch is
    importable and the torch-free reader otherwise; True requires torch; False always uses
    the torch-free reader. Raises ``PthError`` (a ``DataError``) for a missing file,
    :class:`UnsafePickleError` for a pickle that asks for anything but tensors and plain
    containers, and :class:`PthError` for anything else unreadable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PthError(f"{path} does not exist (or is not a file); check the --checkpoint path.")
    _check_sizes(path)  # before either reader allocates anything
    torch = _import_torch() if use_torch is not False else None
    if use_torch and torch is None:
        raise PthError("use_torch=True but torch is not installed; use use_torch=False.")
    if torch is not None:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UnsafePickleError(f"{path}: torch.load(weights_only=True) refused it: "
                                    f"{first}") from error
        except RuntimeError as error:
            raise PthError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
        return _torch_to_numpy(obj, torch)
    try:
        return load_zip(path) if zipfile.is_zipfile(path) else load_legacy(path)
    except DataError:  # PthError, or a file past a memory bound
        raise
    except (*UNPICKLING_ERRORS, zipfile.BadZipFile, zlib.error, NotImplementedError,
            OSError) as error:
        raise PthError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
                       f"{str(error)[:200]}); re-download it.") from None


def _check_sizes(path: str) -> None:
    """Refuse a file whose tensors could not fit the bounds (MAX_TOTAL_BYTES): a legacy file
    holds its storages, so its size bounds them; a zip declares each member's size."""
    if not zipfile.is_zipfile(path):
        if os.path.getsize(path) > MAX_TOTAL_BYTES + READ_CHUNK:
            raise PthError(f"{path} is {os.path.getsize(path)} bytes, more than a SIB "
                           "checkpoint holds; it is not one of the reference checkpoints.")
        return
    budget = Budget(path)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                limits.check_compression(info, f"{path}:{info.filename}")
                if "/data/" in info.filename:
                    budget.take(info.file_size, info.filename.rsplit("/", 1)[-1])
                elif info.file_size > MAX_STORAGE_BYTES:
                    raise PthError(f"{path}: member {info.filename!r} declares "
                                   f"{info.file_size} bytes; it is not a reference checkpoint.")
    except (zipfile.BadZipFile, zlib.error, OSError) as error:
        raise PthError(f"{path} is a corrupt zip archive ({error}); re-download it.") from None
