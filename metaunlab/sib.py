"""The SIB head: initialization network + synthetic-gradient network + K unrolled steps.

Synthetic information bottleneck (Hu et al., "Empirical Bayes Transductive Meta-Learning
with Synthetic Gradients", ICLR 2020). Everything here is a pure function of one episode;
episode batches are handled by `jax.vmap` (see `batched_apply`).

The K steps come in two exactly equivalent forms (`form`):
  "direct"  theta (N, D) itself is updated, as the reference does (`refine_theta`);
  "gram"    theta is kept as coefficients in the span of theta0's rows and the normalised
            query features, and every step works on the (Nq, Nq) Gram matrix of the queries
            (`span_logits`). Same function, same meta-gradient (in float64 the tests find
            logits equal to 1e-12 and meta-gradients to 1e-9, relative); faster for batches
            of episodes on CPU, where the many skinny (Nq, D) products of the direct form
            are slow.

Shapes for one episode (D = feature dimension, N = n_way):
  support_feats  (Ns, D) float     support_labels (Ns,) int in [0, N)
  query_feats    (Nq, D) float     query_labels   (Nq,) int in [0, N)   (loss only)
  theta          (N, D)            logits         (Nq, N)

Parameters (a plain dict pytree, so optax and orbax see ordinary arrays):
  {"init":       {"w": (D,)},                    # initialization network weights, init 1
   "classifier": {"scale": (), "bias": ()},      # cosine classifier, init 10 and 0
   "grad_net":   {...flax params of SyntheticGradientNet...}}
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = dict[str, Any]

_NORM_EPS = 1e-12  # matches F.normalize in the reference
_BN_EPS = 1e-5


def l2_normalize(x: jax.Array) -> jax.Array:
    """Divide each row by max(||row||_2, 1e-12), exactly like torch's F.normalize."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, _NORM_EPS)


def logits_of_cosines(classifier: Params, cos: jax.Array) -> jax.Array:
    """The cosine classifier's logits `scale * (cos + bias)` from cosines (Nq, N)."""
    return classifier["scale"] * (cos + classifier["bias"])


def cosine_logits(classifier: Params, theta: jax.Array, feats: jax.Array) -> jax.Array:
    """`scale * (normalize(feats) @ normalize(theta).T + bias)`: (Nq, D), (N, D) -> (Nq, N)."""
    return logits_of_cosines(classifier, l2_normalize(feats) @ l2_normalize(theta).T)


def init_theta(init_params: Params, support_feats: jax.Array, support_labels: jax.Array,
               n_way: int) -> jax.Array:
    """Initialization network: per-class mean of L2-normalised support features, times `w`."""
    one_hot = jax.nn.one_hot(support_labels, n_way, dtype=support_feats.dtype)  # (Ns, N)
    class_sums = one_hot.T @ l2_normalize(support_feats)  # (N, D)
    # A class absent from the support set would divide by zero; the reference has the same
    # hazard. Clamping keeps the arithmetic finite without changing any well-formed episode.
    counts = jnp.maximum(one_hot.sum(axis=0), 1.0)[:, None]
    return (class_sums / counts) * init_params["w"]


