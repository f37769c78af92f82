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


# The authors' code (imtiazziko/LaplacianShot @ 5de2612, src/train_lshot.py and
# src/lshot_update.py run unchanged on this episode, lmd 1.0, knn 3, no rectification; it
# ran its 20 bound iterations): its final soft assignments Y.
AUTHORS_Y = np.array([
    [0.07385916, 0.25488477, 0.10874908, 0.03790102, 0.52460597],
    [0.04362690, 0.15606075, 0.13667769, 0.10490182, 0.55873284],
    [0.31450260, 0.23829829, 0.09508313, 0.22022832, 0.13188767],
    [0.37569343, 0.15115113, 0.13484369, 0.14446191, 0.19384984],
    [0.29747656, 0.17034297, 0.07984527, 0.13589833, 0.31643687],
    [0.09885177, 0.22971390, 0.06603047, 0.15516579, 0.45023806],
    [0.06147863, 0.21135814, 0.13028596, 0.38708939, 0.20978788],
    [0.27576124, 0.25416547, 0.20223825, 0.09412248, 0.17371256],
    [0.30967896, 0.35055486, 0.11611169, 0.11949315, 0.10416134],
    [0.11946616, 0.18648692, 0.19333374, 0.22403759, 0.27667559],
    [0.11490828, 0.05830052, 0.16677730, 0.16145821, 0.49855568],
    [0.28541502, 0.12730374, 0.09889636, 0.36287119, 0.12551369],
    [0.08358779, 0.09586085, 0.18307627, 0.11472602, 0.52274908],
    [0.27306978, 0.28771041, 0.12888598, 0.16689644, 0.14343739],
    [0.12741917, 0.07232501, 0.12776146, 0.49751431, 0.17498005],
])


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
