"""From ``config.data`` to the three class-disjoint splits: the one place that knows which
reader handles which data set.

``config.data.name`` picks the data set and ``config.data.format`` (default "auto") the
on-disk form where a data set has several:

====================  ===========================  =====================================
name                  format                       reader
====================  ===========================  =====================================
omniglot              auto                         ``omniglot.py`` (the zip archives)
                      tfds                         ``tfds/omniglot.py`` (TFDS ``omniglot``)
miniimagenet          auto | folders | pickle      ``mini_imagenet.py``
tiered_imagenet       auto | npz                   ``tiered_imagenet.py``
cifar_fs              auto | folders               ``folders.py`` (reference layout)
cifar_fs, fc100       auto | archive               ``cifar100.py`` (``cifar-100-python``)
                      tfds_cifar100                ``cifar100.py`` (TFDS ``cifar100``)
all but omniglot      tfds                         ``tfds/builders.py`` (this package's builders)
folders               auto                         ``user_folders.py`` (your own images)
====================  ===========================  =====================================

With a TFDS format, ``config.data.root`` is the TFDS data dir. "auto" picks the form from
the files present (the reference folders first, where a data set has them).

``config.data.checksums`` ("<file>=sha256:<hex>,...", names relative to the data folder)
is checked before anything is read; see ``checksums.py`` for why none is built in.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from metaunlab.data.checksums import parse_checksums, verify_files
from metaunlab.data.dataset import ImageDataset
from metaunlab.data.decode import ImageFormat
from metaunlab.data.errors import DataError
from metaunlab.data.folders import load_reference_layout
from metaunlab.data.mini_imagenet import detect_format, load_mini_imagenet
from metaunlab.data.omniglot import (
    MINIMAL_ALPHABET_FOLDS,
    OMNIGLOT_DIR_ENV,
    default_omniglot_dir,
    load_omniglot,
    mirror_classes,
    omniglot_format,
    rotate_classes,
    split_omniglot,
)
from metaunlab.data.omniglot_fetch import fetch_omniglot
from metaunlab.data.tiered_imagenet import load_tiered_imagenet
from metaunlab.data.user_folders import find_split_file, load_user_folders
from metaunlab.errors import ConfigError

NAMES = ("omniglot", "miniimagenet", "tiered_imagenet", "cifar_fs", "fc100", "folders")
_FORMATS = {
    "omniglot": ("auto", "tfds"),
    "miniimagenet": ("auto", "folders", "pickle", "tfds"),
    "tiered_imagenet": ("auto", "npz", "tfds"),
    "cifar_fs": ("auto", "folders", "archive", "tfds_cifar100", "tfds"),
    "fc100": ("auto", "archive", "tfds_cifar100", "tfds"),
    "folders": ("auto",),
}
# The names this package's TFDS builders register (metaunlab/data/tfds/builders.py).
_TFDS_BUILDERS = {"miniimagenet": "mini_imagenet", "tiered_imagenet": "tiered_imagenet",
                  "cifar_fs": "cifar_fs", "fc100": "fc100"}


@dataclasses.dataclass
class SplitExtras:
    """What besides the images the pipeline needs from a source."""

    image_format: ImageFormat  # how new image files become inputs like these (evaluate)
    val_paths: list[str] | None = None  # val image paths, for the reference's JSON episodes
    val_root: str | None = None  # the folder those paths are relative to


def load_dataset_splits(
    data: ml_collections.ConfigDict,
) -> tuple[dict[str, ImageDataset], SplitExtras]:
    """``({"train", "val", "test"} -> ImageDataset, extras)`` for ``config.data``."""
    name, fmt = data.name, data.get("format", "auto") or "auto"
    if name not in _FORMATS:
        raise DataError(f"--config.data.name={name!r} is not known; use one of "
                        f"{', '.join(NAMES)}.")
    if fmt not in _FORMATS[name]:
        raise DataError(f"--config.data.format={fmt!r} does not exist for {name}; use one of "
                        f"{', '.join(_FORMATS[name])}.")
    root = data.root
    if not root and name == "omniglot" and fmt == "auto":
        # The default folder: the archives are downloaded there when it has none.
        root = str(fetch_omniglot(default_omniglot_dir(), env_var=OMNIGLOT_DIR_ENV))
    if not root:
        raise DataError(f"--config.data.root is not set; point it (or --data_dir) at the "
                        f"{name} folder (see README 'Data').")
    if data.get("checksums"):
        verify_files(root, parse_checksums(data.checksums))

    if name == "omniglot":
        return _omniglot(data, root, fmt)
    if fmt == "tfds":
        from metaunlab.data.tfds.reading import (
            load_tfds_splits,  # tensorflow_datasets only when asked
        )

        splits = load_tfds_splits(_TFDS_BUILDERS[name], data_dir=root)
        stored = splits["train"].images.shape[1]
        if data.image_size not in (None, stored):
            raise DataError(f"--config.data.image_size={data.image_size} but the TFDS "
                            f"{_TFDS_BUILDERS[name]} in {root} holds {stored} px images; set "
                            f"it to {stored}.")
        return splits, SplitExtras(ImageFormat(channels=3, image_size=stored))
    from_cifar100 = fmt in ("archive", "tfds_cifar100") or (
        fmt == "auto" and not _has_split_folders(root))
    if name in ("cifar_fs", "fc100") and from_cifar100:
        return _from_cifar100(data, name, root, fmt)
    if name == "miniimagenet":
        if fmt == "auto":
            fmt = detect_format(root)
        if fmt == "folders":
            return _reference_layout(root, data.image_size)
        splits = load_mini_imagenet(root, format="pickle", image_size=data.image_size)
        return splits, SplitExtras(ImageFormat(channels=3, image_size=data.image_size))
    if name == "tiered_imagenet":
        splits = load_tiered_imagenet(root, image_size=data.image_size)
        return splits, SplitExtras(ImageFormat(channels=3, image_size=data.image_size))
    if name == "cifar_fs":
        return _reference_layout(root, data.image_size)
    # name == "folders": the user's own images.
    channels = data.get("channels", 3)
    split_file = data.get("split_file") or None
    loaded = load_user_folders(root, split_file=split_file, image_size=data.image_size,
                               channels=channels)
    # Image paths are relative to the pool folder, or to val/ in the per-split layout.
    val_root = root if find_split_file(root, split_file) else os.path.join(root, "val")
    return ({split: dataset for split, (dataset, _) in loaded.items()},
            SplitExtras(ImageFormat(channels=channels, image_size=data.image_size),
                        val_paths=loaded["val"][1], val_root=val_root))


def _has_split_folders(root: str) -> bool:
    return all(os.path.isdir(os.path.join(root, split)) for split in ("train", "val", "test"))


def _from_cifar100(data: ml_collections.ConfigDict, name: str, root: str, fmt: str):
    """CIFAR-FS or FC100 regrouped from CIFAR-100 (the python archive or TFDS cifar100)."""
    from metaunlab.data import cifar100

    loader = cifar100.load_cifar_fs if name == "cifar_fs" else cifar100.load_fc100
    if fmt == "auto" and cifar100.find_archive(root) is None:
        layout = " the reference layout train/, val/, test/ class folders nor" if (
            name == "cifar_fs") else ""
        raise DataError(f"{root} holds neither{layout} {cifar100.ARCHIVE_NAME} (or its extracted "
                        f"{cifar100.FOLDER_NAME}/ folder); put one there (see README 'Data').")
    if fmt == "tfds_cifar100":
        splits = loader(source="tfds", tfds_data_dir=root)
    else:
        splits = loader(root, source="archive",
                        verify_checksum=data.get("verify_checksum", True))
    if data.image_size not in (None, 32):
        raise DataError(f"--config.data.image_size={data.image_size} but CIFAR-100 images are "
                        "32x32; leave it at 32.")
    return splits, SplitExtras(ImageFormat(channels=3, image_size=32))


def alphabet_fold(data: ml_collections.ConfigDict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(test, validation) alphabets for `data.split_by="alphabet"`: those of
    `data.alphabet_fold` (MINIMAL_ALPHABET_FOLDS), or the comma-separated
    `data.test_alphabets` and `data.val_alphabets`; both empty = a seeded split."""
    fold = data.get("alphabet_fold", -1)
    named = tuple(tuple(a.strip() for a in data.get(field, "").split(",") if a.strip())
                  for field in ("test_alphabets", "val_alphabets"))
    if fold == -1 and not any(named):
        return (), ()
    if data.split_by != "alphabet":
        raise ConfigError("--config.data.alphabet_fold and data.test_alphabets hold out "
                          "alphabets; set --config.data.split_by=alphabet too.")
    if fold == -1:
        return named
    if any(named):
        raise ConfigError(f"--config.data.alphabet_fold={fold} and data.test_alphabets / "
                          "val_alphabets both name held-out alphabets; give one of them.")
    if not 0 <= fold < len(MINIMAL_ALPHABET_FOLDS):
        raise ConfigError(f"--config.data.alphabet_fold={fold} is not a fold; use 0 to "
                          f"{len(MINIMAL_ALPHABET_FOLDS) - 1}, or -1 for a seeded split.")
    return MINIMAL_ALPHABET_FOLDS[fold]


