"""The balanced assignment (`synthetic_gradient.balanced_assignment`) that the balanced
readout reads logits out as: Sinkhorn on the real queries, and the matching it finds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import synthetic_gradient as phi


def _sinkhorn_numpy(logits, mask, iterations):
    """The balanced assignment written out in probabilities, one episode."""
    plan = np.exp(logits - logits.max(-1, keepdims=True))
    plan /= plan.sum(-1, keepdims=True)
    real = mask.astype(float)[:, None]
    for _ in range(iterations):
        plan = plan * (real.sum() / logits.shape[-1]) / (real * plan).sum(0, keepdims=True)
        plan /= plan.sum(-1, keepdims=True)
    return plan


@pytest.mark.parametrize("iterations", [1, 3])
def test_the_input_is_sinkhorn_on_the_real_queries(iterations):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 4)) * 3
    mask = np.array([[True] * 6, [True, True, True, False, False, False]])
    with jax.enable_x64(True):
        out = np.asarray(phi.balanced_assignment(jnp.asarray(logits), jnp.asarray(mask),
                                                 iterations=iterations))
        for e in range(2):
            want = _sinkhorn_numpy(logits[e], mask[e], iterations)
            np.testing.assert_allclose(np.exp(out[e]), want, rtol=1e-12)
            # Padded rows change nothing of the real ones.
            alone = phi.balanced_assignment(jnp.asarray(logits[e][mask[e]]),
                                            iterations=iterations)
            np.testing.assert_allclose(out[e][mask[e]], np.asarray(alone), rtol=1e-12)


def test_at_one_query_per_class_many_iterations_find_the_matching():
    """Query 1 prefers class 0, which query 0 claims more strongly; balancing hands it its
    second choice, class 1, while each query's own softmax gives it class 0."""
    logits = jnp.asarray([[6.0, 0.0, 0.0], [4.0, 3.0, 0.0], [0.0, 0.0, 6.0]])
    plan = np.exp(np.asarray(phi.balanced_assignment(logits, iterations=50)))
    assert np.argmax(np.asarray(logits), -1).tolist() == [0, 0, 2]
    assert np.argmax(plan, -1).tolist() == [0, 1, 2]
    np.testing.assert_allclose(plan.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(plan.sum(0), 1.0, rtol=1e-3)  # every class one query's worth
