"""The SIB head: initialization network + synthetic-gradient network + K unrolled steps.

Synthetic information bottleneck (Hu et al., "Empirical Bayes Transductive Meta-Learning
with Synthetic Gradients", ICLR 2020). Everything here is a pure function of one episode
that also takes any number of leading episode axes: `apply(params, fs, ys, fq)` with fs of
shape (B, Ns, D) is the same as `jax.vmap` of it over B (tests/test_sib.py checks both in
float64), and `batched_apply` / `batch_loss` call it that way. Batched explicitly, phi's
weight gradients are one product over the queries of all B episodes instead of B small ones
summed (with phi's written-out VJP, meta-training 1.23x faster at 8 episodes per update
and 1.25x at 32 on CPU in one benchmark run; README, Benchmark).

The K steps come in two exactly equivalent forms (`form`):
  "direct"  theta (N, D) itself is updated, as the reference does (`refine_theta`);
  "gram"    theta is kept as coefficients in the span of theta0's rows and the normalised
            query features, and every step works on the (Nq, Nq) Gram matrix of the queries
            (`span_logits`). Same function, same meta-gradient (in float64 the tests find
            logits equal to 1e-12 and meta-gradients to 1e-9, relative); faster for batches
            of episodes on CPU, where the many skinny (Nq, D) products of the direct form
            are slow.

phi (`metaunlab.synthetic_gradient`) is differentiated by its hand-written VJP by default;
`phi_vjp="autodiff"` differentiates its Flax module instead (the same numbers; for a phi
changed by hand).

Shapes for one episode (D = feature dimension, N = n_way), each with optional leading axes:
  support_feats  (Ns, D) float     support_labels (Ns,) int in [0, N)
  query_feats    (Nq, D) float     query_labels   (Nq,) int in [0, N)   (loss only)
  theta          (N, D)            logits         (Nq, N)

Parameters (a plain dict pytree, so optax and orbax see ordinary arrays):
  {"init":       {"w": (D,)},                    # initialization network weights, init 1
   "classifier": {"scale": (), "bias": ()},      # cosine classifier, init 10 and 0
   "grad_net":   {...flax params of synthetic_gradient.SyntheticGradientNet...}}
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaunlab import synthetic_gradient as phi

Params = dict[str, Any]

_NORM_EPS = 1e-12  # matches F.normalize in the reference


def _t(x: jax.Array) -> jax.Array:
    """Transpose of the last two axes (the matrices of a batch of episodes)."""
    return jnp.swapaxes(x, -1, -2)


def l2_normalize(x: jax.Array) -> jax.Array:
    """Divide each row by max(||row||_2, 1e-12), exactly like torch's F.normalize."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, _NORM_EPS)


def logits_of_cosines(classifier: Params, cos: jax.Array) -> jax.Array:
    """The cosine classifier's logits `scale * (cos + bias)` from cosines (Nq, N)."""
    return classifier["scale"] * (cos + classifier["bias"])


def cosine_logits(classifier: Params, theta: jax.Array, feats: jax.Array) -> jax.Array:
    """`scale * (normalize(feats) @ normalize(theta).T + bias)`: (Nq, D), (N, D) -> (Nq, N)."""
    return logits_of_cosines(classifier, l2_normalize(feats) @ _t(l2_normalize(theta)))


def init_theta(init_params: Params, support_feats: jax.Array, support_labels: jax.Array,
               n_way: int) -> jax.Array:
    """Initialization network: per-class mean of L2-normalised support features, times `w`."""
    one_hot = jax.nn.one_hot(support_labels, n_way, dtype=support_feats.dtype)  # (Ns, N)
    class_sums = _t(one_hot) @ l2_normalize(support_feats)  # (N, D)
    # A class absent from the support set would divide by zero; the reference has the same
    # hazard. Clamping keeps the arithmetic finite without changing any well-formed episode.
    counts = jnp.maximum(one_hot.sum(axis=-2), 1.0)[..., None]
    return (class_sums / counts) * init_params["w"]


def n_way_of(params: Params) -> int:
    """The number of ways the synthetic-gradient network was built for (static)."""
    return phi.n_way_of(params["grad_net"])


def init(rng: jax.Array, n_way: int, feat_dim: int) -> Params:
    """Fresh SIB parameters for `n_way`-way episodes on `feat_dim`-dimensional features."""
    return {
        "init": {"w": jnp.ones((feat_dim,), jnp.float32)},
        "classifier": {"scale": jnp.asarray(10.0, jnp.float32),
                       "bias": jnp.asarray(0.0, jnp.float32)},
        "grad_net": phi.init(rng, n_way),
    }


def synthetic_gradient(params: Params, logits: jax.Array, *,
                       phi_vjp: str = "manual") -> jax.Array:
    """phi(logits): the estimated d(loss)/d(logits), from unlabeled query logits only."""
    return phi.apply_with(phi_vjp)(params["grad_net"], logits)


