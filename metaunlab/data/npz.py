"""Reading the arrays of a ``.npz`` file within the memory budget (``limits``).

``np.load(path)[name]`` allocates the shape a member's header declares and decompresses the
member whole, before anything can be checked: a 1.5 MB file can become gigabytes, and a header
declaring 10**12 rows is a MemoryError. :func:`read_npz` reads every wanted member's ``.npy``
header first and checks it against the member's declared size in the zip and the file's
allowance, then fills each array in chunks, stopping at the declared size.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from metaunlab.data import limits
from metaunlab.data.errors import DataError

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


@dataclasses.dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    header_bytes: int

    @property
    def count(self) -> int:
        return limits.element_count(self.shape)


def read_npz(path: str | os.PathLike, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path``, as ``np.load(path, allow_pickle=False)`` gives.

    Args:
      path: the ``.npz`` file (written by ``numpy.savez`` or ``numpy.savez_compressed``).
      names: the arrays to read (those present; missing names are left to the caller);
        None reads every ``.npy`` member.

    Returns:
      name -> array, names without the ``.npy`` suffix.

    Raises:
      DataError: one sentence when a member declares more than the allowance, or a shape
        its zip entry does not hold, or is not a plain (non-object) array.
      zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError: an unreadable file.
    """
    path = os.fspath(path)
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename[:-len(".npy")]: info for info in archive.infolist()
                 if info.filename.endswith(".npy")}
        wanted = [name for name in (infos if names is None else names) if name in infos]
        members = {name: _header(archive, infos[name], f"{path}:{infos[name].filename}")
                   for name in wanted}
        declared = sum(m.count * m.dtype.itemsize for m in members.values())
        limit = limits.allowance(os.stat(path).st_size)
        if declared > limit:
            raise limits.too_big(path, f"declares {limits.size_text(declared)} of arrays", limit)
        return {name: _read(archive, member) for name, member in members.items()}


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> _Member:
    limits.check_compression(info, source)
    with archive.open(info) as file:
        version = np.lib.format.read_magic(file)
        if version not in _HEADER_READERS:
            raise DataError(f"{source} is a .npy of format version {version}, which is read "
                            "only for structured arrays; save plain arrays with numpy.savez.")
        shape, fortran_order, dtype = _HEADER_READERS[version](file)
        header_bytes = file.tell()
    if dtype.hasobject:
        raise DataError(f"{source} holds Python objects (pickled data), not numbers; save "
                        "numeric arrays with numpy.savez.")
    member = _Member(info, shape, fortran_order, dtype, header_bytes)
    nbytes = member.count * dtype.itemsize
    if header_bytes + nbytes != info.file_size:
        raise DataError(f"{source} declares a {dtype} array of shape {shape} "
                        f"({limits.size_text(nbytes)}) but its zip entry holds "
                        f"{limits.size_text(max(info.file_size - header_bytes, 0))} of data; "
                        "the file is damaged, so write it again.")
    return member


def _read(archive: zipfile.ZipFile, member: _Member) -> np.ndarray:
    array = np.empty(member.count, member.dtype)
    with archive.open(member.info) as file:
        file.read(member.header_bytes)
        filled = limits.read_into(file, array)
    if filled < array.nbytes:
        raise EOFError(f"{member.info.filename} ends after {filled} of {array.nbytes} bytes "
                       "of data")
    return array.reshape(member.shape, order="F" if member.fortran_order else "C")
