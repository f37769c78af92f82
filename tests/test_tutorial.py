"""docs/tutorial.py runs end to end on the features `experiments.export_features` writes from
the session's Omniglot demo run (the shipped archives, nothing else)."""

import runpy
from pathlib import Path

import numpy as np

from metaunlab.data.features import load_feature_file
from metaunlab.trained_model import TrainedModel

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_compares_sib_protonet_and_pt_map_on_exported_demo_features(
        tiny_omniglot_run, run_script, tmp_path):
    feats = tmp_path / "feats.npz"
    proc = run_script("experiments.export_features", f"--workdir={tiny_omniglot_run.workdir}",
                      f"--output={feats}")
    assert proc.returncode == 0, proc.stderr
    exported = load_feature_file(feats)["test"]
    want_feats, want_labels = TrainedModel.load(str(tiny_omniglot_run.workdir)).split_features(
        "test")
    np.testing.assert_array_equal(exported.features, want_feats)
    np.testing.assert_array_equal(exported.labels, want_labels)
    assert f"wrote {feats}: 64-dimensional features of train " in proc.stdout

    tutorial = runpy.run_path(str(ROOT / "docs" / "tutorial.py"))
    accuracies = tutorial["main"](str(feats), iterations=20)
    assert list(accuracies) == ["sib_k3", "protonet_cosine", "pt_map"]
    assert all(40.0 < a <= 100.0 for a in accuracies.values())  # 5-way chance is 20%
