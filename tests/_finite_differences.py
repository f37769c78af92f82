"""Finite-difference checks of meta-gradients, shared by the SIB tests. Not a test module."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def assert_gradient_matches_finite_differences(loss, params, rng: np.random.Generator, *,
                                               per_leaf: int = 3, eps: float = 1e-6):
    """jax.grad(loss)(params) against central differences at `per_leaf` random coordinates
    of every parameter array (all of them when smaller), in the precision of `params`
    (float64 for the tolerances here). Returns the gradient."""
    # Compiled once each: the loss is evaluated twice per checked coordinate, and op by op
    # each evaluation would dispatch every op of the K unrolled steps again.
    grads = jax.jit(jax.grad(loss))(params)
    loss = jax.jit(loss)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    grad_leaves = jax.tree_util.tree_leaves(grads)
    for i, (leaf, grad_leaf) in enumerate(zip(leaves, grad_leaves, strict=True)):
        flat = np.asarray(leaf).ravel()
        for j in rng.choice(flat.size, size=min(flat.size, per_leaf), replace=False):
            def shifted(delta, i=i, j=j, flat=flat, leaf=leaf):
                new = flat.copy()
                new[j] += delta
                moved = list(leaves)
                moved[i] = jnp.asarray(new.reshape(np.shape(leaf)))
                return float(loss(jax.tree_util.tree_unflatten(treedef, moved)))

            numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
            analytic = float(np.asarray(grad_leaf).ravel()[j])
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), (i, j)
    return grads
