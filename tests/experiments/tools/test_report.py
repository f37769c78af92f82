"""The tools' curves and plots: learning curves, the loss's running mean, the comparison's
bars (the report written on a trained work dir is tested in test_compare.py, as it reads what
the compare CLI wrote there)."""

import numpy as np
import pytest

from experiments.tools.compare import plot_comparison
from experiments.tools.report import learning_curves, running_mean


def test_learning_curves_put_training_and_validation_in_percent():
    records = [{"phase": "pretrain", "step": 1, "loss": 2.0, "accuracy": 25.0},
               {"phase": "pretrain_val", "step": 1, "accuracy": 40.0},
               {"phase": "metatrain_5way_1shot", "step": 5, "loss": 1.0, "accuracy": 50.0},
               {"phase": "test_5way_1shot", "step": 5, "sib": 50.0}]
    curves = learning_curves(records)
    assert list(curves) == ["pretrain", "metatrain_5way_1shot"]
    np.testing.assert_allclose(curves["pretrain"]["accuracy"], [25.0])
    np.testing.assert_allclose(curves["pretrain"]["val_accuracy"], [40.0])
    assert len(curves["metatrain_5way_1shot"]["val_step"]) == 0


def test_the_loss_is_drawn_with_its_running_mean():
    np.testing.assert_allclose(running_mean(np.array([4.0, 2.0, 6.0, 0.0]), 2),
                               [4.0, 3.0, 4.0, 3.0])
    np.testing.assert_allclose(running_mean(np.array([1.0, 5.0]), 1), [1.0, 5.0])


def test_comparison_bars_grow_from_chance(tmp_path, monkeypatch):
    """Two methods a point apart at 96-97%: the axis starts at chance (20% at 5 ways), so
    the bars differ by a sixtieth of their length, not by most of it."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    methods = {"protonet_cosine": {"accuracy": 96.2, "ci95": 0.3, "transductive": False},
               "sib_k3": {"accuracy": 97.2, "ci95": 0.3, "transductive": True}}
    plot_comparison({"dataset": "omniglot", "settings": {"5way_1shot": {
        "n_way": 5, "episodes": 600, "methods": methods}}}, str(tmp_path / "compare.png"))
    ax = figures[0].axes[0]
    assert ax.get_xlim()[0] == 20.0 and "chance (20%)" in ax.get_xlabel()
    bars = [(patch.get_x(), patch.get_width()) for patch in ax.patches]
    assert bars == [(20.0, pytest.approx(76.2)), (20.0, pytest.approx(77.2))]
    assert (tmp_path / "compare.png").stat().st_size > 0
