"""Logistic regression on the support (metaunlab.methods.logreg)."""

import numpy as np

from metaunlab.methods import logreg


def test_logistic_regression_reaches_the_bias_optimality_condition(separated):
    """At the optimum the unpenalised bias has zero gradient: mean(p - y) = 0 on the
    support, so predicting the support itself must reproduce the class frequencies."""
    support, ys, _, _ = separated
    p = np.asarray(logreg.logistic_regression(support[0], ys[0], support[0], 5))
    np.testing.assert_allclose(p.mean(0), np.bincount(np.asarray(ys[0])) / len(ys[0]),
                               atol=2e-3)
