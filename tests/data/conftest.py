"""Fixtures shared by the tests of metaunlab.data (factory fixtures return a function)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metaunlab.data.dataset import ImageDataset

# --- tieredImageNet: npz images + Python-2 label pickles -------------------------------------

TIERED_SPLITS = ("train", "val", "test")


def _py2_str(text: bytes) -> bytes:
    return b"U" + bytes([len(text)]) + text  # SHORT_BINSTRING: a Python 2 str


def _py2_labels_pickle(labels: list[int], names: list[bytes]) -> bytes:
    """A protocol-2 pickle as Python 2 writes it: keys and names are py2 ``str``
    (SHORT_BINSTRING), which Python 3 can only decode with an encoding such as latin1."""
    def int_list(values):
        return b"](" + b"".join(b"K" + bytes([v]) for v in values) + b"e"

    return (b"\x80\x02}(" + _py2_str(b"label_specific") + int_list(labels)
            + _py2_str(b"label_general") + int_list([0] * len(labels))
            + _py2_str(b"label_specific_str") + b"](" + b"".join(map(_py2_str, names)) + b"e"
            + _py2_str(b"label_general_str") + b"](" + _py2_str(b"animal") + b"e"
            + b"u.")


def _write_tiered_imagenet(root: Path, classes: int = 3, per_class: int = 4, size: int = 8,
                           compressed: bool = False) -> dict:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in TIERED_SPLITS:
        labels = np.repeat(np.arange(classes), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 255, (len(labels), size, size, 3), dtype=np.uint8)
        save = np.savez_compressed if compressed else np.savez
        save(root / f"{split}_images.npz", images=images)
        # Non-ASCII bytes in a name: only a latin1 decode reads it.
        names = [f"n0{c}_caf".encode() + b"\xe9" for c in range(classes)]
        (root / f"{split}_labels.pkl").write_bytes(_py2_labels_pickle(list(labels), names))
        written[split] = (images, labels)
    return written


@pytest.fixture(scope="session")
def write_tiered_imagenet():
    """`write_tiered_imagenet(root, classes=3, per_class=4, size=8, compressed=False)`:
    <split>_images.npz and Python-2 <split>_labels.pkl files; returns
    {split: (images, labels)}."""
    return _write_tiered_imagenet


# --- small stand-ins for datasets and label arrays -------------------------------------------


def _synthetic_omniglot(alphabets: int = 6, characters: int = 10,
                        per_class: int = 2) -> ImageDataset:
    names = tuple(
        f"Alpha{a}/character{c:02d}" for a in range(alphabets) for c in range(1, characters + 1)
    )
    labels = np.repeat(np.arange(len(names), dtype=np.int32), per_class)
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1) * np.ones(
        (1, 4, 4, 1), np.uint8
    )
    return ImageDataset(images=images, labels=labels, class_names=names)


@pytest.fixture(scope="session")
def synthetic_omniglot():
    """`synthetic_omniglot(alphabets=6, characters=10, per_class=2)`: an ImageDataset with
    Omniglot-style class names "Alpha<a>/character<cc>"; image i is the constant i."""
    return _synthetic_omniglot


def _interleaved_labels(num_classes: int = 12, per_class: int = 7) -> np.ndarray:
    # Interleaved, not grouped by class, so index bookkeeping bugs cannot hide.
    return np.tile(np.arange(num_classes, dtype=np.int32), per_class)


@pytest.fixture(scope="session")
def interleaved_labels():
    """`interleaved_labels(num_classes=12, per_class=7)`: int32 labels 0, 1, ..., k-1, 0, 1,
    ... (interleaved, not grouped by class)."""
    return _interleaved_labels
