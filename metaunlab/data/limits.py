"""How much memory one file a user hands us may make the library allocate.

Every reader of user files (pickles, ``.npz`` and ``.npy`` arrays, zip and tar archives,
images, ``.pth`` checkpoints) checks the sizes a file declares against this policy before it
allocates, and reads in bounded chunks, so a small hostile file is refused with one sentence
instead of taking gigabytes:

* **The budget** (:func:`memory_budget`) caps what any one file may make us allocate. The real
  data sets reach several GB (tieredImageNet's train images are 9.5 GB), so a fixed cap would
  either refuse them or be no protection; the budget is the memory available right now
  (``psutil.virtual_memory().available`` when psutil is installed, else half the physical
  memory), which is what decides whether a load can succeed at all.
* **The expansion rule** (:func:`allowance`): a compressed or pickled file may expand to at
  most ``EXPANSION`` times its size on disk, and any file to ``FLOOR`` bytes. Real data
  compresses a few times at most (images and float features barely); a zip bomb or a
  pickle that multiplies what it holds expands hundreds or thousands of times.
* **Images** have their own caps (:func:`max_image_file_bytes`, :func:`max_image_pixels`):
  few-shot images are small, so a file of hundreds of MB or a declared canvas of over 67
  megapixels is a decompression bomb or not an image for this library.

``METAUNLAB_MEMORY_BUDGET=<bytes>`` (a number, optionally with a K, M, G or T suffix) replaces
all of these with one number the user vouches for: a file may then declare up to that many
bytes, however well it compresses.
"""

from __future__ import annotations

import math
import operator
import os
import re
import zipfile
from typing import Any

from metaunlab.data.errors import DataError

BUDGET_ENV = "METAUNLAB_MEMORY_BUDGET"
EXPANSION = 32  # bytes in memory per byte on disk that a compressed or pickled file may reach
FLOOR = 64 * 2**20  # any file may take this much, however small it is
IMAGE_FILE_BYTES = 256 * 2**20  # an uncompressed RGBA image of IMAGE_PIXELS: 8192 x 8192 x 4
IMAGE_PIXELS = 2**26  # 8192 x 8192
_BYTES_PER_DECODED_PIXEL = 8  # decoded pixels, their converted copy and the resized image
_FALLBACK_BUDGET = 8 * 2**30  # when neither psutil nor sysconf can say
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def override() -> int | None:
    """The budget the user set in ``METAUNLAB_MEMORY_BUDGET``, or None."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", text, re.IGNORECASE)
    if not match:
        raise DataError(f"{BUDGET_ENV}={text!r} is not a size; set it to a number of bytes "
                        "such as 16G.")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def memory_budget() -> int:
    """The most memory, in bytes, that any one file may make the library allocate.

    Returns:
      ``METAUNLAB_MEMORY_BUDGET`` when set, else the memory available now (psutil), else half
      the physical memory, else 8 GiB.
    """
    chosen = override()
    if chosen is not None:
        return chosen
    try:
        import psutil  # optional: the best measure of what a load may still take
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_BUDGET


def allowance(file_size: int) -> int:
    """Bytes a file of ``file_size`` bytes on disk may declare or expand to.

    Args:
      file_size: the size of the file (or archive) on disk.

    Returns:
      ``METAUNLAB_MEMORY_BUDGET`` when set, else the smaller of the budget and
      ``max(FLOOR, EXPANSION * file_size)``.
    """
    chosen = override()
    if chosen is not None:
        return chosen
    return min(memory_budget(), max(FLOOR, EXPANSION * file_size))


def max_image_file_bytes() -> int:
    """The largest image file we read (``METAUNLAB_MEMORY_BUDGET`` when set)."""
    chosen = override()
    return IMAGE_FILE_BYTES if chosen is None else chosen


def max_image_pixels() -> int:
    """The most pixels an image may declare (``METAUNLAB_MEMORY_BUDGET`` / 8 when set)."""
    chosen = override()
    return IMAGE_PIXELS if chosen is None else chosen // _BYTES_PER_DECODED_PIXEL


def element_count(shape: Any) -> int:
    """The number of elements of an array ``shape`` (an int or a sequence of ints).

    Raises:
      TypeError / ValueError: for anything numpy would not take as a shape.
    """
    dims = (shape,) if hasattr(shape, "__index__") else tuple(shape)
    dims = tuple(operator.index(n) for n in dims)
    if any(n < 0 for n in dims):
        raise ValueError(f"negative dimension in shape {dims}")
    return math.prod(dims)


def size_text(nbytes: int) -> str:
    """``nbytes`` for a message: exact below 1 KiB, else in KiB, MiB, GiB or TiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def too_big(source: str, what: str, limit: int) -> DataError:
    """The one-sentence refusal of ``source``, which ``what`` (e.g. "declares 2.0 GiB") more
    than ``limit`` bytes allow."""
    return DataError(f"{source} {what}, more than the {size_text(limit)} this library allows "
                     "for it (a corrupt or hostile file, or a decompression bomb); if you trust "
                     f"the file, set {BUDGET_ENV} to the bytes it may take, e.g. "
                     f"{BUDGET_ENV}=64G.")


