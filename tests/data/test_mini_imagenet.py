"""miniImageNet: pickle caches, folder layout, auto-detection (the build from ImageNet:
test_mini_imagenet_build.py; the experiment end to end: tests/experiments)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.mini_imagenet import (
    detect_format,
    load_mini_imagenet,
    load_pickle_cache,
)

SPLITS = ("train", "val", "test")


def test_pickle_cache_labels_follow_class_dict(tmp_path, write_mini_imagenet_caches):
    written = write_mini_imagenet_caches(tmp_path, classes=3, per_class=4, size=8)
    images, class_dict = written["val"]
    dataset = load_pickle_cache(tmp_path / "mini-imagenet-cache-val.pkl")
    assert dataset.class_names == tuple(sorted(class_dict))  # sorted, like class folders
    np.testing.assert_array_equal(dataset.images, images)  # order kept, no copy of pixels
    for label, name in enumerate(dataset.class_names):
        np.testing.assert_array_equal(np.flatnonzero(dataset.labels == label), class_dict[name])


def test_pickle_cache_resized_on_request(tmp_path, write_mini_imagenet_caches):
    write_mini_imagenet_caches(tmp_path, classes=2, per_class=2, size=84)
    dataset = load_pickle_cache(tmp_path / "mini-imagenet-cache-test.pkl", image_size=16)
    assert dataset.images.shape == (4, 16, 16, 3)


def test_auto_detects_each_form_and_both_give_the_same_kind_of_splits(
        tmp_path, write_mini_imagenet_caches, write_mini_imagenet_folders):
    write_mini_imagenet_caches(tmp_path / "pkl", classes=2, per_class=3, size=8)
    write_mini_imagenet_folders(tmp_path / "dirs", classes=2, per_class=3, size=8)
    assert detect_format(tmp_path / "pkl") == "pickle"
    assert detect_format(tmp_path / "dirs") == "folders"
    for form in ("pkl", "dirs"):
        splits = load_mini_imagenet(tmp_path / form, image_size=8)
        assert sorted(splits) == sorted(SPLITS)
        assert all(ds.images.shape == (6, 8, 8, 3) and ds.num_classes == 2
                   for ds in splits.values())
    with pytest.raises(DataError, match=r"mini-imagenet-cache-train.pkl is missing"):
        load_mini_imagenet(tmp_path / "dirs", format="pickle")


def test_detection_errors_point_at_the_fix(tmp_path, write_mini_imagenet_caches):
    nested = tmp_path / "download"
    write_mini_imagenet_caches(nested / "miniimagenet", classes=2, per_class=2, size=8)
    with pytest.raises(DataError, match=r"point --data_dir at .*download/miniimagenet"):
        detect_format(nested)
    (nested / "miniimagenet" / "mini-imagenet-cache-val.pkl").unlink()
    with pytest.raises(DataError, match=r"mini-imagenet-cache-val.pkl is missing"):
        detect_format(nested / "miniimagenet")
    (tmp_path / "sib" / "train_train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"rename train_train to train"):
        detect_format(tmp_path / "sib")
    (tmp_path / "csvs").mkdir()
    (tmp_path / "csvs" / "train.csv").write_text("filename,label\n")
    with pytest.raises(DataError, match=r"prepare_data mini_imagenet"):
        detect_format(tmp_path / "csvs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"neither train/"):
        detect_format(tmp_path / "empty")
    with pytest.raises(DataError, match=r"format 'npz' is not one of"):
        load_mini_imagenet(tmp_path / "empty", format="npz")


@pytest.mark.parametrize("cache, message", [
    ({"images": np.zeros((1, 8, 8, 3), np.uint8)}, "not a dict with 'image_data'"),
    ({"image_data": np.zeros((2, 8, 8, 3), np.float32), "class_dict": {"a": [0, 1]}},
     "not uint8"),
    ({"image_data": np.zeros((2, 8, 8, 3), np.uint8), "class_dict": {"a": [0, 2]}},
     "not indices 0..1"),
    ({"image_data": np.zeros((2, 8, 8, 3), np.uint8), "class_dict": {"a": [0], "b": [0]}},
     "under two classes"),
    ({"image_data": np.zeros((3, 8, 8, 3), np.uint8), "class_dict": {"a": [0, 1]}},
     "1 images .* that no class"),
])
def test_malformed_cache_is_refused(tmp_path, cache, message):
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_bytes(pickle.dumps(cache))
    with pytest.raises(DataError, match=message):
        load_pickle_cache(path)
