"""Omniglot from its original zip archives (or the same layout extracted to folders).

Layout, in ``images_background.zip``, ``images_evaluation.zip`` and the "small" variants::

    <archive_stem>/<Alphabet>/characterNN/<drawer>_<NN>.png

A class is ``"<Alphabet>/characterNN"``. The small archives overlap (Greek and Latin ship
byte-identical in both), so drawings are keyed by alphabet/character/file name and merged
across archives rather than counted twice. Splits by character or alphabet, the folds of
held-out alphabets and rotated classes: ``metaunlab.data.omniglot_splits``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from metaunlab.data import limits
from metaunlab.data.dataset import ImageDataset
from metaunlab.data.decode import ImageFormat, decode_image, read_image_file
from metaunlab.data.errors import DataError, looks_like_html
from metaunlab.data.omniglot_fetch import omniglot_cache_dir, omniglot_sources
from metaunlab.data.omniglot_splits import (  # noqa: F401  (the splits, importable from here too)
    MINIMAL_ALPHABET_FOLDS,
    ROTATION_ANGLES,
    SPLIT_NAMES,
    alphabet_groups,
    alphabet_of,
    mirror_classes,
    rotate_classes,
    split_omniglot,
)
from metaunlab.files import what_is_at

OMNIGLOT_DIR_ENV = "METAUNLAB_OMNIGLOT_DIR"

# Decoding is a mix of zlib (GIL released) and Python glue; a few threads are plenty.
_DECODE_THREADS = min(8, os.cpu_count() or 1)
_LAYOUT = "<archive_stem>/<Alphabet>/characterNN/<drawer>_NN.png"


def default_omniglot_dir() -> Path:
    """``$METAUNLAB_OMNIGLOT_DIR`` if set; else ``<project root>/../shared/data/omniglot``
    where that folder exists; else the download cache (``omniglot_fetch.omniglot_cache_dir``).
    """
    from_env = os.environ.get(OMNIGLOT_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    project_root = Path(__file__).resolve().parents[2]  # parent of the metaunlab package
    shared = project_root.parent / "shared" / "data" / "omniglot"
    return shared if shared.is_dir() else omniglot_cache_dir()


DEFAULT_OMNIGLOT_DIR = default_omniglot_dir()


@dataclasses.dataclass(frozen=True)
class _Drawing:
    """One PNG as stored, before decoding."""

    alphabet: str
    character: str
    file_name: str
    source: str  # "<archive>:<member>" or a file path, for error messages
    data: bytes

    @property
    def class_name(self) -> str:
        return f"{self.alphabet}/{self.character}"


def load_omniglot(
    data_dir: str | os.PathLike = DEFAULT_OMNIGLOT_DIR,
    archives: Sequence[str | os.PathLike] | None = None,
    image_size: int | None = 28,
) -> ImageDataset:
    """All drawings of the given archives as one dataset, one class per character.

    Args:
      data_dir: folder holding the archives.
      archives: zip files or extracted folders, relative to ``data_dir`` or absolute.
        Default: every ``images_*.zip`` and every extracted ``images_*`` folder there.
      image_size: side of the square output images (LANCZOS resize); None keeps 105x105.

    Returns:
      uint8 images (N, S, S, 1) with strokes bright (255) on a black background, the
      usual input convention for Omniglot models; class names sorted.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}.")
    sources = _find_sources(Path(data_dir), archives)
    drawings = _deduplicate(d for source in sources for d in _read_source(source))
    class_names = sorted({d.class_name for d in drawings})
    # Sorted classes, then sorted file names: the dataset order never depends on the
    # order of archives or of members inside them.
    drawings.sort(key=lambda d: (d.class_name, d.file_name))
    fmt = omniglot_format(image_size)
    with concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS) as pool:
        images = list(pool.map(lambda d: decode_image(d.data, d.source, fmt)[..., 0], drawings))
    odd = next((i for i, im in enumerate(images) if im.shape != images[0].shape), None)
    if odd is not None:
        raise DataError(
            f"{drawings[odd].source} is {_size(images[odd])} while {drawings[0].source} is "
            f"{_size(images[0])}; pass image_size to resize them to one size."
        )
    label_of = {name: i for i, name in enumerate(class_names)}
    return ImageDataset(
        images=np.stack(images)[..., None],
        labels=np.array([label_of[d.class_name] for d in drawings], dtype=np.int32),
        class_names=tuple(class_names),
    )


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _find_sources(data_dir: Path, archives: Sequence[str | os.PathLike] | None) -> list[Path]:
    if not data_dir.is_dir():
        raise DataError(
            f"Omniglot folder {data_dir} {what_is_at(data_dir, 'a folder')}; put "
            "images_background_small1.zip and "
            f"images_background_small2.zip there, or set {OMNIGLOT_DIR_ENV} or the --data_dir "
            "flag to the folder that holds them."
        )
    if archives is None:
        found = omniglot_sources(data_dir)
        if not found:
            raise DataError(
                f"{data_dir} holds no Omniglot archives (images_*.zip) or extracted images_* "
                "folders; put images_background_small1.zip and images_background_small2.zip "
                f"there, or set {OMNIGLOT_DIR_ENV} or the --data_dir flag to where they are."
            )
        return found
    if isinstance(archives, (str, os.PathLike)):
        archives = [archives]  # a lone name is an easy slip; treat it as a one-item list
    resolved = [data_dir / archive for archive in archives]  # absolute paths stay absolute
    for path in resolved:
        if not path.exists():
            raise DataError(
                f"Omniglot archive {path} {what_is_at(path, 'an archive')}; check the archive "
                f"name or put the file in {data_dir}."
            )
    if not resolved:
        raise DataError("load_omniglot got an empty archives list; name at least one archive.")
    return resolved


