"""phi, SIB's synthetic-gradient network: query logits -> estimated d(loss)/d(logits).

`SyntheticGradientNet` (Flax) defines the parameters and the forward pass. `apply` computes
the same function with its vector-Jacobian product written out (`jax.custom_vjp`): each
BatchNorm's backward pass is two reductions over the queries (sum(dy) and sum(dy * x_hat))
where autodiff emits several, and with leading episode axes the weight gradients are one
product over every query of every episode. `apply_autodiff` runs the Flax module itself;
the tests hold `apply` and its VJP against it in float64.

Shapes: logits (..., Nq, N) -> (..., Nq, N). Leading axes are episodes; each episode's
BatchNorm uses the statistics of its own Nq queries only. With `query_mask` (..., Nq) only
the real queries of a padded query set enter those statistics (`metaunlab.data.episodes`);
padded rows are normalised with them but influence nothing.

`balanced_assignment` is the Sinkhorn assignment of a query set to equally frequent
classes, which `metaunlab.sib.balanced_readout` reads the logits out as.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = dict[str, Any]

BN_EPS = 1e-5
HIDDEN_MULTIPLIER = 8
# Sinkhorn iterations of `balanced_assignment` by default.
SINKHORN_ITERATIONS = 3


def torch_linear_init(fan_in: int):
    """PyTorch nn.Linear default: weights and biases uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _normalize_over_queries(x: jax.Array,
                            weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(x - mean) / sqrt(var + eps) over axis -2 (the queries), biased variance as torch
    uses in training mode; returns the normalised x and 1 / sqrt(var + eps). `weights`
    (..., Nq, 1), 1 for a real query and 0 for padding: the statistics of the real ones."""
    if weights is None:
        centred = x - x.mean(axis=-2, keepdims=True)
        inv_std = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-2, keepdims=True) + BN_EPS)
        return centred * inv_std, inv_std
    count = _real_count(weights)
    centred = x - jnp.sum(weights * x, axis=-2, keepdims=True) / count
    variance = jnp.sum(weights * jnp.square(centred), axis=-2, keepdims=True) / count
    inv_std = jax.lax.rsqrt(variance + BN_EPS)
    return centred * inv_std, inv_std


def _real_count(weights: jax.Array) -> jax.Array:
    return jnp.maximum(jnp.sum(weights, axis=-2, keepdims=True), 1.0)


def _mask_weights(query_mask: jax.Array, dtype) -> jax.Array:
    """(..., Nq) bool -> (..., Nq, 1) float weights."""
    return query_mask.astype(dtype)[..., None]


class QueryBatchNorm(nn.Module):
    """BatchNorm that always normalises with the statistics of the current batch of queries.

    The reference keeps its synthetic-gradient network in training mode at meta-test time,
    so the BatchNorm layers normalise with the current query set's statistics: this is what
    makes SIB transductive. Running averages are never used, so none are kept.
    """

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        features = x.shape[-1]
        gamma = self.param("scale", nn.initializers.ones, (features,))
        beta = self.param("bias", nn.initializers.zeros, (features,))
        return _normalize_over_queries(x, weights)[0] * gamma + beta


class SyntheticGradientNet(nn.Module):
    """phi: query logits (..., Nq, N) -> synthetic gradient of the loss w.r.t. them.

    Dense(N -> 8N) -> ReLU -> BN -> Dense(8N -> 8N) -> ReLU -> BN -> Dense(8N -> N).
    """

    n_way: int
    hidden_multiplier: int = HIDDEN_MULTIPLIER

    @nn.compact
    def __call__(self, logits: jax.Array, query_mask: jax.Array | None = None) -> jax.Array:
        hidden = self.hidden_multiplier * self.n_way
        weights = None if query_mask is None else _mask_weights(query_mask, logits.dtype)

        def dense(features: int, fan_in: int, name: str) -> nn.Dense:
            init = torch_linear_init(fan_in)
            return nn.Dense(features, kernel_init=init, bias_init=init, name=name)

        x = dense(hidden, self.n_way, "dense1")(logits)
        x = QueryBatchNorm(name="bn1")(nn.relu(x), weights)
        x = dense(hidden, hidden, "dense2")(x)
        x = QueryBatchNorm(name="bn2")(nn.relu(x), weights)
        return dense(self.n_way, hidden, "dense3")(x)


def init(rng: jax.Array, n_way: int) -> Params:
    """Fresh phi parameters for `n_way`-way episodes (PyTorch's default initialisation)."""
    return SyntheticGradientNet(n_way).init(rng, jnp.zeros((2, n_way)))["params"]


def n_way_of(params: Params) -> int:
    """The number of ways phi was built for (static)."""
    return params["dense3"]["kernel"].shape[1]


def balanced_assignment(logits: jax.Array, query_mask: jax.Array | None = None,
                        iterations: int = SINKHORN_ITERATIONS) -> jax.Array:
    """(..., Nq, N) -> (..., Nq, N): the log of the query set's balanced assignment.

    Starting from softmax(z) per query, each Sinkhorn iteration rescales every class's
    column to total n / N over the n real queries, then every query's row back to total 1;
    `iterations` of them. Where the query set holds as many queries of every class, as in a
    balanced episode, this moves each query's probabilities toward the classes that other
    queries do not already claim: at one query per class, toward a matching. Padded rows
    (`query_mask` False) take no share of any class; their own rows are normalised and
    ignored downstream.
    """
    weights = (jnp.ones(logits.shape[:-1] + (1,), logits.dtype) if query_mask is None
               else _mask_weights(query_mask, logits.dtype))
    log_class_total = jnp.log(_real_count(weights) / logits.shape[-1])
    log_plan = jax.nn.log_softmax(logits, axis=-1)
    for _ in range(iterations):
        column = jax.nn.logsumexp(log_plan, axis=-2, b=weights, keepdims=True)
        log_plan = jax.nn.log_softmax(log_plan - column + log_class_total, axis=-1)
    return log_plan


def apply_autodiff(params: Params, logits: jax.Array,
                   query_mask: jax.Array | None = None) -> jax.Array:
    """phi(logits) by the Flax module, differentiated by autodiff (the tests' oracle for
    `apply`)."""
    return SyntheticGradientNet(n_way_of(params)).apply({"params": params}, logits, query_mask)


def _flat_rows(x: jax.Array) -> jax.Array:
    """(..., Nq, F) -> (rows, F): every query of every episode as one row."""
    return x.reshape(-1, x.shape[-1])


def _forward(params: Params, logits: jax.Array, weights: jax.Array | None = None):
    """`SyntheticGradientNet` written out; returns phi(logits) and what the VJP needs."""
    d1, d2, d3 = params["dense1"], params["dense2"], params["dense3"]
    pre1 = logits @ d1["kernel"] + d1["bias"]
    norm1, inv_std1 = _normalize_over_queries(jnp.maximum(pre1, 0.0), weights)
    out1 = norm1 * params["bn1"]["scale"] + params["bn1"]["bias"]
    pre2 = out1 @ d2["kernel"] + d2["bias"]
    norm2, inv_std2 = _normalize_over_queries(jnp.maximum(pre2, 0.0), weights)
    out2 = norm2 * params["bn2"]["scale"] + params["bn2"]["bias"]
    phi = out2 @ d3["kernel"] + d3["bias"]
    return phi, (params, logits, weights, pre1, norm1, inv_std1, out1, pre2, norm2, inv_std2,
                 out2)


def _batchnorm_vjp(d_out: jax.Array, normed: jax.Array, inv_std: jax.Array,
                   gamma: jax.Array,
                   weights: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """VJP of y = gamma * x_hat + beta with x_hat normalised over the queries (axis -2):
    d_x = gamma / std * (d_y - mean(d_y) - x_hat * mean(d_y * x_hat)); returns d_x, d_gamma
    and d_beta, the last two summed over episodes and queries. With `weights` the
    statistics are the real queries', so the two mean terms reach only real inputs,
    w_i / n_real * sum over every output (padded outputs depend on the statistics too)."""
    d_beta = d_out.sum(axis=-2, keepdims=True)
    d_gamma = jnp.sum(d_out * normed, axis=-2, keepdims=True)
    if weights is None:
        count = d_out.shape[-2]
        d_in = (inv_std * gamma) * (d_out - d_beta / count - normed * (d_gamma / count))
    else:
        share = weights / _real_count(weights)
        d_in = (inv_std * gamma) * (d_out - share * (d_beta + normed * d_gamma))
    return d_in, _flat_rows(d_gamma).sum(0), _flat_rows(d_beta).sum(0)


def _dense_vjp(d_out: jax.Array, inputs: jax.Array, kernel: jax.Array):
    """d_inputs and the kernel and bias gradients of `inputs @ kernel + bias`, the latter
    summed over every query of every episode as one product."""
    grads = {"kernel": _flat_rows(inputs).T @ _flat_rows(d_out), "bias": _flat_rows(d_out).sum(0)}
    return d_out @ kernel.T, grads


def _backward(residuals, d_phi: jax.Array):
    params, logits, weights, pre1, norm1, inv_std1, out1, pre2, norm2, inv_std2, out2 = residuals
    grads = {}
    d_out2, grads["dense3"] = _dense_vjp(d_phi, out2, params["dense3"]["kernel"])
    d_relu2, d_gamma2, d_beta2 = _batchnorm_vjp(d_out2, norm2, inv_std2, params["bn2"]["scale"],
                                                weights)
    grads["bn2"] = {"scale": d_gamma2, "bias": d_beta2}
    d_out1, grads["dense2"] = _dense_vjp(jnp.where(pre2 > 0, d_relu2, 0.0), out1,
                                         params["dense2"]["kernel"])
    d_relu1, d_gamma1, d_beta1 = _batchnorm_vjp(d_out1, norm1, inv_std1, params["bn1"]["scale"],
                                                weights)
    grads["bn1"] = {"scale": d_gamma1, "bias": d_beta1}
    d_logits, grads["dense1"] = _dense_vjp(jnp.where(pre1 > 0, d_relu1, 0.0), logits,
                                           params["dense1"]["kernel"])
    return grads, d_logits


@jax.custom_vjp
def _apply_all(params: Params, logits: jax.Array) -> jax.Array:
    return _forward(params, logits)[0]


_apply_all.defvjp(_forward, _backward)


def _backward_masked(residuals, d_phi: jax.Array):
    grads, d_logits = _backward(residuals, d_phi)
    return grads, d_logits, jnp.zeros_like(residuals[2])  # the mask is data, not a parameter


@jax.custom_vjp
def _apply_masked(params: Params, logits: jax.Array, weights: jax.Array) -> jax.Array:
    return _forward(params, logits, weights)[0]


_apply_masked.defvjp(_forward, _backward_masked)


def apply(params: Params, logits: jax.Array, query_mask: jax.Array | None = None) -> jax.Array:
    """phi(logits), (..., Nq, N) -> (..., Nq, N), with the hand-written VJP (module docstring).

    `query_mask` (..., Nq) bool: BatchNorm statistics over the real queries only.
    Reverse mode only: forward-mode transforms (`jax.jvp`, `jax.hessian`) are not defined.
    """
    if query_mask is None:
        return _apply_all(params, logits)
    return _apply_masked(params, logits, _mask_weights(query_mask, logits.dtype))