def _torch_linear_init(fan_in: int):
    """PyTorch nn.Linear default: weights and biases uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class QueryBatchNorm(nn.Module):
    """BatchNorm that always normalises with the statistics of the current batch.

    The reference keeps its synthetic-gradient network in training mode at meta-test time,
    so the BatchNorm layers normalise with the current query set's statistics: this is what
    makes SIB transductive. Running averages are never used, so none are kept.
    Variance is the biased one, as torch uses for normalisation in training mode.
    """

    epsilon: float = _BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        gamma = self.param("scale", nn.initializers.ones, (features,))
        beta = self.param("bias", nn.initializers.zeros, (features,))
        mean = x.mean(axis=0)
        var = jnp.mean(jnp.square(x - mean), axis=0)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * gamma + beta


class SyntheticGradientNet(nn.Module):
    """phi: query logits (Nq, N) -> synthetic gradient of the loss w.r.t. those logits (Nq, N).

    Dense(N -> 8N) -> ReLU -> BN -> Dense(8N -> 8N) -> ReLU -> BN -> Dense(8N -> N).
    """

    n_way: int
    hidden_multiplier: int = 8

    @nn.compact
    def __call__(self, logits: jax.Array) -> jax.Array:
        hidden = self.hidden_multiplier * self.n_way

        def dense(features: int, fan_in: int, name: str) -> nn.Dense:
            init = _torch_linear_init(fan_in)
            return nn.Dense(features, kernel_init=init, bias_init=init, name=name)

        x = dense(hidden, self.n_way, "dense1")(logits)
        x = QueryBatchNorm(name="bn1")(nn.relu(x))
        x = dense(hidden, hidden, "dense2")(x)
        x = QueryBatchNorm(name="bn2")(nn.relu(x))
        return dense(self.n_way, hidden, "dense3")(x)


def n_way_of(params: Params) -> int:
    """The number of ways the synthetic-gradient network was built for (static)."""
    return params["grad_net"]["dense1"]["kernel"].shape[0]


def init(rng: jax.Array, n_way: int, feat_dim: int) -> Params:
    """Fresh SIB parameters for `n_way`-way episodes on `feat_dim`-dimensional features."""
    grad_net = SyntheticGradientNet(n_way).init(rng, jnp.zeros((2, n_way)))["params"]
    return {
        "init": {"w": jnp.ones((feat_dim,), jnp.float32)},
        "classifier": {"scale": jnp.asarray(10.0, jnp.float32),
                       "bias": jnp.asarray(0.0, jnp.float32)},
        "grad_net": grad_net,
    }


def synthetic_gradient(params: Params, logits: jax.Array) -> jax.Array:
    """phi(logits): the estimated d(loss)/d(logits), from unlabeled query logits only."""
    return SyntheticGradientNet(n_way_of(params)).apply({"params": params["grad_net"]}, logits)


def _synthetic_cosine_gradient(params: Params, cos: jax.Array) -> jax.Array:
    """gcos = scale * phi(z) with z = scale * (cos + bias): phi's estimate of d(loss)/d(cos)
    (Nq, N), the chain rule through the logits, which both SIB forms step along."""
    classifier = params["classifier"]
    return classifier["scale"] * synthetic_gradient(params, logits_of_cosines(classifier, cos))


def synthetic_step(params: Params, theta: jax.Array, query_hat: jax.Array, *,
                   lr: float) -> jax.Array:
    """One synthetic gradient step: theta - lr * (dz/dtheta)^T phi(z), z = query logits.

    `query_hat` are the L2-normalised query features. The vector-Jacobian product through
    the cosine classifier is written out rather than taken with `jax.vjp`: row c of it is
    (sum_q gcos[q,c] fqn[q] - r_c theta_hat_c) / n_c, with gcos = scale * phi(z), n_c the
    norm of theta_c (clamped at 1e-12 like F.normalize), theta_hat_c = theta_c / n_c and
    r_c = sum_q gcos[q,c] cos[q,c]. The same values as autodiff (tests/test_sib.py checks
    them in float64), but r_c comes from the (Nq, N) cosines instead of a second pass over
    the D-dimensional rows, and the meta-gradient then differentiates a plain forward graph
    instead of a VJP: one-episode meta-training steps on CPU 1.28x faster in one
    `python -m experiments.benchmark` run (1.11x at 8 episodes), 1.25x in the median of
    five runs interleaved with the autodiff form (README, Benchmark).
    """
    norm = jnp.sqrt(jnp.sum(theta * theta, axis=-1))  # (N,)
    clamped = jnp.maximum(norm, _NORM_EPS)
    theta_hat = theta / clamped[:, None]
    cos = query_hat @ theta_hat.T  # (Nq, N)
    gcos = _synthetic_cosine_gradient(params, cos)
    # Below the clamp normalize() is x / 1e-12: its Jacobian has no radial part.
    radial = jnp.where(norm > _NORM_EPS, jnp.sum(gcos * cos, axis=0), 0.0)
    grad_theta = (gcos.T @ query_hat - radial[:, None] * theta_hat) / clamped[:, None]
    return theta - lr * grad_theta


def refine_theta(params: Params, theta: jax.Array, query_feats: jax.Array, *, steps: int,
                 lr: float, remat: bool = False) -> jax.Array:
    """K synthetic gradient steps (`synthetic_step`) from theta.

    The loop is unrolled (steps is static and small); the meta-gradient flows through every
    step, through phi and through the vector-Jacobian product (second order, nothing stopped).
    With `remat`, each step's intermediates are recomputed in the backward pass instead of
    kept (`jax.checkpoint` per step): only theta between steps is stored.
    """
    step = functools.partial(synthetic_step, lr=lr)
    if remat:
        step = jax.checkpoint(step)
    query_hat = l2_normalize(query_feats)
    for _ in range(steps):
        theta = step(params, theta, query_hat)
    return theta


FORMS = ("direct", "gram")


def resolve_form(form: str, episodes_per_device: int) -> str:
    """`form`, with "auto" resolved: "gram" for two or more episodes per device, "direct" for
    one (where the Gram matrix, Nq x Nq x D multiply-adds, costs more than it saves; measured
    with `python -m experiments.benchmark` on a 2-core CPU)."""
    if form == "auto":
        return "gram" if episodes_per_device >= 2 else "direct"
    if form not in FORMS:
        raise ValueError(f"unknown SIB form {form!r}; use 'auto', 'direct' or 'gram'.")
    return form


def span_logits(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                query_feats: jax.Array, *, steps: int, lr: float,
                remat: bool = False) -> jax.Array:
    """`apply(..., form="direct")` computed in the span of the query features.

    Every synthetic step moves row c of theta along (J^T g)_c = (sum_q gcos[q,c] fqn[q]
    - r_c theta_c / n_c) / n_c, with fqn the normalised queries, n_c = ||theta_c|| (clamped
    at 1e-12 like F.normalize), gcos = scale * phi(z) and r_c = sum_q gcos[q,c] cos[q,c].
    So theta_c = a_c theta0_c + sum_q b[q,c] fqn[q] at every step, and all the step needs
    is fqn @ theta_c = a_c P0[:,c] + (G b)[:,c] and ||theta_c||^2, from the Gram matrix
    G = fqn fqn^T, P0 = fqn theta0^T and ||theta0_c||^2. G and P0 are computed once; the K
    steps then cost O(Nq^2 N) instead of O(Nq N D). The features carry no gradient, so G
    needs none either; the meta-gradient reaches `init.w` through P0 and ||theta0||^2.
    """
    classifier = params["classifier"]
    inv_norm = 1.0 / jnp.maximum(jnp.linalg.norm(query_feats, axis=-1), _NORM_EPS)  # (Nq,)
    theta0 = init_theta(params["init"], support_feats, support_labels, n_way_of(params))
    gram = (query_feats @ query_feats.T) * inv_norm[:, None] * inv_norm[None, :]
    p0 = (query_feats @ theta0.T) * inv_norm[:, None]  # (Nq, N)
    theta0_sq = jnp.sum(theta0 * theta0, axis=-1)  # (N,)

    def cosine(a, b):
        """cos (Nq, N) between the queries and theta's rows; norms n (clamped) and raw."""
        proj = a * p0 + gram @ b  # fqn @ theta^T
        along_theta0 = a * theta0_sq + jnp.sum(b * p0, axis=0)  # theta0_c . theta_c
        norm = jnp.sqrt(a * along_theta0 + jnp.sum(b * proj, axis=0))
        clamped = jnp.maximum(norm, _NORM_EPS)
        return proj / clamped, clamped, norm

    def one_step(params, a, b):
        cos, clamped, norm = cosine(a, b)
        gcos = _synthetic_cosine_gradient(params, cos)
        # Below the clamp normalize() is x / 1e-12: its Jacobian has no radial part.
        radial = jnp.where(norm > _NORM_EPS,
                           lr * jnp.sum(gcos * cos, axis=0) / (clamped * clamped), 0.0)
        return a * (1.0 + radial), b * (1.0 + radial) - (lr / clamped) * gcos

    if remat:
        one_step = jax.checkpoint(one_step)
    n_way = theta0.shape[0]
    a = jnp.ones((n_way,), theta0.dtype)
    b = jnp.zeros((query_feats.shape[0], n_way), theta0.dtype)
    for _ in range(steps):
        a, b = one_step(params, a, b)
    cos, _, _ = cosine(a, b)
    return logits_of_cosines(classifier, cos)


