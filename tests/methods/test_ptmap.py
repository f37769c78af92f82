"""PT-MAP (metaunlab.methods.ptmap): Sinkhorn, balanced assignments, preprocessing."""

import jax.numpy as jnp
import numpy as np

from metaunlab.methods import get_method, ptmap


def test_sinkhorn_matches_prescribed_row_and_column_sums():
    rng = np.random.default_rng(3)
    kernel = jnp.asarray(rng.uniform(0.05, 1.0, size=(12, 4)), jnp.float32)
    rows = jnp.asarray(rng.uniform(0.5, 1.5, size=12), jnp.float32)
    cols = jnp.full((4,), float(rows.sum()) / 4)
    p = np.asarray(ptmap.sinkhorn(kernel, rows, cols, iterations=200))
    np.testing.assert_allclose(p.sum(1), rows, rtol=1e-4)
    np.testing.assert_allclose(p.sum(0), cols, rtol=1e-5)
    # P = diag(u) K diag(v): the cross-ratios of K survive scaling.
    ratio = lambda m: m[0, 0] * m[1, 1] / (m[0, 1] * m[1, 0])  # noqa: E731
    np.testing.assert_allclose(ratio(p), ratio(np.asarray(kernel)), rtol=1e-4)


def test_pt_map_assignments_have_balanced_columns_and_unit_rows(separated, batched):
    support, ys, query, _ = separated
    no_epochs = get_method("pt_map").with_options(epochs=0).batched(5)
    for probs in (batched("pt_map", 5)(support, ys, query), no_epochs(support, ys, query)):
        probs = np.asarray(probs)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(probs.sum(1), query.shape[1] / 5, atol=1e-3)


def test_pt_map_preprocessing_is_power_l2_centre_l2():
    x = jnp.asarray([[4.0, 0.0], [0.0, 9.0]])
    np.testing.assert_allclose(ptmap.power_transform(x), np.sqrt(np.asarray(x) + 1e-6),
                               rtol=1e-6)
    s, q = ptmap.preprocess(x, x[::-1], centre="separate")
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, rtol=1e-6)
    # ~[1, 0] and [0, 1] (up to the 1e-6 offset) centred by their mean are +-[0.5, -0.5]:
    # normalised +-[1, -1] / sqrt(2)
    np.testing.assert_allclose(np.asarray(s), [[0.70710677, -0.70710677],
                                               [-0.70710677, 0.70710677]], atol=2e-4)
    np.testing.assert_allclose(np.asarray(q), np.asarray(s)[::-1], atol=1e-6)
