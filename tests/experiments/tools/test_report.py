"""experiments.tools.report: the learning curves (the report written on a trained work dir is
tested in test_compare.py, as it reads what the compare CLI wrote there)."""

import numpy as np

from experiments.tools.report import learning_curves


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
