"""Users' own class folders: per-split folders, a pool plus a split file, mixed images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.configs.folders import get_config as folders_config
from metaunlab.data.errors import DataError
from metaunlab.data.user_folders import load_user_folders, read_split_file
from metaunlab.train.pipeline import check_shapes_before_training, load_splits, train_and_evaluate

CLASSES = {"train": ["cat", "dog", "emu"], "val": ["owl", "yak"], "test": ["fox", "gnu"]}


def _pool(root: Path, per_class: int = 3, size: int = 8) -> None:
    for c, name in enumerate(sorted(n for names in CLASSES.values() for n in names)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size, 3), 10 * c + i, np.uint8)).save(
                root / name / f"{i}.png")


def test_pool_with_json_split_file(tmp_path):
    _pool(tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps(CLASSES))
    loaded = load_user_folders(tmp_path)
    for split, names in CLASSES.items():
        dataset, paths = loaded[split]
        assert dataset.class_names == tuple(names)  # the split file's order
        assert paths[:3] == [f"{names[0]}/{i}.png" for i in range(3)]
    owl = loaded["val"][0]
    assert (owl.images[owl.labels == 0][:, 0, 0, 0] == [50, 51, 52]).all()  # owl: 6th sorted


def test_pool_with_text_split_file_given_explicitly(tmp_path):
    _pool(tmp_path / "images")
    split_file = tmp_path / "my_splits.txt"
    split_file.write_text("# my split\n[train]\ncat\ndog\nemu\n\n[val]\nowl\nyak\n"
                          "[test]\nfox\ngnu\n")
    loaded = load_user_folders(tmp_path / "images", split_file=split_file)
    assert loaded["test"][0].class_names == ("fox", "gnu")


def test_per_split_folders_need_no_split_file(tmp_path):
    for split, names in CLASSES.items():
        _pool(tmp_path / split)  # every class in every split folder is fine here ...
        for extra in set(n for v in CLASSES.values() for n in v) - set(names):
            for f in (tmp_path / split / extra).iterdir():
                f.unlink()
            (tmp_path / split / extra).rmdir()  # ... but keep only the split's own classes
    loaded = load_user_folders(tmp_path)
    assert loaded["val"][0].class_names == ("owl", "yak")
    assert loaded["val"][1][0] == "owl/0.png"


def test_mixed_sizes_and_channels_are_converted_or_refused(tmp_path):
    _pool(tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps(CLASSES))
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(tmp_path / "cat" / "grey.png")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "dog" / "rgba.png")
    loaded = load_user_folders(tmp_path, image_size=6)
    assert loaded["train"][0].images.shape == (11, 6, 6, 3)
    with pytest.raises(DataError, match=r"grey.png is 20x12 but .*0.png is 8x8.*image_size"):
        load_user_folders(tmp_path)
    greyscale = load_user_folders(tmp_path, image_size=6, channels=1)["train"][0]
    assert greyscale.images.shape == (11, 6, 6, 1)


@pytest.mark.parametrize("content, message", [
    ('{"train": ["cat"], "val": ["owl"]}', "needs exactly train, val and test"),
    ('{"train": ["cat"], "val": ["cat"], "test": ["fox"]}', "under both 'train' and 'val'"),
    ('{"train": "cat", "val": [], "test": []}', "must map each split to a list"),
    ('{"train": ["cat"], "val": [], "test": ["fox"]}', "no classes for 'val'"),
    ("{not json", "not valid JSON"),
])
def test_bad_json_split_files(tmp_path, content, message):
    (tmp_path / "splits.json").write_text(content)
    with pytest.raises(DataError, match=message):
        read_split_file(tmp_path / "splits.json")


def test_bad_text_split_files(tmp_path):
    path = tmp_path / "splits.txt"
    path.write_text("cat\n[train]\ndog\n")
    with pytest.raises(DataError, match=r"line 1 names class 'cat' before any"):
        read_split_file(path)
    path.write_text("[train]\ncat\n[val]\nowl\n[test]\nfox\n[train]\ndog\n")
    with pytest.raises(DataError, match=r"second \[train\] section at line 7"):
        read_split_file(path)


def test_split_file_and_folders_must_agree(tmp_path):
    _pool(tmp_path)
    classes = {**CLASSES, "test": ["fox", "gnu", "ibis"]}
    (tmp_path / "splits.json").write_text(json.dumps(classes))
    with pytest.raises(DataError, match=r"lists class 'ibis' under 'test' but .*ibis is not"):
        load_user_folders(tmp_path)
    classes = {**CLASSES, "test": ["fox"]}
    (tmp_path / "splits.json").write_text(json.dumps(classes))
    with pytest.raises(DataError, match=r"class folder .*gnu \(and 0 more\) is in no split"):
        load_user_folders(tmp_path)


def test_no_layout_at_all(tmp_path):
    _pool(tmp_path)
    with pytest.raises(DataError, match=r"neither train/, val/ and test/ folders nor a"):
        load_user_folders(tmp_path)


def _folders_tiny(root: Path):
    config = folders_config()
    config.data.root = str(root)
    config.data.image_size = 8
    config.data.transform = "omniglot"
    return config


def test_folders_config_loads_through_the_pipeline(tmp_path):
    _pool(tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps(CLASSES))
    splits = load_splits(_folders_tiny(tmp_path).data)
    assert splits.val.class_names == ("owl", "yak")
    assert splits.val_paths[0] == "owl/0.png" and splits.val_root == str(tmp_path)


def test_too_small_splits_fail_before_training(tmp_path):
    _pool(tmp_path / "data")
    (tmp_path / "data" / "splits.json").write_text(json.dumps(CLASSES))
    config = _folders_tiny(tmp_path / "data")
    config.settings = "2way_1shot"
    config.pretrain.val_n_way = 2
    with pytest.raises(DataError, match=r"class 'owl' .* in split 'val' has 3 images but "
                                        r"n_shot=1 \+ n_query=15 needs 16"):
        splits = load_splits(config.data)
        check_shapes_before_training(config, splits.train, splits.val, splits.test)
    config.settings, config.pretrain.val_n_way = "5way_1shot", 5  # more than val holds
    with pytest.raises(DataError, match=r"split 'val' has 2 classes but n_way=5"):
        train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "pretrain").exists()  # refused before any training
