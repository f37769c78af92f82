"""A few-shot task given as folders: the support folder holds one folder of images per class
(the folder name is the label), the query folder holds the unlabeled images, flat. Hidden
files are ignored; other files that are not images are skipped with a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import logging

from metaunlab.data.errors import DataError
from metaunlab.data.folders import IMAGE_SUFFIXES
from metaunlab.errors import shown
from metaunlab.files import what_is_at


def _images_in(folder: Path, what: str) -> list[Path]:
    """The image files of `folder`; other files (notes, spreadsheets) are skipped with a
    warning naming them, and a folder or a broken link inside it is refused."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for entry in entries:
        if not entry.is_file():  # a folder, a broken link
            raise DataError(f"{entry} {what_is_at(entry, 'an image file')}; the {what} may "
                            "hold only images, so replace or delete it.")
    files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [p.name for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]
    if skipped:
        logging.warning("skipping %d file(s) of the %s %s that are not %s images: %s",
                        len(skipped), what, shown(str(folder)), "/".join(IMAGE_SUFFIXES),
                        ", ".join(shown(name) for name in skipped))
    if not files:
        raise DataError(f"{what} {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images; add "
                        "some.")
    return files


def support_images(support_dir: str | os.PathLike) -> tuple[list[str], list[Path], np.ndarray]:
    """The images of a folder of class folders.

    Args:
      support_dir: a folder with one folder of images per class (at least two).

    Returns:
      (class names, sorted; image files; labels (n,) int32, the class of each file).

    Raises:
      DataError: no such folder, fewer than two classes, a loose file, a class without
        images, or a folder or broken link inside a class folder. Files that are not images
        are skipped with a warning.
    """
    root = Path(support_dir)
    if not root.is_dir():
        raise DataError(f"support folder {root} {what_is_at(root, 'a folder')}; give "
                        "--support_dir a folder with one folder of images per class.")
    class_dirs = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p for p in class_dirs if not p.is_dir()]
    if loose:
        raise DataError(f"{loose[0]} is a file directly inside the support folder {root}; "
                        "put every image in the folder of its class.")
    if len(class_dirs) < 2:
        raise DataError(f"support folder {root} has {len(class_dirs)} class folder(s); a "
                        "few-shot task needs at least two classes, one folder each.")
    files, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        images = _images_in(class_dir, "class folder")
        files += images
        labels += [label] * len(images)
    return [d.name for d in class_dirs], files, np.asarray(labels, np.int32)


def query_images(query_dir: str | os.PathLike) -> list[Path]:
    """The image files of a flat folder.

    Args:
      query_dir: a folder of images (hidden files ignored).

    Returns:
      The image files, sorted by name.

    Raises:
      DataError: no such folder, no images, or a folder or broken link inside it. Files that
        are not images are skipped with a warning.
    """
    root = Path(query_dir)
    if not root.is_dir():
        raise DataError(f"query folder {root} {what_is_at(root, 'a folder')}; give "
                        "--query_dir a folder of unlabeled images.")
    return _images_in(root, "query folder")
