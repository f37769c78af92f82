"""CIFAR-FS and FC100: CIFAR-100 (train and test pooled, 600 images per class) regrouped by the
class lists in ``metaunlab/data/splits``.

Two sources give identical arrays (same images, same order: the archive's train rows, then its
test rows):

- ``archive``: the ``cifar-100-python`` release, as ``cifar-100-python.tar.gz`` or extracted
  (a ``cifar-100-python/`` folder with ``train``, ``test`` and ``meta``). Its files are Python
  pickles; they are read with an unpickler that can only rebuild NumPy arrays, so a tampered
  file cannot run code. The archive's MD5 is checked against the published one.
- ``tfds``: an already-prepared TFDS ``cifar100`` (``tfds build cifar100``); nothing is
  downloaded.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np

from metaunlab.data import limits
from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError, looks_like_html
from metaunlab.data.safe_pickle import loads_data_pickle
from metaunlab.data.tfds.reading import iterate_split, prepared_builder

CIFAR100_DIR_ENV = "METAUNLAB_CIFAR100_DIR"
ARCHIVE_NAME = "cifar-100-python.tar.gz"
FOLDER_NAME = "cifar-100-python"
# Published checksums of the official release (the same values torchvision and torchmeta check).
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
MEMBER_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
_MD5_CHUNK = 4 * 2**20  # bytes hashed at a time
SPLIT_NAMES = ("train", "val", "test")
SOURCES = ("auto", "archive", "tfds")
_IMAGE_SHAPE = (32, 32, 3)


def default_cifar100_dir() -> Path:
    """``$METAUNLAB_CIFAR100_DIR`` if set, else ``<project root>/../shared/data/cifar100``."""
    from_env = os.environ.get(CIFAR100_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar100"


# ---------------------------------------------------------------------------------------------
# Split lists (package data)


def split_classes(dataset: str, split: str) -> tuple[str, ...]:
    """Class names of ``dataset`` ("cifar_fs" or "fc100") split ``split``, in label order."""
    if dataset not in ("cifar_fs", "fc100") or split not in SPLIT_NAMES:
        raise DataError(
            f"no split list for dataset={dataset!r} split={split!r}; use dataset 'cifar_fs' or "
            f"'fc100' and split one of {SPLIT_NAMES}."
        )
    return _read_lines(f"{dataset}/{split}.txt")


def cifar100_fine_label_names() -> tuple[str, ...]:
    """The 100 CIFAR-100 fine labels in label order (as in the archive's ``meta``)."""
    return _read_lines("cifar100/fine_label_names.txt")


def cifar100_superclasses() -> dict[str, tuple[str, ...]]:
    """The 20 superclasses in coarse-label order, each mapped to its five fine classes."""
    groups = {}
    for line in _read_lines("cifar100/superclasses.txt"):
        coarse, fine = line.split(":")
        groups[coarse.strip()] = tuple(fine.split())
    return groups


def _read_lines(relative: str) -> tuple[str, ...]:
    text = resources.files("metaunlab.data").joinpath("splits", relative).read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


# ---------------------------------------------------------------------------------------------
# Public loaders


def load_cifar_fs(
    root: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    tfds_data_dir: str | os.PathLike | None = None,
    verify_checksum: bool = True,
) -> dict[str, ImageDataset]:
    """CIFAR-FS (Bertinetto et al. 2019): 64/16/20 classes, 600 32x32x3 images each.

    Args:
      root: ``cifar-100-python.tar.gz``, the extracted ``cifar-100-python`` folder, or a
        folder holding either. Default: ``$METAUNLAB_CIFAR100_DIR`` or ``../shared/data/cifar100``.
      source: "archive", "tfds" (a prepared TFDS ``cifar100``), or "auto": the archive if one
        is found under ``root``, else TFDS.
      tfds_data_dir: the TFDS data dir (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      verify_checksum: check the published MD5s; only hand-made test fixtures turn this off.

    Returns:
      {"train", "val", "test"} -> ImageDataset, classes in the split file's order.
    """
    full = load_cifar100(
        root, source=source, tfds_data_dir=tfds_data_dir, verify_checksum=verify_checksum
    )
    return regroup(full, "cifar_fs")


def load_fc100(
    root: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    tfds_data_dir: str | os.PathLike | None = None,
    verify_checksum: bool = True,
) -> dict[str, ImageDataset]:
    """FC100 (Oreshkin et al. 2018): superclasses 12/4/4, i.e. 60/20/20 fine classes.

    Arguments and return value as for ``load_cifar_fs``.
    """
    full = load_cifar100(
        root, source=source, tfds_data_dir=tfds_data_dir, verify_checksum=verify_checksum
    )
    return regroup(full, "fc100")


def regroup(full: ImageDataset, dataset: str) -> dict[str, ImageDataset]:
    """Split a 100-class CIFAR-100 dataset by the lists of ``dataset``."""
    splits = {}
    for split in SPLIT_NAMES:
        wanted = split_classes(dataset, split)
        missing = [name for name in wanted if name not in full.class_names]
        if missing:
            raise DataError(
                f"the {dataset} {split} split names classes {missing[:3]} that the CIFAR-100 "
                f"data does not have (it has {full.class_names[:3]}...); this is not the "
                "official CIFAR-100, use the cifar-100-python release."
            )
        splits[split] = full.select_classes(wanted)
    return splits


def load_cifar100(
    root: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    tfds_data_dir: str | os.PathLike | None = None,
    verify_checksum: bool = True,
) -> ImageDataset:
    """All 60000 CIFAR-100 images (train rows, then test rows), fine labels, 100 classes."""
    if source not in SOURCES:
        raise DataError(f"source={source!r} is not supported; use one of {SOURCES}.")
    if source == "tfds":
        return load_cifar100_tfds(tfds_data_dir)
    located = _locate(Path(root).expanduser() if root is not None else default_cifar100_dir())
    if located is None:
        if source == "auto" and (root is None or tfds_data_dir is not None):
            return load_cifar100_tfds(tfds_data_dir)
        where = root if root is not None else default_cifar100_dir()
        raise DataError(
            f"no {ARCHIVE_NAME} or extracted {FOLDER_NAME}/ folder at {where}; download "
            f"{ARCHIVE_NAME} from the CIFAR home page into that folder, or set "
            f"{CIFAR100_DIR_ENV}."
        )
    return load_cifar100_archive(located, verify_checksum=verify_checksum)


def find_archive(root: str | os.PathLike) -> Path | None:
    """The cifar-100-python archive or extracted folder that ``root`` is or holds, or None."""
    return _locate(Path(root).expanduser())


def _locate(path: Path) -> Path | None:
    """The archive or extracted folder that ``path`` is or holds, or None."""
    candidates = [path, path / ARCHIVE_NAME, path / FOLDER_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.is_dir() and (candidate / "meta").exists():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# The cifar-100-python release


def load_cifar100_archive(
    path: str | os.PathLike, *, verify_checksum: bool = True
) -> ImageDataset:
    """CIFAR-100 from ``cifar-100-python.tar.gz`` or its extracted ``cifar-100-python`` folder."""
    path = Path(path)
    if path.is_dir():
        members = {}
        for name in ("train", "test", "meta"):
            file = path / name
            if not file.is_file():
                raise DataError(
                    f"{file} is missing; extract the whole {ARCHIVE_NAME} again (it holds "
                    "train, test and meta)."
                )
            if verify_checksum:  # before reading a file whole that may not be the release
                _check_md5(file, MEMBER_MD5[name])
            members[name] = limits.read_file(file, limits.memory_budget(), "pickle")
    else:
        members = _read_tar(path, verify_checksum)
    unpickled = {name: _safe_unpickle(data, f"{path}:{name}") for name, data in members.items()}
    class_names = _string_list(unpickled["meta"], "fine_label_names", f"{path}:meta")
    if len(class_names) != 100:
        raise DataError(
            f"{path}:meta lists {len(class_names)} fine labels instead of 100; this is not "
            f"the CIFAR-100 release, download {ARCHIVE_NAME} again."
        )
    parts = [_images_and_labels(unpickled[name], f"{path}:{name}") for name in ("train", "test")]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    if labels.max(initial=0) >= len(class_names):
        raise DataError(
            f"{path} has fine labels up to {labels.max()} but only {len(class_names)} names; "
            f"the archive is corrupt, download {ARCHIVE_NAME} again."
        )
    return ImageDataset(images=images, labels=labels, class_names=tuple(class_names))


# The release holds its folder, train, test, meta and file.txt~; reading member headers past
# this many would only fill memory with the headers of an archive that is not the release.
_MAX_TAR_MEMBERS = 64


def _read_tar(path: Path, verify_checksum: bool) -> dict[str, bytes]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; download {ARCHIVE_NAME} and pass its path.")
    with open(path, "rb") as file:
        head = file.read(512)
    if looks_like_html(head):
        raise DataError(
            f"{path} is an HTML page, not {ARCHIVE_NAME} (a login or error page was saved in "
            "its place); delete it and download the archive again."
        )
    if verify_checksum:
        _check_md5(path, ARCHIVE_MD5)
    # Streamed from the file: members are read one by one, each after its declared size has
    # been checked against what the archive's size allows (a small .tar.gz of zeros is a bomb).
    budget = limits.Budget(str(path), limits.allowance(path.stat().st_size))
    wanted = {f"{FOLDER_NAME}/{name}": name for name in ("train", "test", "meta")}
    members = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for _ in range(_MAX_TAR_MEMBERS):
                member = tar.next()
                if member is None or len(members) == len(wanted):
                    break
                if member.name in wanted and member.isfile():
                    budget.charge(member.size, f"its member {member.name}")
                    members[wanted[member.name]] = tar.extractfile(member).read(member.size)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(
            f"{path} is not a readable tar.gz archive ({error}); delete it and download "
            f"{ARCHIVE_NAME} again."
        ) from error
    missing = [member for member, name in wanted.items() if name not in members]
    if missing:
        raise DataError(f"{path} has no {missing[0]}; this is not {ARCHIVE_NAME}, download it "
                        "again.")
    return members


def _check_md5(path: Path, expected: str) -> None:
    """Compare the MD5 of ``path``, read in chunks, with the published one."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(_MD5_CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        raise DataError(
            f"{path} has MD5 {actual} but the published {path.name} has {expected}; the "
            "download is corrupt or not the official release, delete it and download it again."
        )


def _safe_unpickle(data: bytes, source: str) -> dict:
    # latin1: the release was pickled by Python 2, whose str held the raw array bytes. The
    # unpickler resolves only numpy's array rebuilders and plain containers, so a tampered
    # file is refused before anything in it runs.
    value = loads_data_pickle(data, source, encoding="latin1")
    if not isinstance(value, dict):
        raise DataError(
            f"{source} holds a {type(value).__name__}, not the dict of a CIFAR-100 pickle; "
            f"download {ARCHIVE_NAME} again."
        )
    # Keys are str when read with latin1, but accept bytes keys from re-pickled copies too.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in value.items()}


def _string_list(record: dict, key: str, source: str) -> list[str]:
    names = record.get(key)
    if not isinstance(names, list) or not names:
        raise DataError(f"{source} has no {key} list; download {ARCHIVE_NAME} again.")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _images_and_labels(record: dict, source: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = record.get("data"), record.get("fine_labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        raise DataError(
            f"{source} has no uint8 'data' array of shape (N, 3072); download {ARCHIVE_NAME} "
            "again."
        )
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(
            f"{source} has {len(data)} images but its 'fine_labels' do not match; download "
            f"{ARCHIVE_NAME} again."
        )
    # Rows are channel-major: 1024 red, then 1024 green, then 1024 blue values, each row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# A prepared TFDS cifar100


def load_cifar100_tfds(data_dir: str | os.PathLike | None = None) -> ImageDataset:
    """CIFAR-100 from a prepared TFDS ``cifar100``, in the archive's order (train, then test)."""
    builder = prepared_builder("cifar100", data_dir)
    examples = []
    for split in ("train", "test"):
        for example in iterate_split(builder, split):
            # TFDS stores examples shuffled; its "id" ("train_00042") is the archive row, so
            # sorting by it restores the archive's order exactly.
            example_id = example["id"]
            if isinstance(example_id, bytes):
                example_id = example_id.decode()
            prefix, _, row = example_id.rpartition("_")
            examples.append(((prefix != "train", int(row)), example["image"], example["label"]))
    examples.sort(key=lambda item: item[0])
    images = np.stack([np.asarray(image, np.uint8) for _, image, _ in examples])
    if images.shape[1:] != _IMAGE_SHAPE:
        raise DataError(
            f"TFDS cifar100 in {builder.data_dir} has images of shape {images.shape[1:]}, not "
            f"{_IMAGE_SHAPE}; rebuild it with `tfds build cifar100`."
        )
    labels = np.array([label for _, _, label in examples], dtype=np.int32)
    names = tuple(builder.info.features["label"].names)
    return ImageDataset(images=images, labels=labels, class_names=names)
