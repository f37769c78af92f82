"""Tests for metaunlab.data.dataset (ImageDataset: validation, class selection, concat)."""

from __future__ import annotations

import numpy as np
import pytest

from metaunlab.data.dataset import ImageDataset, concat
from metaunlab.data.errors import DataError


def test_dataset_validation_and_select_and_concat(synthetic_omniglot) -> None:
    ds = synthetic_omniglot(alphabets=1, characters=3)
    picked = ds.select_classes(["Alpha0/character03", 0])
    assert picked.class_names == ("Alpha0/character03", "Alpha0/character01")
    assert picked.labels.tolist() == [1, 1, 0, 0]  # image order kept, labels in given order
    merged = concat([picked, ds.select_classes([1])])
    assert merged.num_classes == 3 and len(merged) == 6
    with pytest.raises(DataError, match="not in this dataset"):
        ds.select_classes(["Nope/character01"])
    with pytest.raises(DataError, match="labels must lie in"):
        ImageDataset(images=ds.images, labels=ds.labels + 5, class_names=ds.class_names)
    with pytest.raises(DataError, match="uint8"):
        ImageDataset(
            images=ds.images.astype(np.float32), labels=ds.labels, class_names=ds.class_names
        )
