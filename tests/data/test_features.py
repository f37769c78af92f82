"""Features files: the arrays read, labels re-numbered per split, every bad file one sentence."""

import numpy as np
import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.features import load_feature_file


def _arrays(dim=4, rows=6):
    rng = np.random.default_rng(0)
    return {f"{split}_{kind}": (rng.normal(size=(rows, dim)).astype(np.float64) if
                                kind == "features" else np.array([7, 3, 7, 9, 3, 9]) + offset)
            for offset, split in ((0, "train"), (100, "val"), (200, "test"))
            for kind in ("features", "labels")}


def test_reads_each_split_as_float32_features_and_labels_in_order_of_appearance(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "f.npz", **arrays)
    splits = load_feature_file(tmp_path / "f.npz")
    assert set(splits) == {"train", "val", "test"}
    for split in splits.values():
        assert split.features.dtype == np.float32 and split.features.shape == (6, 4)
        np.testing.assert_array_equal(split.labels, [0, 1, 0, 2, 1, 2])  # 7, 3, 9 in order
        assert split.num_classes == 3 and len(split) == 6
    np.testing.assert_allclose(splits["val"].features, arrays["val_features"], rtol=1e-6)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("val_labels"), r"has no 'val_labels' .* it needs train_features"),
    (lambda a: a.update(test_features=np.ones((6, 5))), "has 5 features per row where train "
                                                        "has 4"),
    (lambda a: a.update(train_features=np.ones(6)), r"must be a non-empty \(N, D\) float array"),
    (lambda a: a.update(train_labels=np.ones(5, int)), "must be 6 integers, one per row"),
    (lambda a: a.update(val_labels=np.ones(6)), "must be 6 integers"),
    (lambda a: a["test_features"].__setitem__((0, 0), np.nan), "NaN or infinite values"),
])
def test_a_bad_file_is_one_sentence_naming_the_array(tmp_path, change, message):
    arrays = _arrays()
    change(arrays)
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_feature_file(tmp_path / "f.npz")


def test_missing_or_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; point --config\.data\.root at a \.npz"):
        load_feature_file(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"is not a readable \.npz"):
        load_feature_file(tmp_path / "bad.npz")
