"""docs/tutorial.py runs end to end on a tiny features file."""

import runpy
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_compares_sib_protonet_and_pt_map_on_features(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for offset, split in ((0, "train"), (10, "val"), (20, "test")):
        centres = rng.normal(size=(6, 8)) * 3
        labels = np.repeat(np.arange(6), 20)
        arrays[f"{split}_features"] = np.abs(centres[labels] + rng.normal(size=(120, 8)))
        arrays[f"{split}_labels"] = labels + offset
    np.savez(tmp_path / "feats.npz", **arrays)
    tutorial = runpy.run_path(str(ROOT / "docs" / "tutorial.py"))
    accuracies = tutorial["main"](str(tmp_path / "feats.npz"), iterations=20)
    assert list(accuracies) == ["sib_k3", "protonet_cosine", "pt_map"]
    assert all(60.0 < a <= 100.0 for a in accuracies.values())  # 5-way chance is 20%
