"""metaunlab.research.diagnostics on features and predictions whose answers are known by
construction."""

import numpy as np
import pytest

from metaunlab.research import diagnostics


def _two_directions(offset: float, per_class: int = 30, dim: int = 8):
    """Class 0 along e0, class 1 along e1, both shifted by `offset` along e2."""
    feats = np.zeros((2 * per_class, dim))
    feats[:per_class, 0] = 1.0
    feats[per_class:, 1] = 1.0
    feats[:, 2] = offset
    return feats, np.repeat([0, 1], per_class)


def test_orthogonal_classes_are_not_crowded():
    feats, labels = _two_directions(offset=0.0)
    c = diagnostics.feature_crowding(feats, labels, pairs=2000)
    assert c["between"] == pytest.approx(0.0, abs=1e-12)
    assert c["within"] == pytest.approx(1.0)
    assert c["mean_norm"] == pytest.approx(np.sqrt(0.5))  # half the images each way


def test_a_shared_direction_crowds_the_classes_and_scale_does_not_matter():
    feats, labels = _two_directions(offset=3.0)
    c = diagnostics.feature_crowding(feats, labels, pairs=2000)
    # cos between (1, 0, 3) and (0, 1, 3) is 9 / 10
    assert c["between"] == pytest.approx(0.9)
    assert c["within"] == pytest.approx(1.0)
    scaled = diagnostics.feature_crowding(feats * np.linspace(0.5, 4.0, len(feats))[:, None],
                                          labels, pairs=2000)
    assert scaled == pytest.approx(c)


def test_crowding_rejects_labels_that_do_not_match():
    with pytest.raises(ValueError, match="one label each"):
        diagnostics.feature_crowding(np.ones((5, 3)), np.zeros(4))


def test_prediction_shares_counts_argmax_per_episode():
    eye = np.eye(4)
    spread = eye[[0, 1, 2, 3, 0, 1, 2, 3]]  # every class twice
    gathered = eye[[2, 2, 2, 2, 2, 2, 0, 1]]  # six of eight to class 2
    share, predicted = diagnostics.prediction_shares(np.stack([spread, gathered]))
    np.testing.assert_allclose(share, [0.25, 0.75])
    np.testing.assert_array_equal(predicted, [4, 3])


def test_prediction_shares_ignores_padded_queries():
    eye = np.eye(3)
    probs = eye[[0, 1, 1, 2, 2, 2]][None]  # the last three are padding
    mask = np.array([[True, True, True, False, False, False]])
    share, predicted = diagnostics.prediction_shares(probs, mask)
    np.testing.assert_allclose(share, [2 / 3])
    np.testing.assert_array_equal(predicted, [2])
