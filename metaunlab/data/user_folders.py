"""Users' own images: a folder of class folders, split into train / val / test classes.

Two layouts are accepted::

    <root>/train/<class>/<image>     one folder per split (the SIB reference layout)
    <root>/val/<class>/<image>
    <root>/test/<class>/<image>

    <root>/<class>/<image>           one pool of class folders ...
    <root>/splits.json or splits.txt ... and a split file naming each split's classes

``splits.json`` maps each split to its class folder names::

    {"train": ["cat", "dog", ...], "val": ["owl", ...], "test": ["fox", ...]}

``splits.txt`` says the same with a ``[split]`` line before each split's class names, one
per line (names may contain spaces; blank lines and lines starting with ``#`` are
ignored)::

    [train]
    cat
    dog
    [val]
    owl
    [test]
    fox

Every class folder must be listed in exactly one split, so no class is left out or used
twice by accident. Images may be .jpg or .png of any size and channel count: they are
converted to ``channels`` (1 = greyscale, 3 = RGB; an RGBA or greyscale image becomes RGB)
and, with ``image_size`` set, resized to ``image_size`` x ``image_size``; without
``image_size``, images of different sizes are refused with the first pair that differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError
from metaunlab.data.folders import REFERENCE_SPLITS, load_class_folders, load_reference_layout
from metaunlab.files import what_is_at

SPLIT_FILES = ("splits.json", "splits.txt")


def load_user_folders(
    root: str | os.PathLike,
    *,
    split_file: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int = 3,
) -> dict[str, tuple[ImageDataset, list[str]]]:
    """``{split: (dataset, image paths relative to the split's base folder)}``.

    ``split_file`` (default: ``<root>/splits.json`` or ``<root>/splits.txt``) selects the
    pooled layout; without one, ``root`` must hold train/, val/ and test/ folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} {what_is_at(root, 'a folder')}; point --data_dir (or "
                        "--config.data.root) at your folder of class folders.")
    split_file = find_split_file(root, split_file)
    if split_file is None:
        if not all((root / split).is_dir() for split in REFERENCE_SPLITS):
            raise DataError(f"{root} has neither train/, val/ and test/ folders nor a "
                            "splits.json or splits.txt naming each split's class folders; "
                            "add one of them (see metaunlab/data/user_folders.py).")
        return load_reference_layout(root, image_size=image_size, channels=channels)

    classes = read_split_file(split_file)
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    for split, names in classes.items():
        for name in names:
            if name not in folders:
                raise DataError(f"{split_file} lists class {name!r} under {split!r} but "
                                f"{root / name} is not a folder; fix the name or add the "
                                "folder.")
    listed = {name for names in classes.values() for name in names}
    unlisted = sorted(set(folders) - listed)
    if unlisted:
        raise DataError(f"class folder {root / unlisted[0]} (and {len(unlisted) - 1} more) is in "
                        f"no split of {split_file}; list it under a split or move it out of "
                        f"{root}.")
    return {split: load_class_folders([folders[name] for name in names], root,
                                      image_size=image_size, channels=channels)
            for split, names in classes.items()}


def find_split_file(
    root: str | os.PathLike, split_file: str | os.PathLike | None = None
) -> Path | None:
    """The split file that applies to ``root``: the one given, else ``<root>/splits.json``
    or ``<root>/splits.txt``, else None (the one-folder-per-split layout)."""
    if split_file:
        return Path(split_file)
    return next((Path(root) / name for name in SPLIT_FILES if (Path(root) / name).is_file()),
                None)


def read_split_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}`` from a ``.json`` or ``.txt`` split
    file (format in the module doc); each class in exactly one split."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read split file {path} ({error}); check the path.") from error
    if path.suffix.lower() == ".json":
        try:
            classes = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"split file {path} is not valid JSON ({error}); fix it.") from error
        if not isinstance(classes, dict) or not all(
                isinstance(v, list) and all(isinstance(n, str) for n in v)
                for v in classes.values()):
            raise DataError(f"split file {path} must map each split to a list of class folder "
                            'names, e.g. {"train": ["cat"], "val": ["owl"], "test": ["fox"]}.')
    else:
        classes = _parse_text(text, path)
    if sorted(classes) != sorted(REFERENCE_SPLITS):
        raise DataError(f"split file {path} has splits {sorted(classes)}; it needs exactly "
                        "train, val and test.")
    owner: dict[str, str] = {}
    for split in REFERENCE_SPLITS:
        if not classes[split]:
            raise DataError(f"split file {path} lists no classes for {split!r}; add some.")
        for name in classes[split]:
            if name in owner:
                raise DataError(f"split file {path} lists class {name!r} under both "
                                f"{owner[name]!r} and {split!r}; splits must not share "
                                "classes.")
            owner[name] = split
    return {split: list(classes[split]) for split in REFERENCE_SPLITS}


def _parse_text(text: str, path: Path) -> dict[str, list[str]]:
    classes: dict[str, list[str]] = {}
    current = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            if current in classes:
                raise DataError(f"split file {path} has a second [{current}] section at line "
                                f"{number}; merge the two.")
            classes[current] = []
        elif current is None:
            raise DataError(f"split file {path} line {number} names class {line!r} before any "
                            "[train], [val] or [test] line; start each split with one.")
        else:
            classes[current].append(line)
    return classes