def _omniglot(data: ml_collections.ConfigDict, root: str, fmt: str):
    if fmt == "tfds":
        from metaunlab.data.tfds.omniglot import load_omniglot_tfds

        # TFDS splits hold whole alphabets: train + test (the default) are all 1623
        # characters; --config.data.tfds_splits=small1,small2 gives the two small archives.
        tfds_splits = data.get("tfds_splits", "train,test")
        full = load_omniglot_tfds(tuple(s for s in tfds_splits.split(",") if s),
                                  data_dir=root, image_size=data.image_size)
    else:
        full = load_omniglot(root, image_size=data.image_size)
    test_alphabets, val_alphabets = alphabet_fold(data)
    splits = split_omniglot(full, by=data.split_by, fractions=tuple(data.fractions),
                            seed=data.split_seed, test_alphabets=test_alphabets,
                            val_alphabets=val_alphabets)
    # Mirroring characters and rotating them by 90 degree steps into new classes (Vinyals
    # et al. 2016) gives more base classes; test characters are kept as drawn.
    for field, expand in (("mirror_splits", mirror_classes), ("rotate_splits", rotate_classes)):
        for split in data.get(field, ()):
            if split not in splits:
                raise ConfigError(f"--config.data.{field} names {split!r}, not a split; use "
                                  f"some of {', '.join(splits)}.")
            splits[split] = expand(splits[split])
    return splits, SplitExtras(omniglot_format(data.image_size))


def _reference_layout(root: str, image_size: int | None):
    loaded = load_reference_layout(root, image_size=image_size)
    return ({split: dataset for split, (dataset, _) in loaded.items()},
            SplitExtras(ImageFormat(channels=3, image_size=image_size),
                        val_paths=loaded["val"][1], val_root=os.path.join(root, "val")))

