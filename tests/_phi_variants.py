"""Float64 fixtures of a SIB head and its episodes (tests/test_balanced_readout.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from metaunlab import sib
from metaunlab import synthetic_gradient as phi


def phi_params64(seed, n_way=5):
    """phi in float64, its BatchNorm scales and biases away from 1 and 0 so that no term
    hides."""
    params = phi.init(jax.random.PRNGKey(seed), n_way)
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    for bn in ("bn1", "bn2"):
        width = params[bn]["scale"].shape[0]
        params[bn] = {"scale": jnp.asarray(1 + 0.2 * rng.normal(size=width)),
                      "bias": jnp.asarray(0.1 * rng.normal(size=width))}
    return params


def sib_params64(seed, dim=8):
    """A 5-way SIB head in float64."""
    params = sib.init(jax.random.PRNGKey(seed), 5, dim)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    params["grad_net"] = phi_params64(seed)
    params["classifier"] = {"scale": jnp.float64(7.0), "bias": jnp.float64(0.2)}
    return params


def episode64(seed, n_way=5, n_shot=1, n_query=4, dim=8):
    """One episode of Gaussian clusters in float64: support, labels, queries, labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_way, dim))
    ys = np.repeat(np.arange(n_way), n_shot)
    yq = np.repeat(np.arange(n_way), n_query)
    fs = centres[ys] + 0.5 * rng.normal(size=(ys.size, dim))
    fq = centres[yq] + 0.5 * rng.normal(size=(yq.size, dim))
    return (jnp.asarray(fs), jnp.asarray(ys, jnp.int32), jnp.asarray(fq),
            jnp.asarray(yq, jnp.int32))