def _synthetic_cosine_gradient(params: Params, cos: jax.Array, phi_vjp: str) -> jax.Array:
    """gcos = scale * phi(z) with z = scale * (cos + bias): phi's estimate of d(loss)/d(cos)
    (Nq, N), the chain rule through the logits, which both SIB forms step along."""
    classifier = params["classifier"]
    logits = logits_of_cosines(classifier, cos)
    return classifier["scale"] * synthetic_gradient(params, logits, phi_vjp=phi_vjp)


def synthetic_step(params: Params, theta: jax.Array, query_hat: jax.Array, *,
                   lr: float, phi_vjp: str = "manual") -> jax.Array:
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
    theta_hat = theta / clamped[..., None]
    cos = query_hat @ _t(theta_hat)  # (Nq, N)
    gcos = _synthetic_cosine_gradient(params, cos, phi_vjp)
    # Below the clamp normalize() is x / 1e-12: its Jacobian has no radial part.
    radial = jnp.where(norm > _NORM_EPS, jnp.sum(gcos * cos, axis=-2), 0.0)
    grad_theta = (_t(gcos) @ query_hat - radial[..., None] * theta_hat) / clamped[..., None]
    return theta - lr * grad_theta


def refine_theta(params: Params, theta: jax.Array, query_feats: jax.Array, *, steps: int,
                 lr: float, remat: bool = False, phi_vjp: str = "manual") -> jax.Array:
    """K synthetic gradient steps (`synthetic_step`) from theta.

    The loop is unrolled (steps is static and small); the meta-gradient flows through every
    step, through phi and through the vector-Jacobian product (second order, nothing stopped).
    With `remat`, each step's intermediates are recomputed in the backward pass instead of
    kept (`jax.checkpoint` per step): only theta between steps is stored.
    """
    step = functools.partial(synthetic_step, lr=lr, phi_vjp=phi_vjp)
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
                remat: bool = False, phi_vjp: str = "manual") -> jax.Array:
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
    gram = (query_feats @ _t(query_feats)) * inv_norm[..., :, None] * inv_norm[..., None, :]
    p0 = (query_feats @ _t(theta0)) * inv_norm[..., None]  # (Nq, N)
    theta0_sq = jnp.sum(theta0 * theta0, axis=-1)  # (N,)

    def cosine(a, b):
        """cos (Nq, N) between the queries and theta's rows; norms n (clamped) and raw."""
        proj = a[..., None, :] * p0 + gram @ b  # fqn @ theta^T
        along_theta0 = a * theta0_sq + jnp.sum(b * p0, axis=-2)  # theta0_c . theta_c
        norm = jnp.sqrt(a * along_theta0 + jnp.sum(b * proj, axis=-2))
        clamped = jnp.maximum(norm, _NORM_EPS)
        return proj / clamped[..., None, :], clamped, norm

    def one_step(params, a, b):
        cos, clamped, norm = cosine(a, b)
        gcos = _synthetic_cosine_gradient(params, cos, phi_vjp)
        # Below the clamp normalize() is x / 1e-12: its Jacobian has no radial part.
        radial = jnp.where(norm > _NORM_EPS,
                           lr * jnp.sum(gcos * cos, axis=-2) / (clamped * clamped), 0.0)
        return (a * (1.0 + radial),
                b * (1.0 + radial)[..., None, :] - (lr / clamped)[..., None, :] * gcos)

    if remat:
        one_step = jax.checkpoint(one_step)
    a = jnp.ones(theta0_sq.shape, theta0.dtype)  # (N,)
    b = jnp.zeros(p0.shape, theta0.dtype)  # (Nq, N)
    for _ in range(steps):
        a, b = one_step(params, a, b)
    cos, _, _ = cosine(a, b)
    return logits_of_cosines(classifier, cos)


def adapted_theta(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                  query_feats: jax.Array, *, steps: int, lr: float,
                  remat: bool = False, phi_vjp: str = "manual") -> jax.Array:
    """theta_K for one episode: initialization network, then K synthetic gradient steps."""
    theta0 = init_theta(params["init"], support_feats, support_labels, n_way_of(params))
    return refine_theta(params, theta0, query_feats, steps=steps, lr=lr, remat=remat,
                        phi_vjp=phi_vjp)


def apply(params: Params, support_feats: jax.Array, support_labels: jax.Array,
          query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
          remat: bool = False, form: str = "direct", phi_vjp: str = "manual") -> jax.Array:
    """Query logits (Nq, N) for one episode after `steps` synthetic gradient steps.

    `steps` must be a Python int (it fixes the unroll); `lr` is the synthetic step size eta
    (1e-3 in the published configs); `remat` trades compute for memory in the meta-gradient
    (see `refine_theta`); `form` is "direct" or "gram" (module docstring; same result);
    `phi_vjp` is "manual" or "autodiff" (module docstring; same result). With leading
    episode axes on the inputs, the logits get the same leading axes (`batched_apply`).
    """
    # With no steps there is nothing for the Gram matrix to save: both forms are theta0's logits.
    if resolve_form(form, 1) == "gram" and steps > 0:
        return span_logits(params, support_feats, support_labels, query_feats, steps=steps,
                           lr=lr, remat=remat, phi_vjp=phi_vjp)
    theta = adapted_theta(params, support_feats, support_labels, query_feats, steps=steps,
                          lr=lr, remat=remat, phi_vjp=phi_vjp)
    return cosine_logits(params["classifier"], theta, query_feats)


