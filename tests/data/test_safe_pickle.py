"""The data-only unpickler (metaunlab.data.safe_pickle), directly and through a dataset
reader."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.mini_imagenet import load_pickle_cache
from metaunlab.data.safe_pickle import load_data_pickle


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_bytes(pickle.dumps({"image_data": np.zeros((1, 8, 8, 3), np.uint8),
                                   "class_dict": {"a": [0]}, "x": _RunsACommand(marker)}))
    with pytest.raises(DataError, match=r"asks to run (posix|nt)\.system .* refused"):
        load_pickle_cache(path)
    assert not marker.exists()
    # The same bytes through plain pickle really would run it: the test is not vacuous.
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("obj", [
    {"a": np.arange(5, dtype=np.int64), "b": [1.5, "x", (2, 3)], "c": {1, 2}},
    {"scalar": np.float32(2.5), "names": ["n01", "n02"], "big": np.zeros((3, 4), np.uint8)},
])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_data_pickles_round_trip(tmp_path, obj, protocol):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    loaded = load_data_pickle(path)
    assert loaded.keys() == obj.keys()
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(loaded[key], value)
        else:
            assert loaded[key] == value


def test_html_and_truncated_pickles(tmp_path):
    path = tmp_path / "mini-imagenet-cache-val.pkl"
    path.write_bytes(b"\n<!DOCTYPE html>\n<html><title>Google Drive - Virus scan warning")
    with pytest.raises(DataError, match=r"mini-imagenet-cache-val.pkl is an HTML page"):
        load_pickle_cache(path)
    path.write_bytes(pickle.dumps({"image_data": np.zeros((4, 8, 8, 3), np.uint8)})[:60])
    with pytest.raises(DataError, match=r"is not a readable pickle .* truncated or corrupt"):
        load_pickle_cache(path)
