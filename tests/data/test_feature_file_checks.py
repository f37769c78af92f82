"""A features file that cannot be used is refused when it is read, in one sentence naming it:
files that are no NumPy archive (told from their first bytes), empty feature rows, values
beyond float32."""

import numpy as np
import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.features import SPLITS, load_feature_file


def _savez(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {f"{split}_features": rng.normal(size=(6, 4)) for split in SPLITS}
    arrays.update({f"{split}_labels": np.arange(6) % 3 for split in SPLITS}, **changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty \(0 bytes\)"),
    (b"<!DOCTYPE html>\n<html><head><title>Quota exceeded</title>",
     r"is an HTML page \(a download's error page\?\), not a NumPy archive \(it starts with "
     r"'<!DOCTYPE html>\\n'\)"),
    (b"\x1b[31m\x00binary", r"is not a NumPy archive \(it starts with '\\x1b\[31m\\x00binary'\)"),
    (np.lib.format.magic(1, 0) + b"{'descr': '<f8'}",
     r"is a single NumPy array \(\.npy\), not an archive of the six arrays"),
], ids=["empty", "html", "binary", "npy"])
def test_a_file_that_is_no_numpy_archive_is_named_by_its_first_bytes(tmp_path, content,
                                                                     message):
    path = tmp_path / "feats.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"^features file {path} is not a readable \.npz: it "
                                        rf"{message}; write it with numpy\.savez \(train_"):
        load_feature_file(path)


@pytest.mark.parametrize("changes, message", [
    ({"val_features": np.zeros((6, 0))}, r"val_features in .*feats\.npz must be a non-empty "
     r"\(N, D\) float array \(N and D at least 1\), got float64 of shape \(6, 0\)\."),
    ({"test_features": np.full((6, 4), 1e300)}, r"test_features in .*feats\.npz holds values "
     r"beyond float32's range \(up to 1e\+300 in magnitude, where float32 ends at 3\.4e\+38\); "
     r"scale those features down\."),
    ({"train_features": np.array([[-1e39, 0.0]] * 6)},
     r"train_features .*\(up to 1e\+39 in magnitude"),
], ids=["zero_width", "beyond_float32", "negative_beyond_float32"])
def test_features_unusable_in_float32_training_are_refused_at_load(tmp_path, changes, message):
    _savez(tmp_path / "feats.npz", **changes)
    with pytest.raises(DataError, match=message):
        load_feature_file(tmp_path / "feats.npz")