def adapted_theta(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                  query_feats: jax.Array, *, steps: int, lr: float,
                  remat: bool = False) -> jax.Array:
    """theta_K for one episode: initialization network, then K synthetic gradient steps."""
    theta0 = init_theta(params["init"], support_feats, support_labels, n_way_of(params))
    return refine_theta(params, theta0, query_feats, steps=steps, lr=lr, remat=remat)


def apply(params: Params, support_feats: jax.Array, support_labels: jax.Array,
          query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
          remat: bool = False, form: str = "direct") -> jax.Array:
    """Query logits (Nq, N) for one episode after `steps` synthetic gradient steps.

    `steps` must be a Python int (it fixes the unroll); `lr` is the synthetic step size eta
    (1e-3 in the published configs); `remat` trades compute for memory in the meta-gradient
    (see `refine_theta`); `form` is "direct" or "gram" (module docstring; same result).
    For a batch of episodes use `batched_apply` or vmap.
    """
    # With no steps there is nothing for the Gram matrix to save: both forms are theta0's logits.
    if resolve_form(form, 1) == "gram" and steps > 0:
        return span_logits(params, support_feats, support_labels, query_feats, steps=steps,
                           lr=lr, remat=remat)
    theta = adapted_theta(params, support_feats, support_labels, query_feats, steps=steps,
                          lr=lr, remat=remat)
    return cosine_logits(params["classifier"], theta, query_feats)


