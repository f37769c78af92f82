"""LaplacianShot (metaunlab.methods.laplacianshot)."""

import jax.numpy as jnp
import numpy as np

from metaunlab.methods import laplacianshot, simpleshot


def test_laplacianshot_without_laplacian_term_is_cl2n_softmax(separated):
    support, ys, query, _ = separated
    got = laplacianshot.laplacianshot(support[0], ys[0], query[0], 5, lam=0.0)
    want = simpleshot.simpleshot(support[0], ys[0], query[0], 5, temperature=1.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_knn_affinity_by_hand():
    x = jnp.asarray([[0.0], [1.0], [3.0], [10.0]])
    np.testing.assert_array_equal(np.asarray(laplacianshot.knn_affinity(x, 1)),
                                  [[0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
