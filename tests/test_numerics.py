"""The shared numerics against their definitions and the ecosystem's own functions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaunlab import numerics


def test_cross_entropy_is_optax_up_to_rounding():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(10 * rng.normal(size=(3, 7, 40)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 40, size=(3, 7)))
    want = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    assert float(numerics.cross_entropy(logits, labels)) == pytest.approx(float(want), rel=1e-6)
    got_grad = jax.grad(numerics.cross_entropy)(logits, labels)
    want_grad = jax.grad(lambda x: optax.softmax_cross_entropy_with_integer_labels(
        x, labels).mean())(logits)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-7)


def test_l2_normalize_clamps_like_torch_and_takes_an_axis():
    x = jnp.asarray([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(numerics.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(numerics.l2_normalize(x, axis=0), [[1.0, 1.0], [0.0, 0.0]])


def test_cosine_logits_and_class_means():
    classifier = {"scale": jnp.float32(10.0), "bias": jnp.float32(0.5)}
    weights = jnp.asarray([[2.0, 0.0], [0.0, 3.0]])
    feats = jnp.asarray([[1.0, 1.0], [0.0, -1.0]])
    cos = np.asarray([[1, 1], [0, -np.sqrt(2)]]) / np.sqrt(2)
    np.testing.assert_allclose(numerics.cosine_logits(classifier, weights, feats),
                               10 * (cos + 0.5), rtol=1e-6)
    means = numerics.class_means(jnp.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                                 jnp.asarray([0, 0, 2]), 3)
    np.testing.assert_allclose(means, [[2.0, 3.0], [0.0, 0.0], [5.0, 6.0]])  # absent: zeros
    batched = numerics.class_means(jnp.ones((4, 3, 2)), jnp.zeros((4, 3), jnp.int32), 2)
    assert batched.shape == (4, 2, 2)


def test_sq_distances_and_entropy():
    x = jnp.asarray([[0.0, 0.0], [1.0, 1.0]])
    centres = jnp.asarray([[1.0, 0.0]])
    np.testing.assert_allclose(numerics.sq_distances(x, centres), [[1.0], [1.0]])
    probs = jnp.asarray([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(numerics.entropy(probs), [np.log(2.0), 0.0], atol=1e-7)
