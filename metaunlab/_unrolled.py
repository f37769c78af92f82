"""Private: SIB's K unrolled synthetic steps, in two exactly equivalent forms.

`direct_logits` updates theta (N, D) itself, as the reference does; `gram_logits` keeps
theta as coefficients in the span of theta0's rows and the normalised queries, so every
step works on the (Nq, Nq) Gram matrix of the queries instead of (Nq, D) products.
`metaunlab.sib.apply` picks one (docs/benchmark.md); tests hold them equal. Both take the
initialization network's theta0 and return the query logits; shapes as in `metaunlab.sib`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metaunlab import synthetic_gradient as phi
from metaunlab.numerics import (
    NORM_EPS,
    cosine_logits,
    l2_normalize,
    logits_of_cosines,
    transpose,
)


def _synthetic_cosine_gradient(params, cos: jax.Array, query_mask: jax.Array | None = None,
                               phi_apply=None) -> jax.Array:
    """phi's estimate of d(loss)/d(cos), (Nq, N): scale * phi(z) with z = scale * (cos +
    bias), the chain rule through the logits, along which both forms step. With
    `query_mask`, phi's BatchNorm sees the real queries only and padded rows are 0, so
    they add nothing to the step. `phi_apply` is phi's apply function (None: the reference
    phi, `metaunlab.synthetic_gradient.apply`)."""
    classifier = params["classifier"]
    logits = logits_of_cosines(classifier, cos)
    phi_apply = phi.apply if phi_apply is None else phi_apply
    gcos = classifier["scale"] * phi_apply(params["grad_net"], logits, query_mask)
    if query_mask is None:
        return gcos
    return jnp.where(query_mask[..., None], gcos, 0.0)


def episode_lr(lr, trailing: int):
    """A step size per episode (an array over the leading axes) broadcast against arrays
    with `trailing` more axes; a Python float as it is."""
    if isinstance(lr, (int, float)):
        return lr
    return jnp.asarray(lr).reshape(jnp.shape(lr) + (1,) * trailing)


def synthetic_step(params, theta: jax.Array, query_hat: jax.Array, *,
                   lr: float, query_mask: jax.Array | None = None, phi_apply=None) -> jax.Array:
    """One synthetic gradient step: theta - lr * (dz/dtheta)^T phi(z), z the query logits.

    `query_hat` are the L2-normalised query features. The vector-Jacobian product through
    the cosine classifier is written out: row c is (sum_q gcos[q,c] fqn[q] - r_c
    theta_hat_c) / n_c, with gcos = scale * phi(z), n_c = ||theta_c|| (clamped at 1e-12
    like F.normalize), theta_hat_c = theta_c / n_c and r_c = sum_q gcos[q,c] cos[q,c]. These
    are autodiff's values (tests check them in float64); r_c comes from the (Nq, N) cosines
    instead of a second pass over the D-dimensional rows, and the meta-gradient then
    differentiates a plain forward graph instead of a VJP.
    """
    norm = jnp.sqrt(jnp.sum(theta * theta, axis=-1))  # (N,)
    clamped = jnp.maximum(norm, NORM_EPS)
    theta_hat = theta / clamped[..., None]
    cos = query_hat @ transpose(theta_hat)  # (Nq, N)
    gcos = _synthetic_cosine_gradient(params, cos, query_mask, phi_apply)
    # Below the clamp normalize() is x / 1e-12: its Jacobian has no radial part.
    radial = jnp.where(norm > NORM_EPS, jnp.sum(gcos * cos, axis=-2), 0.0)
    grad_theta = (transpose(gcos) @ query_hat - radial[..., None] * theta_hat) / clamped[..., None]
    return theta - episode_lr(lr, 2) * grad_theta


def direct_logits(params, theta0: jax.Array, query_feats: jax.Array, *, steps: int,
                  lr, remat: bool = False, query_mask: jax.Array | None = None,
                  phi_apply=None) -> jax.Array:
    """Query logits after `steps` synthetic steps on theta itself. With `remat` each step is
    recomputed in the backward pass (`jax.checkpoint`), so only theta between steps is
    kept."""
    step = functools.partial(synthetic_step, lr=lr, query_mask=query_mask, phi_apply=phi_apply)
    if remat:
        step = jax.checkpoint(step)
    theta = theta0
    query_hat = l2_normalize(query_feats)
    for _ in range(steps):
        theta = step(params, theta, query_hat)
    return cosine_logits(params["classifier"], theta, query_feats)


def gram_logits(params, theta0: jax.Array, query_feats: jax.Array, *, steps: int,
                lr, remat: bool = False, query_mask: jax.Array | None = None,
                phi_apply=None) -> jax.Array:
    """`direct_logits`, computed in the span of the query features.

    Every synthetic step moves row c of theta along (J^T g)_c = (sum_q gcos[q,c] fqn[q]
    - r_c theta_c / n_c) / n_c (`synthetic_step`). So theta_c = a_c theta0_c + sum_q b[q,c]
    fqn[q] at every step, and a step needs only fqn @ theta_c = a_c P0[:,c] + (G b)[:,c] and
    ||theta_c||^2, from the Gram matrix G = fqn fqn^T, P0 = fqn theta0^T and ||theta0_c||^2.
    G and P0 are computed once; the K steps then cost O(Nq^2 N) instead of O(Nq N D). The
    features carry no gradient, so neither does G; the meta-gradient reaches `init.w`
    through P0 and ||theta0||^2.
    """
    classifier = params["classifier"]
    inv_norm = 1.0 / jnp.maximum(jnp.linalg.norm(query_feats, axis=-1), NORM_EPS)  # (Nq,)
    gram = (query_feats @ transpose(query_feats)) * inv_norm[..., :, None] * inv_norm[..., None, :]
    p0 = (query_feats @ transpose(theta0)) * inv_norm[..., None]  # (Nq, N)
    theta0_sq = jnp.sum(theta0 * theta0, axis=-1)  # (N,)

    def cosine(a, b):
        """cos (Nq, N) between the queries and theta's rows; norms n (clamped) and raw."""
        proj = a[..., None, :] * p0 + gram @ b  # fqn @ theta^T
        along_theta0 = a * theta0_sq + jnp.sum(b * p0, axis=-2)  # theta0_c . theta_c
        norm = jnp.sqrt(a * along_theta0 + jnp.sum(b * proj, axis=-2))
        clamped = jnp.maximum(norm, NORM_EPS)
        return proj / clamped[..., None, :], clamped, norm

    lr = episode_lr(lr, 1)  # against the (..., N) rows

    def one_step(params, a, b):
        cos, clamped, norm = cosine(a, b)
        gcos = _synthetic_cosine_gradient(params, cos, query_mask, phi_apply)
        # Below the clamp normalize() is x / 1e-12: its Jacobian has no radial part.
        radial = jnp.where(norm > NORM_EPS,
                           lr * jnp.sum(gcos * cos, axis=-2) / (clamped * clamped), 0.0)
        return (a * (1.0 + radial),
                b * (1.0 + radial)[..., None, :] - (lr / clamped)[..., None, :] * gcos)

    if steps == 0:  # nothing for the Gram matrix to save: theta0's logits
        return cosine_logits(classifier, theta0, query_feats)
    if remat:
        one_step = jax.checkpoint(one_step)
    a = jnp.ones(theta0_sq.shape, theta0.dtype)  # (N,)
    b = jnp.zeros(p0.shape, theta0.dtype)  # (Nq, N)
    for _ in range(steps):
        a, b = one_step(params, a, b)
    cos, _, _ = cosine(a, b)
    return logits_of_cosines(classifier, cos)