def _read_source(path: Path) -> Iterator[_Drawing]:
    if path.is_dir():
        yield from _read_folder(path)
    else:
        yield from _read_zip(path)


def _read_zip(path: Path) -> Iterator[_Drawing]:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(512)
        if looks_like_html(head):
            raise DataError(
                f"{path} is an HTML page, not a zip archive (a login or error page was saved "
                "in its place); delete it and download the archive again."
            )
        raise DataError(
            f"{path} is not a zip archive (truncated or corrupt download); delete it and "
            "download the archive again."
        )
    characters: dict[tuple[str, str], int] = {}  # character folder -> number of PNGs
    alphabets: set[str] = set()
    with zipfile.ZipFile(path) as archive:
        # A zip declares every member's size: check them all before reading any.
        limits.check_archive(path, [info for info in archive.infolist() if not info.is_dir()])
        for info in archive.infolist():
            parts = info.filename.rstrip("/").split("/")
            if _is_os_metadata(parts):
                continue
            if info.is_dir():
                # Directory entries let us notice character folders that hold no images.
                if len(parts) == 2:
                    alphabets.add(parts[1])
                elif len(parts) == 3:
                    alphabets.add(parts[1])
                    characters.setdefault((parts[1], parts[2]), 0)
                elif len(parts) > 3:
                    raise _layout_error(f"{path}:{info.filename}", "folder")
                continue
            if len(parts) != 4 or not parts[3].lower().endswith(".png"):
                raise _layout_error(f"{path}:{info.filename}", "file")
            _, alphabet, character, file_name = parts
            alphabets.add(alphabet)
            characters[(alphabet, character)] = characters.get((alphabet, character), 0) + 1
            try:
                data = limits.read_member(archive, info, limits.max_image_file_bytes(),
                                          f"{path}:{info.filename}")
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
                raise DataError(
                    f"member {info.filename} of {path} cannot be read ({error}); the archive is "
                    "corrupt, download it again."
                ) from error
            yield _Drawing(alphabet, character, file_name, f"{path}:{info.filename}", data)
    _check_not_empty(path, alphabets, characters)


def _read_folder(path: Path) -> Iterator[_Drawing]:
    characters: dict[tuple[str, str], int] = {}
    alphabets: set[str] = set()
    for alphabet_dir in _visible_children(path):
        if not alphabet_dir.is_dir():
            raise _layout_error(str(alphabet_dir), "file")
        alphabets.add(alphabet_dir.name)
        for character_dir in _visible_children(alphabet_dir):
            if not character_dir.is_dir():
                raise _layout_error(str(character_dir), "file")
            key = (alphabet_dir.name, character_dir.name)
            characters[key] = 0
            for image_path in _visible_children(character_dir):
                if not image_path.is_file() or image_path.suffix.lower() != ".png":
                    kind = "folder" if image_path.is_dir() else "file"
                    raise _layout_error(str(image_path), kind)
                characters[key] += 1
                yield _Drawing(*key, image_path.name, str(image_path),
                               read_image_file(image_path))
    _check_not_empty(path, alphabets, characters)


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not _is_os_metadata([p.name]))


def _is_os_metadata(parts: list[str]) -> bool:
    # Finder/Explorer droppings (.DS_Store, __MACOSX/, ._foo) are not data; anything else
    # that does not fit the layout is reported, never skipped.
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _layout_error(where: str, kind: str) -> DataError:
    return DataError(
        f"unexpected {kind} {where}: Omniglot archives must hold only {_LAYOUT}; remove it "
        "or download the archive again."
    )


def _check_not_empty(
    path: Path, alphabets: set[str], characters: dict[tuple[str, str], int]
) -> None:
    for (alphabet, character), count in sorted(characters.items()):
        if count == 0:
            raise DataError(
                f"character folder {alphabet}/{character} in {path} holds no PNG images; the "
                "archive is incomplete, download or extract it again."
            )
    for alphabet in sorted(alphabets - {a for a, _ in characters}):
        raise DataError(
            f"alphabet folder {alphabet} in {path} holds no character folders; the archive "
            "is incomplete, download or extract it again."
        )
    if not characters:
        raise DataError(
            f"{path} holds no Omniglot drawings; expected {_LAYOUT}, download it again."
        )


def _deduplicate(drawings: Iterator[_Drawing]) -> list[_Drawing]:
    """One drawing per alphabet/character/file name; identical copies are merged."""
    kept: dict[tuple[str, str, str], _Drawing] = {}
    for drawing in drawings:
        key = (drawing.alphabet, drawing.character, drawing.file_name)
        first = kept.setdefault(key, drawing)
        if first is not drawing and first.data != drawing.data:
            raise DataError(
                f"{first.source} and {drawing.source} have the same alphabet/character/file "
                "name but different contents; remove the archive that is not the original."
            )
    return list(kept.values())


def omniglot_format(image_size: int | None = 28) -> ImageFormat:
    """Greyscale, Lanczos-resized (the originals are 1-bit; 'L' makes resizing smooth), and
    inverted: dark strokes on white become bright strokes on black."""
    return ImageFormat(channels=1, image_size=image_size, resample="lanczos", invert=True)
