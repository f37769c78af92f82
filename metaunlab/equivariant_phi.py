"""A synthetic-gradient network whose weights do not depend on the number of ways.

The reference phi (`metaunlab.synthetic_gradient`) is an MLP over each query's N logits,
so its weights are as wide as N and a head serves one way count. This phi treats every
(query, class) logit as one entry with channels and mixes the classes only through their
mean (DeepSets layers, Zaheer et al. 2017), so it is equivariant to the order of the
classes and the same weights apply to episodes of any N:

    x0[q, c]  = (z[q, c], softmax(z[q])[c])                 2 channels
    x1        = BN(relu(EqDense(x0)))                        `hidden` channels
    x2        = BN(relu(EqDense(x1)))                        `hidden` channels
    phi[q, c] = EqDense(x2)[q, c]                            1 channel
    EqDense(x)[q, c] = x[q, c] W + mean_c'(x[q, c']) U + b

BatchNorm normalises each class's channel over the queries, with the current query set's
statistics, as the reference normalises each hidden unit over the queries (so phi reads
the unlabeled query set); with `query_mask` over the real queries only.

Shapes: logits (..., Nq, N) -> (..., Nq, N), any N >= 1; leading axes are episodes.

References:
  Zaheer, Kottur, Ravanbakhsh, Poczos, Salakhutdinov, Smola. Deep Sets. NeurIPS 2017.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaunlab.synthetic_gradient import BN_EPS, torch_linear_init

Params = dict[str, Any]

HIDDEN_CHANNELS = 32
INPUT_CHANNELS = 2


class EquivariantDense(nn.Module):
    """x[..., q, c, :] W + mean over c of x[..., q, c, :] U + b, (..., Nq, N, F) -> (..., Nq,
    N, features)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = torch_linear_init(2 * x.shape[-1])  # as the reference phi's layers
        own = self.param("kernel", init, (x.shape[-1], self.features))
        pooled = self.param("pooled_kernel", init, (x.shape[-1], self.features))
        bias = self.param("bias", init, (self.features,))
        return x @ own + x.mean(axis=-2, keepdims=True) @ pooled + bias


class ClassBatchNorm(nn.Module):
    """Each (class, channel) normalised over the queries, with the current query set's
    statistics, and one scale and bias per channel; `weights` (..., Nq, 1, 1): 1 for a
    real query."""

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        if weights is None:
            centred = x - x.mean(axis=-3, keepdims=True)
            variance = jnp.mean(jnp.square(centred), axis=-3, keepdims=True)
        else:
            count = jnp.maximum(jnp.sum(weights, axis=-3, keepdims=True), 1.0)
            centred = x - jnp.sum(weights * x, axis=-3, keepdims=True) / count
            variance = jnp.sum(weights * jnp.square(centred), axis=-3, keepdims=True) / count
        return centred * jax.lax.rsqrt(variance + BN_EPS) * scale + bias


class EquivariantGradientNet(nn.Module):
    """phi: query logits (..., Nq, N) -> synthetic gradient of the loss w.r.t. them, the
    same weights for any N (module docstring)."""

    hidden: int = HIDDEN_CHANNELS

    @nn.compact
    def __call__(self, logits: jax.Array, query_mask: jax.Array | None = None) -> jax.Array:
        weights = None if query_mask is None else query_mask.astype(logits.dtype)[..., None, None]
        x = jnp.stack([logits, jax.nn.softmax(logits, axis=-1)], axis=-1)
        x = ClassBatchNorm(name="bn1")(nn.relu(EquivariantDense(self.hidden, name="dense1")(x)),
                                       weights)
        x = ClassBatchNorm(name="bn2")(nn.relu(EquivariantDense(self.hidden, name="dense2")(x)),
                                       weights)
        return EquivariantDense(1, name="dense3")(x)[..., 0]


def holds(grad_net: Params) -> bool:
    """Whether phi parameters (a head's "grad_net" entry) are this network's, not the
    reference's."""
    return "pooled_kernel" in grad_net.get("dense1", {})


def init(rng: jax.Array) -> Params:
    """Fresh parameters, the same for every way count."""
    return EquivariantGradientNet().init(rng, jnp.zeros((2, 2)))["params"]


def apply(params: Params, logits: jax.Array, query_mask: jax.Array | None = None) -> jax.Array:
    """phi(logits), (..., Nq, N) -> (..., Nq, N).

    Args:
      params: from `init` (or a checkpoint of an equivariant head).
      logits: query logits; any number of ways N.
      query_mask: (..., Nq) bool or None: BatchNorm statistics over the real queries only.

    Returns:
      The estimated gradient of the loss with respect to the logits, (..., Nq, N).
    """
    hidden = params["dense1"]["kernel"].shape[-1]
    return EquivariantGradientNet(hidden).apply({"params": params}, logits, query_mask)
