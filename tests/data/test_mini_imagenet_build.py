"""Building miniImageNet from ImageNet and the split CSVs (metaunlab.data.mini_imagenet_build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaunlab.data.errors import DataError
from metaunlab.data.mini_imagenet import load_mini_imagenet
from metaunlab.data.mini_imagenet_build import build_from_imagenet, read_split_csv


def _fake_imagenet(root: Path, wnids: list[str], numbers: list[int]) -> None:
    """ImageNet-style class folders whose image n is one flat grey value n, so which file
    ended up where can be read back from the pixels."""
    for wnid in wnids:
        (root / "train" / wnid).mkdir(parents=True)
        for n in numbers:
            Image.fromarray(np.full((20, 30, 3), n, np.uint8)).save(
                root / "train" / wnid / f"{wnid}_{n}.JPEG", quality=100)


def test_build_follows_the_csv_numbering_by_image_number(tmp_path):
    # Numbers chosen so string order (10, 2, 33, 4) differs from numeric order (2, 4, 10, 33).
    numbers = [2, 4, 10, 33]
    _fake_imagenet(tmp_path / "imagenet", ["n01000001", "n02000002", "n03000003"], numbers)
    csvs = tmp_path / "csv"
    csvs.mkdir()
    for split, wnid, picks in [("train", "n01000001", [1, 3]), ("val", "n02000002", [2]),
                               ("test", "n03000003", [4, 1])]:
        rows = [f"{wnid}{p:08d}.jpg,{wnid}" for p in picks]
        (csvs / f"{split}.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "mini"
    counts = build_from_imagenet(tmp_path / "imagenet", csvs, out, image_size=12,
                                 progress=False)
    assert counts == {"train": 2, "val": 1, "test": 2}
    written = {p.relative_to(out).as_posix(): int(np.asarray(Image.open(p)).mean().round())
               for p in out.rglob("*.jpg")}
    # Position k (1-based) in numeric order is image number numbers[k - 1].
    assert written == {
        "train/n01000001/n0100000100000001.jpg": 2, "train/n01000001/n0100000100000003.jpg": 10,
        "val/n02000002/n0200000200000002.jpg": 4,
        "test/n03000003/n0300000300000004.jpg": 33, "test/n03000003/n0300000300000001.jpg": 2}
    assert Image.open(out / "val/n02000002/n0200000200000002.jpg").size == (12, 12)
    splits = load_mini_imagenet(out, image_size=12)  # what it wrote is the folder layout
    assert splits["test"].num_classes == 1 and len(splits["test"]) == 2


def test_build_errors_name_the_file(tmp_path):
    _fake_imagenet(tmp_path / "imagenet", ["n01000001"], [1, 2])
    csvs = tmp_path / "csv"
    csvs.mkdir()
    (csvs / "train.csv").write_text("filename,label\nn0100000100000003.jpg,n01000001\n")
    (csvs / "val.csv").write_text("filename,label\n")
    with pytest.raises(DataError, match=r"val.csv lists no images"):
        build_from_imagenet(tmp_path / "imagenet", csvs, tmp_path / "out", progress=False)
    (csvs / "val.csv").write_text("filename,label\nn0200000200000001.jpg,n02000002\n")
    (csvs / "test.csv").write_text("<!DOCTYPE html><html>quota exceeded</html>")
    with pytest.raises(DataError, match=r"test.csv is an HTML page"):
        build_from_imagenet(tmp_path / "imagenet", csvs, tmp_path / "out", progress=False)
    (csvs / "test.csv").write_text("filename,label\nn0100000100000001.jpg,n02000002\n")
    with pytest.raises(DataError, match=r"test.csv line 2"):
        read_split_csv(csvs / "test.csv")
    (csvs / "test.csv").write_text("filename,label\nn0100000100000001.jpg,n01000001\n")
    with pytest.raises(DataError, match=r"n01000001 is in both train.csv and test.csv"):
        build_from_imagenet(tmp_path / "imagenet", csvs, tmp_path / "out", progress=False)
    (csvs / "test.csv").write_text("filename,label\nn0300000300000001.jpg,n03000003\n")
    with pytest.raises(DataError, match=r"image 3 of n01000001.* has 2 images"):
        build_from_imagenet(tmp_path / "imagenet", csvs, tmp_path / "out", progress=False)
