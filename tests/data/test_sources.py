"""Dispatch on config.data.name / format (metaunlab.data.sources)."""

from __future__ import annotations

import hashlib

import pytest

from experiments.configs.common import base_config
from metaunlab.data.errors import DataError
from metaunlab.data.sources import load_dataset_splits


def _data(name, root, **fields):
    data = base_config().data
    data.name, data.root = name, str(root)
    data.image_size = 8
    for key, value in fields.items():
        data[key] = value
    return data


def test_dispatch_reads_each_source(tmp_path, write_mini_imagenet_caches, write_tiered_imagenet):
    write_mini_imagenet_caches(tmp_path / "mini", classes=2, per_class=2, size=8)
    write_tiered_imagenet(tmp_path / "tiered")
    splits, extras = load_dataset_splits(_data("miniimagenet", tmp_path / "mini"))
    assert splits["train"].num_classes == 2 and extras.val_paths is None
    splits, extras = load_dataset_splits(_data("tiered_imagenet", tmp_path / "tiered"))
    assert splits["test"].num_classes == 3 and extras.image_format.image_size == 8


def test_dispatch_checks_checksums_before_reading(tmp_path, write_mini_imagenet_caches):
    write_mini_imagenet_caches(tmp_path, classes=2, per_class=2, size=8)
    name = "mini-imagenet-cache-train.pkl"
    digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    load_dataset_splits(_data("miniimagenet", tmp_path, checksums=f"{name}=sha256:{digest}"))
    with pytest.raises(DataError, match=f"{name} has sha256 {digest} but"):
        load_dataset_splits(_data("miniimagenet", tmp_path,
                                  checksums=f"{name}=sha256:{'1' * 64}"))
    with pytest.raises(DataError, match=r"nope.pkl has an expected checksum but does not exist"):
        load_dataset_splits(_data("miniimagenet", tmp_path,
                                  checksums=f"nope.pkl=sha256:{'1' * 64}"))


def test_dispatch_errors(tmp_path):
    with pytest.raises(DataError, match=r"data.name='imagenet' is not known"):
        load_dataset_splits(_data("imagenet", tmp_path))
    with pytest.raises(DataError, match=r"format='pickle' does not exist for tiered_imagenet"):
        load_dataset_splits(_data("tiered_imagenet", tmp_path, format="pickle"))
    with pytest.raises(DataError, match=r"data.root is not set"):
        load_dataset_splits(_data("miniimagenet", ""))
