"""Omniglot from its original zip archives (or the same layout extracted to folders).

Layout, in ``images_background.zip``, ``images_evaluation.zip`` and the "small" variants::

    <archive_stem>/<Alphabet>/characterNN/<drawer>_<NN>.png

A class is ``"<Alphabet>/characterNN"``. The small archives overlap (Greek and Latin ship
byte-identical in both), so drawings are keyed by alphabet/character/file name and merged
across archives rather than counted twice.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.decode import ImageFormat, decode_image
from metaunlab.data.errors import DataError, looks_like_html

OMNIGLOT_DIR_ENV = "METAUNLAB_OMNIGLOT_DIR"
SPLIT_NAMES = ("train", "val", "test")
ROTATION_ANGLES = (0, 90, 180, 270)

# Decoding is a mix of zlib (GIL released) and Python glue; a few threads are plenty.
_DECODE_THREADS = min(8, os.cpu_count() or 1)
_ROTATION_SUFFIX = re.compile(r"@rot\d+$")
_LAYOUT = "<archive_stem>/<Alphabet>/characterNN/<drawer>_NN.png"


def default_omniglot_dir() -> Path:
    """``$METAUNLAB_OMNIGLOT_DIR`` if set, else ``<project root>/../shared/data/omniglot``."""
    from_env = os.environ.get(OMNIGLOT_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    project_root = Path(__file__).resolve().parents[2]  # parent of the metaunlab package
    return project_root.parent / "shared" / "data" / "omniglot"


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
            f"Omniglot folder {data_dir} does not exist; put images_background_small1.zip and "
            f"images_background_small2.zip there, or set {OMNIGLOT_DIR_ENV} or the --data_dir "
            "flag to the folder that holds them."
        )
    if archives is None:
        found = sorted(
            p
            for p in data_dir.glob("images_*")
            if (p.is_file() and p.suffix == ".zip") or p.is_dir()
        )
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
                f"Omniglot archive {path} does not exist; check the archive name or put the "
                f"file in {data_dir}."
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
                data = archive.read(info)
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
                yield _Drawing(*key, image_path.name, str(image_path), image_path.read_bytes())
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


# Folds of the alphabet protocol on the two minimal archives (8 alphabets, 242 characters):
# each alphabet is a test alphabet in exactly one fold, every test pair but one has 20+
# characters in both alphabets for 20-way within-alphabet episodes (Tagalog has 17), and
# the validation alphabet has 20+ characters too. Train keeps the other 5 alphabets
# (149-168 characters, against 162 in the character split).
MINIMAL_ALPHABET_FOLDS = (
    # (test alphabets, validation alphabet)
    (("Japanese_(katakana)", "Early_Aramaic"), ("Balinese",)),
    (("Sanskrit", "Balinese"), ("Greek",)),
    (("Greek", "Latin"), ("Balinese",)),
    (("Korean", "Tagalog"), ("Early_Aramaic",)),  # 20-way episodes: Korean only
)


def alphabet_of(class_name: str) -> str:
    """The alphabet of an Omniglot class name: "Korean/character07@rot90" -> "Korean"."""
    return class_name.split("/", 1)[0]


def alphabet_groups(ds: ImageDataset) -> tuple[np.ndarray, tuple[str, ...]]:
    """(group id per class label, group names) for within-alphabet episodes.

    A group is an alphabet at one rotation ("Korean", "Korean@rot90", ...): rotating every
    character of an alphabet by the same angle makes a new alphabet (Vinyals et al. 2016),
    so an episode never mixes rotations, just as the test alphabets are never rotated.
    """
    keys = []
    for name in ds.class_names:
        rotation = _ROTATION_SUFFIX.search(name)
        keys.append(alphabet_of(name) + (rotation[0] if rotation else ""))
    names = tuple(sorted(set(keys)))
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[k] for k in keys], np.int32), names


def split_omniglot(
    ds: ImageDataset,
    *,
    by: str = "character",
    fractions: Sequence[float] = (0.67, 0.08, 0.25),
    seed: int = 0,
    test_alphabets: Sequence[str] = (),
    val_alphabets: Sequence[str] = (),
) -> dict[str, ImageDataset]:
    """Seeded, class-disjoint train/val/test split.

    ``by="character"`` shuffles characters (rotated copies of one character, see
    ``rotate_classes``, always stay together); ``by="alphabet"`` keeps whole alphabets
    together, the harder "new alphabet" setting: the named ``test_alphabets`` and
    ``val_alphabets`` when given (all other alphabets train; see MINIMAL_ALPHABET_FOLDS),
    else a seeded assignment by ``fractions``.
    """
    if test_alphabets or val_alphabets:
        if by != "alphabet":
            raise DataError("test and validation alphabets are named for split_by='alphabet'; "
                            f"got split_by={by!r}.")
        return _split_by_named_alphabets(ds, tuple(test_alphabets), tuple(val_alphabets))
    fractions = _check_fractions(fractions)
    if by == "character":
        group_of = [_ROTATION_SUFFIX.sub("", name) for name in ds.class_names]
    elif by == "alphabet":
        group_of = [name.split("/", 1)[0] for name in ds.class_names]
    else:
        raise DataError(
            f"split_omniglot by={by!r} is not supported; use 'character' or 'alphabet'."
        )
    groups = sorted(set(group_of))  # sorted first so the shuffle depends only on the seed
    np.random.default_rng(seed).shuffle(groups)
    members: dict[str, list[int]] = {}
    for class_id, group in enumerate(group_of):
        members.setdefault(group, []).append(class_id)
    if by == "character":
        assignment = _cut_in_order(groups, fractions)
    else:
        assignment = _assign_greedily(groups, [len(members[g]) for g in groups], fractions)
    splits = {}
    for split, chosen_groups in zip(SPLIT_NAMES, assignment, strict=True):
        class_ids = sorted(i for g in chosen_groups for i in members[g])
        if not class_ids:
            raise DataError(
                f"split_omniglot would give split {split!r} no classes ({len(groups)} "
                f"{by}s, fractions={tuple(fractions)}); raise its fraction, load more "
                "archives, or split by='character'."
            )
        splits[split] = ds.select_classes(class_ids)
    return splits


def _split_by_named_alphabets(ds: ImageDataset, test: tuple[str, ...],
                              val: tuple[str, ...]) -> dict[str, ImageDataset]:
    present = sorted({alphabet_of(name) for name in ds.class_names})
    unknown = [a for a in test + val if a not in present]
    if unknown:
        raise DataError(f"alphabet {unknown[0]!r} is not in the loaded archives; choose test and "
                        f"validation alphabets among {', '.join(present)}.")
    if not test or not val or set(test) & set(val):
        raise DataError(f"the alphabet split needs at least one test and one validation "
                        f"alphabet, none in both; got test={test}, val={val}.")
    held_out = set(test) | set(val)
    if held_out >= set(present):
        raise DataError(f"test alphabets {test} and validation alphabets {val} leave no "
                        "alphabet to train on; hold out fewer.")
    split_of = {"test": set(test), "val": set(val)}
    splits = {}
    for split in SPLIT_NAMES:
        ids = [i for i, name in enumerate(ds.class_names)
               if (alphabet_of(name) in split_of[split] if split != "train"
                   else alphabet_of(name) not in held_out)]
        splits[split] = ds.select_classes(ids)
    return splits


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    values = [float(f) for f in fractions]
    if (
        len(values) != len(SPLIT_NAMES)
        or not all(math.isfinite(f) and f >= 0 for f in values)
        or abs(sum(values) - 1.0) > 1e-6
    ):
        raise DataError(
            f"split fractions must be three non-negative numbers (train, val, test) summing "
            f"to 1, got {tuple(fractions)}."
        )
    return values


def _cut_in_order(groups: list[str], fractions: list[float]) -> list[list[str]]:
    # Largest-remainder rounding: the counts add up to len(groups) exactly.
    raw = [f * len(groups) for f in fractions]
    counts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])
    for i in by_remainder[: len(groups) - sum(counts)]:
        counts[i] += 1
    bounds = np.cumsum([0, *counts])
    return [groups[bounds[i] : bounds[i + 1]] for i in range(len(counts))]


def _assign_greedily(
    groups: list[str], sizes: list[int], fractions: list[float]
) -> list[list[str]]:
    # Each (shuffled) group goes to the split that is proportionally furthest below its
    # target class count; ties go to the larger target. Measuring the shortfall relative to
    # the target means a small split such as val still gets a group early instead of
    # being starved by train's large absolute shortfall.
    targets = [f * sum(sizes) for f in fractions]
    filled = [0] * len(fractions)
    assignment: list[list[str]] = [[] for _ in fractions]

    def shortfall(i: int) -> tuple[float, float]:
        if targets[i] == 0:
            return (-math.inf, 0.0)
        return ((targets[i] - filled[i]) / targets[i], targets[i])

    for group, size in zip(groups, sizes, strict=True):
        best = max(range(len(fractions)), key=shortfall)
        assignment[best].append(group)
        filled[best] += size
    return assignment


def rotate_classes(ds: ImageDataset, angles: Sequence[int] = ROTATION_ANGLES) -> ImageDataset:
    """Each rotation of each class becomes its own class (Vinyals et al. 2016).

    Rotations are counter-clockwise and exact (``np.rot90``); class ``c`` at angle ``a``
    is named ``c@rot<a>`` (angle 0 keeps the plain name). Split before or after rotating:
    ``split_omniglot(by="character")`` keeps a character's rotations together either way.
    """
    angles = list(angles)
    if (
        not angles
        or len(set(angles)) != len(angles)
        or any(a not in ROTATION_ANGLES for a in angles)
    ):
        raise DataError(
            f"rotate_classes angles must be distinct values from {ROTATION_ANGLES}, "
            f"got {tuple(angles)}."
        )
    height, width = ds.images.shape[1:3]
    if height != width and any(a % 180 for a in angles):
        raise DataError(
            f"rotating {height}x{width} images by 90 or 270 degrees changes their shape; "
            "load square images (set image_size) first."
        )
    count = len(angles)
    images = np.concatenate([np.rot90(ds.images, k=a // 90, axes=(1, 2)) for a in angles])
    labels = np.concatenate([ds.labels * count + j for j in range(count)]).astype(np.int32)
    names = tuple(
        name if angle == 0 else f"{name}@rot{angle}" for name in ds.class_names for angle in angles
    )
    return ImageDataset(images=np.ascontiguousarray(images), labels=labels, class_names=names)
