"""TIM-GD (metaunlab.methods.tim)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metaunlab.methods import tim


def test_tim_closed_form_gradient_matches_autodiff_and_zero_steps_is_the_prototype_softmax():
    rng = np.random.default_rng(4)
    w = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    xs = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    xq = jnp.asarray(rng.normal(size=(9, 5)), jnp.float32)
    targets = jax.nn.one_hot(jnp.asarray([0, 1, 2, 0, 1, 2]), 3)
    kw = dict(temperature=3.0, ce_weight=0.3, marginal_weight=0.7, conditional_weight=0.2)
    closed = jax.jit(functools.partial(tim.tim_grad, **kw))(w, xs, targets, xq)
    auto = jax.jit(jax.grad(functools.partial(tim.tim_loss, **kw)))(w, xs, targets, xq)
    np.testing.assert_allclose(np.asarray(closed), np.asarray(auto), atol=1e-5)
    labels = jnp.asarray([0, 1, 2, 0, 1, 2])
    got = jax.jit(functools.partial(tim.tim_gd, n_way=3, steps=0))(xs, labels, xq)
    xs_n, xq_n = xs / jnp.linalg.norm(xs, axis=1, keepdims=True), xq / jnp.linalg.norm(
        xq, axis=1, keepdims=True)
    protos = np.stack([np.asarray(xs_n)[np.asarray(labels) == c].mean(0) for c in range(3)])
    d2 = ((np.asarray(xq_n)[:, None] - protos[None]) ** 2).sum(-1)
    want = np.exp(-7.5 * d2) / np.exp(-7.5 * d2).sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
