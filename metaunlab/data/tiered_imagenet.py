"""tieredImageNet (Ren et al. 2018: 351 / 97 / 160 classes, 84x84) in its widely shared
numpy form::

    <root>/train_images.npz   key "images": uint8 (N, 84, 84, 3)
    <root>/train_labels.pkl   {"label_specific": (N,) ints, "label_general": (N,) ints,
                               "label_specific_str": [class names], "label_general_str": [..]}
    ... and the same for val and test.

Classes are the fine ("specific") labels, named by ``label_specific_str``. The label
files were written by Python 2, so they are read with ``encoding="latin1"`` through the
data-only unpickler (``safe_pickle.py``).

The ``.npz`` files are what the tieredImageNet tools' ``decompress`` step makes from the
released ``*_images_png.pkl``: ``np.savez`` of images decoded with OpenCV, so the channels
are in OpenCV's B, G, R order. They are kept as stored, as public loaders of these files
do; a model trained here on them must also be evaluated on B, G, R images.

The train images take 12.5 GB as an array. When an ``.npz`` member is stored
uncompressed (``np.savez``) it is memory-mapped straight out of the zip file, so loading
costs no memory until images are used. A compressed member
(``np.savez_compressed``) cannot be mapped and is read into memory; to avoid that, unpack
it once yourself (``np.save("train_images.npy", np.load("train_images.npz")["images"])``,
then put ``train_images.npy`` beside the ``.npz``: it is used, memory-mapped, in its
place). Nothing is ever written into the data folder by this module.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.decode import resize_images
from metaunlab.data.errors import DataError, looks_like_html
from metaunlab.data.folders import REFERENCE_SPLITS
from metaunlab.data.npz import read_npz
from metaunlab.data.safe_pickle import load_data_pickle

IMAGES_NAME = "{split}_images.npz"
UNPACKED_NAME = "{split}_images.npy"
LABELS_NAME = "{split}_labels.pkl"
_MEMBER = "images.npy"
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # the 30-byte zip local file header
_LOCAL_MAGIC = b"PK\x03\x04"


def load_tiered_split(
    root: str | os.PathLike, split: str, image_size: int | None = None
) -> ImageDataset:
    """One split; images memory-mapped where possible (see module doc).

    With ``image_size`` set and different from the stored size, images are resized into
    memory (meant for quick runs on small images).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"tieredImageNet folder {root} does not exist; point --data_dir (or "
                        "--config.data.root) at the folder holding train_images.npz and "
                        "train_labels.pkl.")
    images = _load_images(root, split)
    labels, names = _load_labels(root / LABELS_NAME.format(split=split))
    if len(labels) != len(images):
        raise DataError(f"{root / LABELS_NAME.format(split=split)} has {len(labels)} labels but "
                        f"{root / IMAGES_NAME.format(split=split)} has {len(images)} images; "
                        "the two files come from different copies, so download both again.")
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        images = resize_images(images, image_size)
    return ImageDataset(images=images, labels=labels, class_names=names)


def load_tiered_imagenet(
    root: str | os.PathLike, image_size: int | None = None
) -> dict[str, ImageDataset]:
    """``{"train", "val", "test"} -> ImageDataset`` (see ``load_tiered_split``)."""
    root = Path(root)
    for split in REFERENCE_SPLITS:  # name every missing file before reading 12 GB
        _images_path(root, split)
        labels = root / LABELS_NAME.format(split=split)
        if not labels.is_file():
            raise DataError(f"{labels} is missing next to {_images_path(root, split).name}; "
                            "every split needs both its images and its labels file.")
    return {split: load_tiered_split(root, split, image_size) for split in REFERENCE_SPLITS}


def mmap_npz_member(path: str | os.PathLike, member: str = _MEMBER) -> np.ndarray | None:
    """``member`` of the ``.npz`` at ``path`` as a read-only memory map, or None when it is
    compressed (then only ``np.load`` can read it)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as file:
        # The data starts after the local header, whose name and extra fields may differ
        # in length from the central directory's copy, so read them from the header itself.
        file.seek(info.header_offset)
        header = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
        if header[0] != _LOCAL_MAGIC:
            raise DataError(f"{path} has a damaged zip header for {member}; download it again.")
        name_length, extra_length = header[-2], header[-1]
        file.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
        offset = file.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran_order else "C")


def _images_path(root: Path, split: str) -> Path:
    unpacked, packed = root / UNPACKED_NAME.format(split=split), root / IMAGES_NAME.format(
        split=split)
    if unpacked.is_file():
        return unpacked
    if packed.is_file():
        return packed
    if (root / f"{split}_images_png.pkl").is_file():
        raise DataError(f"{root} holds {split}_images_png.pkl (the original PNG-encoded release) "
                        f"but no {packed.name}; convert it to {packed.name} (key 'images', "
                        "uint8 N x 84 x 84 x 3) or download the .npz form.")
    found = next((p for p in sorted(root.glob(f"*/{packed.name}"))), None)
    if found is not None:
        raise DataError(f"{packed} is missing but {found} exists; point --data_dir at "
                        f"{found.parent}.")
    raise DataError(f"{packed} is missing; put the tieredImageNet {{train,val,test}}_images.npz "
                    "and _labels.pkl files in one folder (see README 'Data').")


def _load_images(root: Path, split: str) -> np.ndarray:
    path = _images_path(root, split)
    with open(path, "rb") as file:
        head = file.read(512)
    if looks_like_html(head):
        raise DataError(f"{path} is an HTML page, not numpy data (a download or quota page was "
                        "saved in its place); download the file again.")
    try:
        if path.suffix == ".npy":
            images = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with zipfile.ZipFile(path) as archive:
                if _MEMBER not in archive.namelist():
                    raise DataError(f"{path} holds {sorted(archive.namelist())}, not "
                                    f"{_MEMBER}; it is not a tieredImageNet images file.")
            images = mmap_npz_member(path)
            if images is None:  # compressed: decompressed within the memory budget
                images = read_npz(path, ["images"])["images"]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DataError(f"{path} is not a readable numpy file ({error}); it is truncated or "
                        "corrupt, so download it again.") from error
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DataError(f"{path} holds {images.dtype} {images.shape}, not uint8 (N, H, W, 3) "
                        "images; download it again.")
    return images


def _load_labels(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    if not path.is_file():
        raise DataError(f"{path} is missing; every split needs its labels file next to its "
                        "images file.")
    raw = load_data_pickle(path, encoding="latin1")
    labels_dict = {_text(k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    if not {"label_specific", "label_specific_str"} <= set(labels_dict):
        raise DataError(f"{path} is not a tieredImageNet labels file (it lacks "
                        "label_specific / label_specific_str); download it again.")
    try:
        labels = np.asarray(labels_dict["label_specific"]).astype(np.int32, casting="same_kind")
    except TypeError:
        labels = None
    names = tuple(_text(name) for name in labels_dict["label_specific_str"])
    if labels is None or labels.ndim != 1 or (
            len(labels) and (labels.min() < 0 or labels.max() >= len(names))):
        raise DataError(f"{path} has label_specific values that do not index its "
                        f"{len(names)} label_specific_str names; download it again.")
    return labels, names


def _text(value: object) -> str:
    # Files pickled from Python 2 by some converters come back with bytes keys and names.
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
