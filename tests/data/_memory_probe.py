"""Hostile files that declare or expand to far more memory than they hold, and the probe that
loads each one through the library and measures its peak memory.

`write_hostile_files(folder)` writes every case's file(s) into `folder` (none takes more than
a few MB on disk: bombs are deflate streams of zeros, big files are sparse). Run as a script,
`python -m tests.data._memory_probe FOLDER [HEADROOM_BYTES]` loads each case in a forked child
and prints one JSON line per case: the outcome (the exception's type and message, or what
the load returned) and the growth of the child's peak resident memory (`ru_maxrss`) over its
size at the fork. Each child may grow its address space by HEADROOM_BYTES at most (default
2 GiB), so a reader that does allocate what a file declares ends in MemoryError rather than
exhausting the machine; a child that crashes is reported with its signal.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import struct
import sys
import tarfile
import traceback
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

BOMB_BYTES = 384 * 2**20  # what each compressed bomb expands to
_MIB = 2**20


# --- deflate streams of zeros, zips and gzips around them ----------------------------------


def _flushed(data: bytes) -> bytes:
    # A fresh compressor, fully flushed: byte-aligned, no reference to earlier data, so such
    # pieces concatenate into one valid raw deflate stream.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def _deflated(prefix: bytes, zeros: int) -> bytes:
    """A raw deflate stream of `prefix` then `zeros` zero bytes, about zeros / 1000 long."""
    whole, rest = divmod(zeros, _MIB)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the empty final block
    return _flushed(prefix) + _flushed(bytes(_MIB)) * whole + _flushed(bytes(rest)) + final


def _zip_one(path: Path, name: str, stream: bytes, size: int, method: int = 8) -> None:
    """A zip holding one member `name`, compressed with `method` (8: deflate, 12: bzip2), that
    declares `size` bytes. Its CRC is not computed (a reader must refuse it before reading;
    one that reads it all only notices the CRC after allocating)."""
    encoded = name.encode()
    fields = (method, 0, 0x21, 0, len(stream), size, len(encoded))  # 1980-01-01, crc 0
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, *fields, 0) + encoded
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, *fields, 0, 0, 0, 0,
                          0, 0) + encoded
    offset = len(local) + len(stream)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), offset, 0)
    path.write_bytes(local + stream + central + end)


# One bzip2 block of 45,899,235 zero bytes as `bz2.compress(..., 9)` writes it: 32 bytes, so
# blocks repeat byte-aligned. zipfile decompresses a bzip2 member's input whole, however much
# more than its declared size that makes.
_BZIP2_ZEROS_BLOCK = bytes.fromhex(
    "3141592653590e09e2df015f8e4000c0000008200030804d4642a025a90a8097")
_BZIP2_BLOCK_CRC = 0x0E09E2DF


def _bzip2_zeros(blocks: int) -> bytes:
    """A bzip2 stream of `blocks` x 45,899,235 zero bytes, 36 + 32 * blocks bytes long."""
    crc = 0
    for _ in range(blocks):  # the stream CRC combines the block CRCs
        crc = (((crc << 1) | (crc >> 31)) & 0xFFFFFFFF) ^ _BZIP2_BLOCK_CRC
    return (b"BZh9" + _BZIP2_ZEROS_BLOCK * blocks + bytes.fromhex("177245385090")
            + struct.pack(">I", crc))


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue()


def _npz_bomb(path: Path, member: str, dtype: str, shape: tuple[int, ...]) -> None:
    header = _npy_header(dtype, shape)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    _zip_one(path, member, _deflated(header, nbytes), len(header) + nbytes)


def _tar_gz_bomb(path: Path, member: str, size: int) -> None:
    info = tarfile.TarInfo(member)
    info.size = size
    stream = _deflated(info.tobuf(tarfile.USTAR_FORMAT), size + 2 * tarfile.RECORDSIZE)
    total = 512 + size + 2 * tarfile.RECORDSIZE
    header = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\x03"  # gzip, no name, unix
    path.write_bytes(header + stream + struct.pack("<II", 0, total % 2**32))


# --- pickles ---------------------------------------------------------------------------------


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)  # BININT


def _text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s.encode()  # BINUNICODE


_RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"


def _dtype(spec: str) -> bytes:
    return b"cnumpy\ndtype\n" + _text(spec) + b"\x89\x88\x87R"  # dtype(spec, False, True)


def _rebuilt_views(numel: int, copies: int) -> bytes:
    """A .pth pickle: one FloatStorage of `numel` elements, viewed whole `copies` times."""
    storage = (b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu")
               + _int(numel) + b"tQq\x02")  # BINPERSID, memo 2
    tensor = (b"h\x01(h\x02K\x00" + _int(numel) + b"\x85K\x01\x85\x89h\x03)Rt" + b"R")
    return (b"\x80\x02]q\x00ctorch._utils\n_rebuild_tensor_v2\nq\x010"
            + b"ccollections\nOrderedDict\nq\x030" + storage + b"0"
            + b"(" + tensor * copies + b"e.")


PICKLES = {
    # The 54-byte pickle of the report: _codecs.encode(bytes(2**30), "hex").
    "pickle_bytes_hex": b"\x80\x02c_codecs\nencode\ncbuiltins\nbytes\n" + _int(2**30)
                        + b"\x85R" + _text("hex") + b"\x86R.",
    # None, stored at memo index 2**28: the C unpickler sizes its memo table by the index.
    "pickle_memo_index": b"\x80\x02Nr" + struct.pack("<I", 2**28) + b".",
    # numpy's _reconstruct asked for an object array of 2**27 elements (1 GiB of pointers).
    "pickle_reconstruct_shape": b"\x80\x02" + _RECONSTRUCT + _int(2**27) + b"\x85" + _dtype("O8")
                                + b"\x87R.",
    # An empty array whose state declares 2**27 objects and holds none.
    "pickle_setstate_shape": b"\x80\x02" + _RECONSTRUCT + b"K\x00\x85C\x01b\x87R(K\x01"
                             + _int(2**27) + b"\x85" + _dtype("O8") + b"\x89]tb.",
    # A numpy void scalar of 1 GiB, from no data.
    "pickle_void_scalar": b"\x80\x02cnumpy.core.multiarray\nscalar\n" + _dtype("V1073741824")
                          + b"\x85R.",
    # list() of one memoized 1 MiB bytes, 100 times over.
    "pickle_list_copies": b"\x80\x03cbuiltins\nlist\nq\x000B" + struct.pack("<I", _MIB)
                          + bytes(_MIB) + b"q\x010](" + b"h\x00h\x01\x85R" * 100 + b"e.",
}


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def write_hostile_files(folder: Path) -> None:
    """Every case's file(s), in `folder`."""
    for name, data in PICKLES.items():
        (folder / f"{name}.pkl").write_bytes(data)
    _zip_pth(folder / "pth_view_copies.pth", _rebuilt_views(2 * _MIB, 100), 2 * _MIB * 4)
    (folder / "pth_memo_index.pth").write_bytes(PICKLES["pickle_memo_index"])
    _npz_bomb(folder / "features_bomb.npz", "train_features.npy", "<f4",
              (BOMB_BYTES // 256, 64))
    with zipfile.ZipFile(folder / "features_header.npz", "w") as archive:
        archive.writestr("train_features.npy", _npy_header("<f4", (10**12, 64)))
    (folder / "tiered").mkdir()
    _npz_bomb(folder / "tiered" / "train_images.npz", "images.npy", "|u1",
              (BOMB_BYTES // (84 * 84 * 3), 84, 84, 3))
    png_member = "images_background/Alphabet/character01/0101_01.png"
    _zip_one(folder / "images_bomb.zip", png_member, _deflated(b"", BOMB_BYTES),
             BOMB_BYTES)
    _zip_one(folder / "images_bzip2.zip", png_member, _bzip2_zeros(9), 1000, method=12)
    _tar_gz_bomb(folder / "cifar-100-python.tar.gz", "cifar-100-python/train", BOMB_BYTES)
    with open(folder / "sparse.png", "wb") as sparse:
        sparse.truncate(2 * 2**30)
    Image.new("1", (9000, 9000)).save(folder / "large.png")
    (folder / "bomb_header.png").write_bytes(_png_header(30000, 30000))


def _zip_pth(path: Path, pickle_bytes: bytes, storage_bytes: int) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/data/0", bytes(storage_bytes))


# --- the loads -------------------------------------------------------------------------------


def _loads(folder: Path) -> dict[str, Callable[[], object]]:
    from metaunlab.data.cifar100 import load_cifar100_archive
    from metaunlab.data.decode import ImageFormat, load_image_files
    from metaunlab.data.features import load_feature_file
    from metaunlab.data.mini_imagenet import load_pickle_cache
    from metaunlab.data.omniglot import load_omniglot
    from metaunlab.data.tiered_imagenet import load_tiered_split
    from metaunlab.interop.pth import load_pth

    loads = {name: (lambda name=name: load_pickle_cache(folder / f"{name}.pkl"))
             for name in PICKLES}
    return loads | {
        "pth_view_copies": lambda: load_pth(folder / "pth_view_copies.pth", use_torch=False),
        "pth_memo_index": lambda: load_pth(folder / "pth_memo_index.pth", use_torch=False),
        "features_bomb": lambda: load_feature_file(folder / "features_bomb.npz"),
        "features_header": lambda: load_feature_file(folder / "features_header.npz"),
        "tiered_bomb": lambda: load_tiered_split(folder / "tiered", "train"),
        "omniglot_bomb": lambda: load_omniglot(folder, ["images_bomb.zip"]),
        "omniglot_bzip2": lambda: load_omniglot(folder, ["images_bzip2.zip"]),
        "cifar_bomb": lambda: load_cifar100_archive(folder / "cifar-100-python.tar.gz",
                                                    verify_checksum=False),
        "image_sparse": lambda: load_image_files([folder / "sparse.png"], ImageFormat()),
        "image_pixels": lambda: load_image_files([folder / "large.png"], ImageFormat()),
        "image_pil_bomb": lambda: load_image_files([folder / "bomb_header.png"], ImageFormat()),
    }


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _in_child(load: Callable[[], object], headroom: int, report) -> None:
    from metaunlab.data.errors import DataError

    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB: the RSS at the fork
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + headroom, hard))
    data_error = False
    try:
        outcome = f"returned {type(load()).__name__}"
    except BaseException as error:  # the point is to see what a reader raises
        data_error = isinstance(error, DataError)
        outcome = f"{type(error).__name__}: {error}"
        if not data_error:  # a traceback: show where
            outcome += "\n" + traceback.format_exc(limit=-3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.write(json.dumps({"outcome": outcome, "data_error": data_error,
                             "growth_mib": (peak - start) / 1024}))


def main(folder: Path, headroom: int) -> None:
    for name, load in _loads(folder).items():
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            with os.fdopen(write_end, "w") as report:
                _in_child(load, headroom, report)
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as report:
            text = report.read()
        _, status = os.waitpid(pid, 0)
        result = json.loads(text) if text else {"outcome": "crashed", "data_error": False,
                                                "growth_mib": None}
        if os.WIFSIGNALED(status):
            result["outcome"] = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        print(json.dumps({"case": name, **result}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2 * 2**30)
