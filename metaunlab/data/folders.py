"""The SIB reference on-disk layout used for miniImageNet and CIFAR-FS.

::

    <root>/train/<class_name>/<image>.jpg|png
    <root>/val/<class_name>/...
    <root>/test/<class_name>/...

Fixed validation episodes (see ``episodes.py``) name images by their path relative to a
split folder, ``"<class_name>/<file>"``, which is exactly what ``load_split_folder``
returns next to the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.decode import ImageFormat, load_image_files
from metaunlab.data.errors import DataError
from metaunlab.files import what_is_at

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REFERENCE_SPLITS = ("train", "val", "test")

# JPEG decoding releases the GIL, so threads give real parallelism here.
_DECODE_THREADS = min(8, os.cpu_count() or 1)
_LAYOUT_HINT = (
    "as in the SIB reference layout <root>/{train,val,test}/<class>/<image>.jpg; see README 'Data'"
)


def load_split_folder(
    split_dir: str | os.PathLike,
    image_size: int | None = None,
    channels: int = 3,
) -> tuple[ImageDataset, list[str]]:
    """One split folder as a dataset plus each image's path relative to ``split_dir``.

    Classes are the sorted subfolders and images are sorted by file name, so labels and
    order are reproducible across machines. With ``image_size`` set, images of another
    size are resized (bilinear) to ``image_size`` x ``image_size``; without it all images
    must already share one size.
    """
    split_dir = Path(split_dir)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels}.")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}.")
    if not split_dir.is_dir():
        raise DataError(
            f"split folder {split_dir} {what_is_at(split_dir, 'a folder')}; expected "
            f"{split_dir}/<class>/<image>.jpg {_LAYOUT_HINT}."
        )
    class_dirs = []
    for entry in _visible_children(split_dir):
        if not entry.is_dir():
            raise DataError(
                f"{entry} is a file directly inside split folder {split_dir}; move it into a "
                f"class folder or out of the split ({_LAYOUT_HINT})."
            )
        class_dirs.append(entry)
    if not class_dirs:
        raise DataError(
            f"split folder {split_dir} has no class folders; expected "
            f"{split_dir}/<class>/<image>.jpg {_LAYOUT_HINT}."
        )
    return load_class_folders(class_dirs, split_dir, image_size=image_size, channels=channels)


def load_class_folders(
    class_dirs: Sequence[Path],
    base_dir: str | os.PathLike,
    image_size: int | None = None,
    channels: int = 3,
) -> tuple[ImageDataset, list[str]]:
    """The images of the given class folders (labels in the order given) and each image's
    path relative to ``base_dir``; ``load_split_folder`` documents sizes and order."""
    base_dir = Path(base_dir)
    class_dirs = [Path(d) for d in class_dirs]
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = _visible_children(class_dir)
        for file in files:
            if not file.is_file():  # a folder, a broken link
                raise DataError(f"{file} {what_is_at(file, 'an image file')}; class folders "
                                "may hold only images, so replace or delete it.")
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"{file} is not a {'/'.join(IMAGE_SUFFIXES)} image; class folders may hold "
                    "only images, so move or delete it."
                )
        if not files:
            raise DataError(
                f"class folder {class_dir} holds no images; add its images or delete the folder."
            )
        paths.extend(files)
        labels.extend([label] * len(files))

    images = load_image_files(paths, ImageFormat(channels=channels, image_size=image_size))
    odd = next((i for i, im in enumerate(images) if im.shape != images[0].shape), None)
    if odd is not None:
        raise DataError(
            f"{paths[odd]} is {_size(images[odd])} but {paths[0]} is {_size(images[0])}; pass "
            "image_size (--config.data.image_size) to resize all images to one size."
        )
    dataset = ImageDataset(
        images=np.stack(images).reshape(len(images), *images[0].shape[:2], channels),
        labels=np.array(labels, dtype=np.int32),
        class_names=tuple(d.name for d in class_dirs),
    )
    relative_paths = [p.relative_to(base_dir).as_posix() for p in paths]
    return dataset, relative_paths


def load_reference_layout(
    root: str | os.PathLike,
    splits: Sequence[str] = REFERENCE_SPLITS,
    image_size: int | None = None,
    channels: int = 3,
) -> dict[str, tuple[ImageDataset, list[str]]]:
    """``load_split_folder`` for each of ``<root>/<split>``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data folder {root} {what_is_at(root, 'a folder')}; expected "
            f"{root}/train/<class>/<image>.jpg {_LAYOUT_HINT}, or point the --data_dir flag at "
            "it."
        )
    return {
        split: load_split_folder(root / split, image_size=image_size, channels=channels)
        for split in splits
    }


def _visible_children(folder: Path) -> list[Path]:
    # Hidden entries (.DS_Store, ._foo, .ipynb_checkpoints) are OS/tool metadata, not data.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"