def batched_apply(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                  query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
                  form: str = "auto") -> jax.Array:
    """`apply` vmapped over a leading episode axis: (B, Ns, D), (B, Ns), (B, Nq, D) -> (B, Nq, N).

    Each episode's BatchNorm sees only its own queries (the reference flattens all queries of
    a batch into one BatchNorm batch but is only ever run with B = 1, where both agree).
    `form="auto"` picks by the number of episodes given (`resolve_form`).
    """
    form = resolve_form(form, support_feats.shape[0])
    per_episode = functools.partial(apply, steps=steps, lr=lr, form=form)
    return jax.vmap(per_episode, in_axes=(None, 0, 0, 0))(
        params, support_feats, support_labels, query_feats)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over all leading axes."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return -picked.mean()


def grad_matching_loss(params: Params, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """mean((phi(z) - dCE/dz)^2) on one episode's final query logits z (reference `coeffGrad`).

    The target, the true gradient of the mean query cross-entropy w.r.t. z, is held fixed; phi
    and z themselves receive gradient, as in the reference.
    """
    true_grad = jax.grad(cross_entropy)(logits, labels)
    return jnp.mean(jnp.square(synthetic_gradient(params, logits)
                               - jax.lax.stop_gradient(true_grad)))


def episode_loss(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                 query_feats: jax.Array, query_labels: jax.Array, *, steps: int, lr: float,
                 grad_coeff: float = 0.0, remat: bool = False,
                 form: str = "direct") -> tuple[jax.Array, jax.Array]:
    """Meta-training loss of one episode and its query logits.

    loss = mean query cross-entropy [+ grad_coeff * grad_matching_loss when grad_coeff > 0].
    """
    logits = apply(params, support_feats, support_labels, query_feats, steps=steps, lr=lr,
                   remat=remat, form=form)
    loss = cross_entropy(logits, query_labels)
    if grad_coeff:
        loss = loss + grad_coeff * grad_matching_loss(params, logits, query_labels)
    return loss, logits


def batch_loss(params: Params, support_feats: jax.Array, support_labels: jax.Array,
               query_feats: jax.Array, query_labels: jax.Array, *, steps: int, lr: float,
               grad_coeff: float = 0.0, remat: bool = False,
               form: str = "auto") -> tuple[jax.Array, jax.Array]:
    """`episode_loss` averaged over a leading batch of episodes; returns (loss, logits).

    `form="auto"` picks by the number of episodes given (`resolve_form`)."""
    form = resolve_form(form, support_feats.shape[0])
    per_episode = functools.partial(episode_loss, steps=steps, lr=lr, grad_coeff=grad_coeff,
                                    remat=remat, form=form)
    losses, logits = jax.vmap(per_episode, in_axes=(None, 0, 0, 0, 0))(
        params, support_feats, support_labels, query_feats, query_labels)
    return losses.mean(), logits
