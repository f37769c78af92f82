"""LaplacianShot (metaunlab.methods.laplacianshot)."""

import json
from pathlib import Path

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


# The authors' code (imtiazziko/LaplacianShot @ 5de2612, src/train_lshot.py and
# src/lshot_update.py run unchanged on this episode, lmd 1.0, knn 3, no rectification; it
# ran its 20 bound iterations): its final soft assignments Y, recorded in
# reference_outputs.json beside this file.
AUTHORS_Y = np.array(json.loads((Path(__file__).parent / "reference_outputs.json").read_text())[
    "authors_laplacianshot_y"])


def test_equals_the_authors_code_on_a_fixed_episode():
    rng = np.random.default_rng(0)
    xs = rng.random((5, 16)).astype(np.float32)
    xq = rng.random((15, 16)).astype(np.float32)
    base_mean = np.full(16, 0.5, np.float32)
    # Their knn=3 counts the query itself (sklearn's first neighbour), which they drop.
    got = laplacianshot.laplacianshot(xs, np.arange(5), xq, 5, base_mean=base_mean, lam=1.0,
                                      knn=2)
    np.testing.assert_allclose(np.asarray(got), AUTHORS_Y, atol=1e-6)
    three = laplacianshot.laplacianshot(xs, np.arange(5), xq, 5, base_mean=base_mean, lam=1.0,
                                        knn=3)
    assert np.abs(np.asarray(three) - AUTHORS_Y).max() > 1e-3  # the neighbour count matters
