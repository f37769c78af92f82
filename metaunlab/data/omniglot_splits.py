"""Omniglot's class splits: by character, by alphabet (seeded or named), the folds of held-out
alphabets of the minimal archives, alphabet groups for within-alphabet episodes, and
mirrored and rotated copies of characters as new classes.

A class is named ``"<Alphabet>/characterNN"`` (``metaunlab.data.omniglot``),
``"<Alphabet>/characterNN@mirror"`` once mirrored and ``"...@rot<angle>"`` once rotated
(``"Korean/character07@mirror@rot90"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
ROTATION_ANGLES = (0, 90, 180, 270)
# What mirroring and rotating add to a character's name: a copy's variant.
_VARIANT_SUFFIX = re.compile(r"(@mirror)?(@rot\d+)?$")

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
        keys.append(alphabet_of(name) + _VARIANT_SUFFIX.search(name)[0])
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
        group_of = [_VARIANT_SUFFIX.sub("", name) for name in ds.class_names]
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


def mirror_classes(ds: ImageDataset) -> ImageDataset:
    """Each class and its left-right mirror image, a class of its own named ``c@mirror``.

    A mirrored character is a plausible character of a mirrored alphabet, as a rotated
    one is of a rotated alphabet; with rotations (``rotate_classes`` after this) every
    character gives the 8 images of its symmetries. Labels: class ``c`` keeps ``2c``, its
    mirror is ``2c + 1``.
    """
    images = np.concatenate([ds.images, ds.images[:, :, ::-1]])
    labels = np.concatenate([ds.labels * 2, ds.labels * 2 + 1]).astype(np.int32)
    names = tuple(variant for name in ds.class_names for variant in (name, f"{name}@mirror"))
    return ImageDataset(images=np.ascontiguousarray(images), labels=labels, class_names=names)


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