def over_episodes(per_episode: Callable[..., jax.Array], support_feats: jax.Array,
                  support_labels: jax.Array, query_feats: jax.Array) -> jax.Array:
    """`per_episode(support_feats, support_labels, query_feats)` on arrays with a leading
    episode axis, with a batch of one episode passed without that axis (and the axis put
    back on the result): XLA:CPU runs products with a size-1 batch dimension as batched
    kernels, and one-episode meta-training steps were 1.4x slower that way (measured)."""
    if support_feats.shape[0] == 1:
        return per_episode(support_feats[0], support_labels[0], query_feats[0])[None]
    return per_episode(support_feats, support_labels, query_feats)


def batched_apply(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                  query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
                  remat: bool = False, form: str = "auto",
                  phi_vjp: str = "manual") -> jax.Array:
    """`apply` over a leading episode axis: (B, Ns, D), (B, Ns), (B, Nq, D) -> (B, Nq, N).

    The same as `jax.vmap(apply)` (module docstring). Each episode's BatchNorm sees only its
    own queries (the reference flattens all queries of a batch into one BatchNorm batch but
    is only ever run with B = 1, where both agree). `form="auto"` picks by the number of
    episodes given (`resolve_form`).
    """
    form = resolve_form(form, support_feats.shape[0])
    per_episode = functools.partial(apply, params, steps=steps, lr=lr, remat=remat, form=form,
                                    phi_vjp=phi_vjp)
    return over_episodes(per_episode, support_feats, support_labels, query_feats)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over all leading axes."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return -picked.mean()


def grad_matching_loss(params: Params, logits: jax.Array, labels: jax.Array, *,
                       phi_vjp: str = "manual") -> jax.Array:
    """mean((phi(z) - dCE/dz)^2) on one episode's final query logits z (reference `coeffGrad`).

    The target, the true gradient of the episode's mean query cross-entropy w.r.t. z,
    (softmax(z) - one_hot(y)) / Nq, is held fixed; phi and z themselves receive gradient, as
    in the reference. With leading episode axes, the mean over all of them.
    """
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    true_grad = (jax.nn.softmax(logits, axis=-1) - one_hot) / logits.shape[-2]
    return jnp.mean(jnp.square(synthetic_gradient(params, logits, phi_vjp=phi_vjp)
                               - jax.lax.stop_gradient(true_grad)))


def episode_loss(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                 query_feats: jax.Array, query_labels: jax.Array, *, steps: int, lr: float,
                 grad_coeff: float = 0.0, remat: bool = False, form: str = "direct",
                 phi_vjp: str = "manual") -> tuple[jax.Array, jax.Array]:
    """Meta-training loss of one episode and its query logits.

    loss = mean query cross-entropy [+ grad_coeff * grad_matching_loss when grad_coeff > 0].
    With leading episode axes, the mean over the episodes (all have Nq queries).
    """
    logits = apply(params, support_feats, support_labels, query_feats, steps=steps, lr=lr,
                   remat=remat, form=form, phi_vjp=phi_vjp)
    return _loss_of_logits(params, logits, query_labels, grad_coeff, phi_vjp), logits


def _loss_of_logits(params: Params, logits: jax.Array, query_labels: jax.Array,
                    grad_coeff: float, phi_vjp: str) -> jax.Array:
    loss = cross_entropy(logits, query_labels)
    if grad_coeff:
        loss = loss + grad_coeff * grad_matching_loss(params, logits, query_labels,
                                                      phi_vjp=phi_vjp)
    return loss


def batch_loss(params: Params, support_feats: jax.Array, support_labels: jax.Array,
               query_feats: jax.Array, query_labels: jax.Array, *, steps: int, lr: float,
               grad_coeff: float = 0.0, remat: bool = False, form: str = "auto",
               phi_vjp: str = "manual") -> tuple[jax.Array, jax.Array]:
    """`episode_loss` averaged over a leading batch of episodes; returns (loss, logits).

    The same as the mean of `jax.vmap(episode_loss)` (module docstring). `form="auto"` picks
    by the number of episodes given (`resolve_form`)."""
    logits = batched_apply(params, support_feats, support_labels, query_feats, steps=steps,
                           lr=lr, remat=remat, form=form, phi_vjp=phi_vjp)
    return _loss_of_logits(params, logits, query_labels, grad_coeff, phi_vjp), logits
