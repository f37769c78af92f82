"""The SIB head: initialization network, synthetic-gradient network, K unrolled steps.

Synthetic information bottleneck (Hu et al., "Empirical Bayes Transductive Meta-Learning
with Synthetic Gradients", ICLR 2020). The public functions are pure functions of one
episode that also accept any number of leading episode axes:

    params = sib.init(rng, n_way, feat_dim)
    logits = sib.apply(params, support_feats, support_labels, query_feats, steps=3, lr=1e-3)
    loss, logits = sib.loss(params, support_feats, support_labels, query_feats, query_labels,
                            steps=3, lr=1e-3)

With leading axes the result is that of `jax.vmap` over them, computed as one program:
phi's weight gradients become one product over the queries of all episodes. Each episode's
BatchNorm sees only its own queries (the reference flattens a batch's queries into one
BatchNorm batch, but only ever runs one episode per batch, where the two agree). Query sets
of different sizes are padded to one shape and passed with `query_mask`: the BatchNorm
statistics and the steps then use the real queries only.

The K steps are computed in one of two exactly equivalent ways, with the same signature:
  `apply_direct`  theta (N, D) itself is updated, as the reference does;
  `apply_gram`    theta is kept as coefficients in the span of theta0's rows and the
                  normalised queries, so every step works on the (Nq, Nq) Gram matrix of
                  the queries instead of (Nq, D) products.
`apply` takes the Gram form for a batch of two or more episodes and K > 0, where it is the
faster one on CPU, and the direct form otherwise (docs/benchmark.md has the measurements).

Shapes for one episode (D = feature dimension, N = n_way):
  support_feats  (Ns, D) float     support_labels (Ns,) int in [0, N)
  query_feats    (Nq, D) float     query_labels   (Nq,) int in [0, N)   (loss only)
  theta          (N, D)            logits         (Nq, N)

Parameters are a plain dict pytree, so optax and orbax see ordinary arrays:
  {"init":       {"w": (D,)},                    # initialization network weights, init 1
   "classifier": {"scale": (), "bias": ()},      # cosine classifier, init 10 and 0
   "grad_net":   {...},                          # phi, `metaunlab.synthetic_gradient`
   ["power": {"exponent": ()}],                    # optional (`episode_features`)
   ["centering": {"strength": ()}],                # optional (`center_episode`)
   ["readout": {"log_temperature": ()}]}           # optional (`balanced_readout`)

References:
  Hu, Moreno, Xiao, Shen, Obozinski, Lawrence, Damianou. Empirical Bayes Transductive
  Meta-Learning with Synthetic Gradients. ICLR 2020. https://arxiv.org/abs/2004.12696
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaunlab import synthetic_gradient as phi
from metaunlab.episode_features import (
    POWER_EXPONENT_INIT,
    center_episode,
    transform_episode,
)
from metaunlab.numerics import (
    NORM_EPS,
    class_means,
    cosine_logits,
    cross_entropy,
    l2_normalize,
    logits_of_cosines,
    transpose,
)

Params = dict[str, Any]

__all__ = ["Params", "apply", "apply_direct", "apply_gram", "balanced_readout",
           "center_episode", "grad_matching_loss", "init", "init_theta", "loss",
           "n_way_of", "synthetic_step", "transform_episode"]


def init(rng: jax.Array, n_way: int, feat_dim: int, *, scale: float = 10.0,
         centering: bool = False, power_transform: bool = False,
         balanced_readout: bool = False) -> Params:
    """Fresh SIB parameters for `n_way`-way episodes on `feat_dim`-dimensional features.

    `scale` is the cosine classifier's initial (learned) inverse temperature; 10 is the
    reference's. `centering` adds the meta-learned strength of `center_episode`, 1 at first
    (each episode's features centred on their mean).
    `power_transform` adds the meta-learned exponent of `episode_features.
    power_transform_episode`, `POWER_EXPONENT_INIT` at first.
    `balanced_readout` adds the meta-learned log temperature of `balanced_readout`, 0 at
    first (the head's own logits).
    """
    params = {
        "init": {"w": jnp.ones((feat_dim,), jnp.float32)},
        "classifier": {"scale": jnp.asarray(scale, jnp.float32),
                       "bias": jnp.asarray(0.0, jnp.float32)},
        "grad_net": phi.init(rng, n_way),
    }
    if power_transform:
        params["power"] = {"exponent": jnp.asarray(POWER_EXPONENT_INIT, jnp.float32)}
    if centering:
        params["centering"] = {"strength": jnp.asarray(1.0, jnp.float32)}
    if balanced_readout:
        params["readout"] = {"log_temperature": jnp.asarray(0.0, jnp.float32)}
    return params


def n_way_of(params: Params) -> int:
    """The number of ways the synthetic-gradient network was built for (static)."""
    return phi.n_way_of(params["grad_net"])


def init_theta(init_params: Params, support_feats: jax.Array, support_labels: jax.Array,
               n_way: int) -> jax.Array:
    """Initialization network: `w` times the class means of the L2-normalised support
    features, (Ns, D) -> (N, D)."""
    return class_means(l2_normalize(support_feats), support_labels, n_way) * init_params["w"]


def _synthetic_cosine_gradient(params: Params, cos: jax.Array,
                               query_mask: jax.Array | None = None) -> jax.Array:
    """phi's estimate of d(loss)/d(cos), (Nq, N): scale * phi(z) with z = scale * (cos +
    bias), the chain rule through the logits, along which both forms step. With
    `query_mask`, phi's BatchNorm sees the real queries only and padded rows are 0, so
    they add nothing to the step."""
    classifier = params["classifier"]
    logits = logits_of_cosines(classifier, cos)
    gcos = classifier["scale"] * phi.apply(params["grad_net"], logits, query_mask)
    if query_mask is None:
        return gcos
    return jnp.where(query_mask[..., None], gcos, 0.0)


def _episode_lr(lr, trailing: int):
    """A step size per episode (an array over the leading axes) broadcast against arrays
    with `trailing` more axes; a Python float as it is."""
    if isinstance(lr, (int, float)):
        return lr
    return jnp.asarray(lr).reshape(jnp.shape(lr) + (1,) * trailing)


def synthetic_step(params: Params, theta: jax.Array, query_hat: jax.Array, *,
                   lr: float, query_mask: jax.Array | None = None) -> jax.Array:
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
    gcos = _synthetic_cosine_gradient(params, cos, query_mask)
    # Below the clamp normalize() is x / 1e-12: its Jacobian has no radial part.
    radial = jnp.where(norm > NORM_EPS, jnp.sum(gcos * cos, axis=-2), 0.0)
    grad_theta = (transpose(gcos) @ query_hat - radial[..., None] * theta_hat) / clamped[..., None]
    return theta - _episode_lr(lr, 2) * grad_theta


def _one_episode_at_a_time(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`fn` with a batch of exactly one episode passed without its episode axes (put back
    on the result): XLA:CPU runs products with size-1 batch dimensions as batched kernels,
    which are markedly slower than the plain ones."""
    @functools.wraps(fn)
    def wrapped(params, support_feats, support_labels, query_feats, **kwargs):
        lead = support_feats.shape[:-2]
        if not lead or math.prod(lead) != 1:
            return fn(params, support_feats, support_labels, query_feats, **kwargs)
        if kwargs.get("query_mask") is not None:
            kwargs["query_mask"] = kwargs["query_mask"].reshape(query_feats.shape[-2:-1])
        if not isinstance(kwargs.get("lr", 0.0), (int, float)):
            kwargs["lr"] = jnp.reshape(kwargs["lr"], ())
        out = fn(params, support_feats.reshape(support_feats.shape[-2:]),
                 support_labels.reshape(support_labels.shape[-1:]),
                 query_feats.reshape(query_feats.shape[-2:]), **kwargs)
        return out.reshape(lead + out.shape)

    return wrapped


@_one_episode_at_a_time
def apply_direct(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                 query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
                 remat: bool = False, query_mask: jax.Array | None = None) -> jax.Array:
    """Query logits (..., Nq, N) after K = `steps` synthetic steps on theta itself.

    `steps` is a Python int (it fixes the unroll); `lr` is the synthetic step size eta
    (1e-3 in the published configs). The loop is unrolled and the meta-gradient flows
    through every step, through phi and through the vector-Jacobian product (second order,
    nothing stopped). With `remat` each step is recomputed in the backward pass
    (`jax.checkpoint`), so only theta between steps is kept.
    """
    support_feats, query_feats = transform_episode(params, support_feats, query_feats,
                                                   query_mask)
    step = functools.partial(synthetic_step, lr=lr, query_mask=query_mask)
    if remat:
        step = jax.checkpoint(step)
    theta = init_theta(params["init"], support_feats, support_labels, n_way_of(params))
    query_hat = l2_normalize(query_feats)
    for _ in range(steps):
        theta = step(params, theta, query_hat)
    return cosine_logits(params["classifier"], theta, query_feats)


@_one_episode_at_a_time
def apply_gram(params: Params, support_feats: jax.Array, support_labels: jax.Array,
               query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
               remat: bool = False, query_mask: jax.Array | None = None) -> jax.Array:
    """`apply_direct`, computed in the span of the query features.

    Every synthetic step moves row c of theta along (J^T g)_c = (sum_q gcos[q,c] fqn[q]
    - r_c theta_c / n_c) / n_c (`synthetic_step`). So theta_c = a_c theta0_c + sum_q b[q,c]
    fqn[q] at every step, and a step needs only fqn @ theta_c = a_c P0[:,c] + (G b)[:,c] and
    ||theta_c||^2, from the Gram matrix G = fqn fqn^T, P0 = fqn theta0^T and ||theta0_c||^2.
    G and P0 are computed once; the K steps then cost O(Nq^2 N) instead of O(Nq N D). The
    features carry no gradient, so neither does G; the meta-gradient reaches `init.w`
    through P0 and ||theta0||^2.
    """
    classifier = params["classifier"]
    support_feats, query_feats = transform_episode(params, support_feats, query_feats,
                                                   query_mask)
    inv_norm = 1.0 / jnp.maximum(jnp.linalg.norm(query_feats, axis=-1), NORM_EPS)  # (Nq,)
    theta0 = init_theta(params["init"], support_feats, support_labels, n_way_of(params))
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

    lr = _episode_lr(lr, 1)  # against the (..., N) rows

    def one_step(params, a, b):
        cos, clamped, norm = cosine(a, b)
        gcos = _synthetic_cosine_gradient(params, cos, query_mask)
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


# Sinkhorn iterations of the balanced readout: at one query per class, 10 and 100 gave the
# same accuracy within 0.12 points (docs/omniglot.md, "Reading the queries out as a matching").
READOUT_ITERATIONS = 10


def balanced_readout(params: Params, logits: jax.Array,
                     query_mask: jax.Array | None = None) -> jax.Array:
    """(..., Nq, N) -> (..., Nq, N): the log of the query set's balanced assignment under
    `logits` at the head's meta-learned temperature, a set of logits whose softmax is that
    assignment.

    `READOUT_ITERATIONS` Sinkhorn iterations (`metaunlab.synthetic_gradient.
    balanced_assignment`) give every class an equal share of the real queries and every query
    a total of 1. A query set of one drawing per class is a matching problem; each query's
    own softmax cannot see that two queries claim the same class, the assignment can. It
    assumes, as PT-MAP's does, that the classes are about equally frequent in the query set.
    """
    temperature = jnp.exp(params["readout"]["log_temperature"])
    return phi.balanced_assignment(temperature * logits, query_mask,
                                   iterations=READOUT_ITERATIONS)


def apply(params: Params, support_feats: jax.Array, support_labels: jax.Array,
          query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
          remat: bool = False, query_mask: jax.Array | None = None,
          readout: bool | None = None) -> jax.Array:
    """Query logits (..., Nq, N) after K = `steps` synthetic gradient steps.

    Args:
      params: SIB parameters (`init`).
      support_feats: (..., Ns, D) support features.
      support_labels: (..., Ns) int labels in [0, N).
      query_feats: (..., Nq, D) unlabeled query features; phi's BatchNorm normalises with
        their statistics, episode by episode.
      steps: K, a Python int (it fixes the unroll). 0 is the initialization network alone.
      lr: the synthetic step size eta (1e-3 in the published configs); a float, or an array
        over the leading (episode) axes for one step size per episode.
      remat: recompute each step in the backward pass instead of keeping its intermediates.
      query_mask: (..., Nq) bool or None: the real queries of padded query sets. phi's
        BatchNorm uses their statistics only and padded queries add nothing to the steps,
        so real queries get the logits of the unpadded episode; padded rows are finite.
      readout: whether the logits are read out as the query set's balanced assignment
        (`balanced_readout`; the parameters need a `readout` entry). None: for parameters
        with that entry and K > 0. So K = 0 stays the initialization network alone, which
        never reads the queries, and only the transductive path reads them out together.

    Returns:
      Logits (..., Nq, N), the leading axes those of the inputs. The Gram form
      (`apply_gram`) is taken for two or more episodes, the direct form otherwise.
    """
    if readout is None:
        readout = steps > 0 and "readout" in params
    elif readout and "readout" not in params:
        raise ValueError("readout=True needs SIB parameters with a 'readout' entry "
                         "(sib.init(..., balanced_readout=True)).")
    episodes = math.prod(support_feats.shape[:-2])
    form = apply_gram if steps > 0 and episodes >= 2 else apply_direct
    logits = form(params, support_feats, support_labels, query_feats, steps=steps, lr=lr,
                  remat=remat, query_mask=query_mask)
    return balanced_readout(params, logits, query_mask) if readout else logits


def grad_matching_loss(params: Params, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """mean((phi(z) - dCE/dz)^2) on final query logits z (the reference's `coeffGrad` term).

    The target, the true gradient of the episode's mean query cross-entropy with respect to
    z, (softmax(z) - one_hot(y)) / Nq, is held fixed; phi and z receive gradient, as in the
    reference. With leading episode axes, the mean over all of them.
    """
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    true_grad = (jax.nn.softmax(logits, axis=-1) - one_hot) / logits.shape[-2]
    return jnp.mean(jnp.square(phi.apply(params["grad_net"], logits)
                               - jax.lax.stop_gradient(true_grad)))


def loss(params: Params, support_feats: jax.Array, support_labels: jax.Array,
         query_feats: jax.Array, query_labels: jax.Array, *, steps: int = 3,
         lr: float = 1e-3, grad_coeff: float = 0.0,
         remat: bool = False) -> tuple[jax.Array, jax.Array]:
    """The meta-training loss and the query logits, `(loss, logits)`.

    loss = mean query cross-entropy over every query of every episode
    [+ grad_coeff * `grad_matching_loss` when grad_coeff > 0 (the reference's default is 0)].
    Arguments as in `apply`, plus query_labels (..., Nq).
    """
    logits = apply(params, support_feats, support_labels, query_feats, steps=steps, lr=lr,
                   remat=remat)
    value = cross_entropy(logits, query_labels)
    if grad_coeff:
        value = value + grad_coeff * grad_matching_loss(params, logits, query_labels)
    return value, logits
