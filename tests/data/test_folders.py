"""Tests for metaunlab.data.folders (the SIB reference <root>/<split>/<class>/<image> layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaunlab.data.errors import DataError
from metaunlab.data.folders import load_reference_layout, load_split_folder


def _write_image(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size, 3), value, np.uint8)
    pixels[..., 1] = 255 - value  # distinct channels catch RGB/greyscale mix-ups
    Image.fromarray(pixels).save(path)  # format from suffix: PNG or JPEG


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two splits; file names deliberately created out of order, mixed png/jpg."""
    _write_image(tmp_path / "train" / "n02" / "b.png", 30)
    _write_image(tmp_path / "train" / "n02" / "a.png", 20)
    _write_image(tmp_path / "train" / "n01" / "z.jpg", 10)
    _write_image(tmp_path / "train" / "n01" / "c.png", 0)
    _write_image(tmp_path / "val" / "n03" / "x.png", 40)
    (tmp_path / "train" / "n01" / ".DS_Store").write_bytes(b"\0")  # OS metadata is ignored
    return tmp_path


def test_order_labels_and_relative_paths(root: Path) -> None:
    ds, paths = load_split_folder(root / "train")
    assert ds.class_names == ("n01", "n02")
    assert paths == ["n01/c.png", "n01/z.jpg", "n02/a.png", "n02/b.png"]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images.shape == (4, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.images[2, 0, 0].tolist() == [20, 235, 20]
    assert abs(int(ds.images[1, 0, 0, 0]) - 10) <= 3  # JPEG is lossy


def test_greyscale_and_resize(root: Path) -> None:
    _write_image(root / "train" / "n02" / "c.png", 50, size=12)  # odd size gets resized
    ds, paths = load_split_folder(root / "train", image_size=6, channels=1)
    assert ds.images.shape == (5, 6, 6, 1)
    assert paths[-1] == "n02/c.png"


def test_mixed_sizes_without_image_size(root: Path) -> None:
    _write_image(root / "train" / "n02" / "c.png", 50, size=12)
    with pytest.raises(DataError, match=r"n02/c.png is 12x12 .* pass image_size"):
        load_split_folder(root / "train")


def test_reference_layout(root: Path) -> None:
    loaded = load_reference_layout(root, splits=("train", "val"))
    assert set(loaded) == {"train", "val"}
    assert loaded["val"][1] == ["n03/x.png"]
    with pytest.raises(
        DataError,
        match=r"test does not exist; expected .*/test/<class>/"
        r"<image>.jpg as in the SIB reference layout",
    ):
        load_reference_layout(root)
    with pytest.raises(DataError, match=r"data folder .* does not exist"):
        load_reference_layout(root / "missing")


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        load_split_folder(tmp_path / "train")


def test_empty_class_folder(root: Path) -> None:
    (root / "train" / "n05").mkdir()
    with pytest.raises(DataError, match="n05 holds no images"):
        load_split_folder(root / "train")


def test_unreadable_image_named(root: Path) -> None:
    (root / "train" / "n02" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg is not a readable image"):
        load_split_folder(root / "train")


def test_html_saved_as_image(root: Path) -> None:
    (root / "train" / "n02" / "page.jpg").write_text("<html><body>Too many requests</body></html>")
    with pytest.raises(DataError, match=r"page\.jpg is an HTML page"):
        load_split_folder(root / "train")


def test_stray_files_are_reported(root: Path) -> None:
    (root / "train" / "n01" / "labels.txt").write_text("x")
    with pytest.raises(DataError, match=r"labels\.txt is not a"):
        load_split_folder(root / "train")