class Budget:
    """Bytes one file may still make us allocate; every allocation it asks for is charged.

    Args:
      source: names the file in errors.
      limit: the bytes it may take in all (usually ``allowance(file size)``).
    """

    def __init__(self, source: str, limit: int):
        self.source, self.limit, self.used = source, limit, 0

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` more, or raise DataError naming ``what`` asked for them."""
        if nbytes < 0 or self.used + nbytes > self.limit:
            after = f" after {size_text(self.used)}" if self.used else ""
            raise too_big(self.source, f"asks for {size_text(max(nbytes, 0))} ({what}){after}",
                          self.limit)
        self.used += nbytes


def check_file_size(path: str | os.PathLike, limit: int, what: str = "file") -> int:
    """The size of ``path``, after checking it is at most ``limit`` bytes.

    Returns:
      the size in bytes (``os.stat``; a sparse file counts its apparent size).
    """
    try:
        size = os.stat(path).st_size
    except OSError as error:
        raise DataError(f"cannot read {os.fspath(path)} ({error.strerror}); check the "
                        "path.") from error
    if size > limit:
        raise too_big(os.fspath(path), f"is a {size_text(size)} {what}", limit)
    return size


def read_file(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refused with one sentence if it is larger than ``limit``.

    The size is checked before anything is read, and exactly that many bytes are read: a file
    that grows meanwhile is refused rather than read on.
    """
    size = check_file_size(path, limit, what)
    try:
        with open(path, "rb") as file:
            data = file.read(size)
            grew = bool(file.read(1))
    except OSError as error:
        raise DataError(f"cannot read {os.fspath(path)} ({error.strerror}); check the "
                        "path.") from error
    if grew:
        raise DataError(f"{os.fspath(path)} grew while it was being read; read it again once "
                        "whatever writes it has finished.")
    return data


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int,
                source: str) -> bytes:
    """The bytes of one zip member, after checking its declared size against ``limit``.

    ``zipfile`` decompresses in chunks and stops at the declared size, so a member that
    holds more than it declares cannot take more than ``limit`` either; only stored and
    deflated members are read (bzip2 and LZMA members decompress whole blocks at once).
    """
    check_member(info, limit, source)
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise too_big(source, f"holds more than the {size_text(info.file_size)} it declares",
                      limit)
    return data


def check_member(info: zipfile.ZipInfo, limit: int, source: str) -> None:
    """Refuse a zip member that declares more than ``limit`` bytes or is compressed with
    anything but deflate (:func:`check_compression`)."""
    check_compression(info, source)
    if info.file_size > limit:
        raise too_big(source, f"declares {size_text(info.file_size)}", limit)


def check_compression(info: zipfile.ZipInfo, source: str) -> None:
    """Refuse a zip member compressed with anything but deflate, what numpy, torch and every
    zip tool write: zipfile decompresses a bzip2 or LZMA block whole, however large."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(f"{source} is compressed with method {info.compress_type}, not "
                        "deflate; re-create the archive with a standard zip tool (or "
                        "numpy.savez_compressed).")


def check_archive(path: str | os.PathLike, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive whose members declare more in all than its size allows
    (:func:`allowance`): the mark of a zip bomb."""
    limit = allowance(os.stat(path).st_size)
    total = sum(info.file_size for info in infos)
    if total > limit:
        raise too_big(os.fspath(path), f"declares {size_text(total)} of members", limit)


READ_CHUNK = 4 * 2**20  # bytes read (or decompressed) at a time


def read_into(file, buffer: Any) -> int:
    """Fill the bytes of `buffer` (a NumPy array) from the binary file object `file`,
    `READ_CHUNK` at a time, so no copy of the whole is ever made.

    Args:
      file: an open binary file (a zip member, a plain file).
      buffer: the array to fill.

    Returns:
      How many bytes were filled: fewer than `buffer.nbytes` when the file ended first.
    """
    view = memoryview(buffer.view("uint8")).cast("B")
    filled = 0
    while filled < len(view):
        count = file.readinto(view[filled:filled + READ_CHUNK])
        if not count:
            break
        filled += count
    return filled

