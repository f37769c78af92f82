"""The SIB head: initialization network, synthetic-gradient network, K unrolled steps.

Synthetic information bottleneck (Hu et al., ICLR 2020), the computation of the authors'
code. Pure functions of one episode that also accept any number of leading episode axes:

    params = sib.init(rng, n_way, feat_dim)
    logits = sib.apply(params, support_feats, support_labels, query_feats, steps=3, lr=1e-3)
    loss, logits = sib.loss(params, support_feats, support_labels, query_feats, query_labels,
                            steps=3, lr=1e-3)

With leading axes the result is that of `jax.vmap` over them, computed as one program:
phi's weight gradients become one product over the queries of all episodes. Each episode's
BatchNorm sees only its own queries (the reference flattens a batch's queries into one
BatchNorm batch, but only ever runs one episode per batch, where the two agree). Query sets
of different sizes are padded to one shape and passed with `query_mask`.

Shapes for one episode (D = feature dimension, N = n_way):
  support_feats  (Ns, D) float     support_labels (Ns,) int in [0, N)
  query_feats    (Nq, D) float     query_labels   (Nq,) int in [0, N)   (loss only)
  theta          (N, D)            logits         (Nq, N)

Parameters are a plain dict pytree, so optax and orbax see ordinary arrays:
  {"init":       {"w": (D,)},                    # initialization network weights, init 1
   "classifier": {"scale": (), "bias": ()},      # cosine classifier, init 10 and 0
   "grad_net":   {...}}                          # phi, `metaunlab.synthetic_gradient`
A head built with parts (`metaunlab.head.Head`) adds their entries; the functions here
read only these three.

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

from metaunlab import _unrolled
from metaunlab import synthetic_gradient as phi
from metaunlab.numerics import class_means, cross_entropy, l2_normalize

Params = dict[str, Any]

__all__ = ["Params", "apply", "grad_matching_loss", "init", "init_theta", "loss", "n_way_of"]


def init(rng: jax.Array, n_way: int, feat_dim: int, *, scale: float = 10.0) -> Params:
    """Fresh SIB parameters for `n_way`-way episodes on `feat_dim`-dimensional features.

    Args:
      rng: the key phi's weights are drawn with (PyTorch's default initialisation).
      n_way: the number of classes per episode; phi's width.
      feat_dim: the feature dimension D.
      scale: the cosine classifier's initial (learned) inverse temperature; 10 in the
        reference.

    Returns:
      The parameter dict above.
    """
    return {
        "init": {"w": jnp.ones((feat_dim,), jnp.float32)},
        "classifier": {"scale": jnp.asarray(scale, jnp.float32),
                       "bias": jnp.asarray(0.0, jnp.float32)},
        "grad_net": phi.init(rng, n_way),
    }


def n_way_of(params: Params) -> int:
    """The number of ways the synthetic-gradient network was built for (static)."""
    return phi.n_way_of(params["grad_net"])


def init_theta(init_params: Params, support_feats: jax.Array, support_labels: jax.Array,
               n_way: int) -> jax.Array:
    """Initialization network: `w` times the class means of the L2-normalised support
    features, (Ns, D) -> (N, D)."""
    return class_means(l2_normalize(support_feats), support_labels, n_way) * init_params["w"]


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
def _apply_form(params: Params, support_feats: jax.Array, support_labels: jax.Array,
                query_feats: jax.Array, *, form: str, steps: int, lr,
                remat: bool = False, query_mask: jax.Array | None = None,
                n_way: int | None = None, phi_apply=None) -> jax.Array:
    """`apply` in the given form: "direct" (theta itself) or "gram" (`metaunlab._unrolled`)."""
    n_way = n_way_of(params) if n_way is None else n_way
    theta0 = init_theta(params["init"], support_feats, support_labels, n_way)
    unroll = _unrolled.gram_logits if form == "gram" else _unrolled.direct_logits
    return unroll(params, theta0, query_feats, steps=steps, lr=lr, remat=remat,
                  query_mask=query_mask, phi_apply=phi_apply)


def apply(params: Params, support_feats: jax.Array, support_labels: jax.Array,
          query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
          remat: bool = False, query_mask: jax.Array | None = None,
          n_way: int | None = None, phi_apply: Callable[..., jax.Array] | None = None
          ) -> jax.Array:
    """Query logits after K = `steps` synthetic gradient steps.

    theta0 = `init_theta`; each step is theta - lr * (dz/dtheta)^T phi(z) with z the cosine
    classifier's query logits; the logits of the last theta are returned. The loop is
    unrolled and the meta-gradient flows through every step, through phi and through the
    vector-Jacobian product (second order, nothing stopped).

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
      n_way: the episode's number of classes; None: the width of the reference phi in
        `params`.
      phi_apply: `(params["grad_net"], logits, query_mask) -> gradient`, phi's apply
        function; None: the reference phi (`metaunlab.synthetic_gradient.apply`). The
        head of `metaunlab.head` passes the one its description names.

    Returns:
      Logits (..., Nq, N), the leading axes those of the inputs. Two or more episodes with
      K > 0 take the Gram form, the faster one on CPU; otherwise the direct form.
    """
    episodes = math.prod(support_feats.shape[:-2])
    form = "gram" if steps > 0 and episodes >= 2 else "direct"
    return _apply_form(params, support_feats, support_labels, query_feats, form=form,
                       steps=steps, lr=lr, remat=remat, query_mask=query_mask, n_way=n_way,
                       phi_apply=phi_apply)


def grad_matching_loss(params: Params, logits: jax.Array, labels: jax.Array,
                       phi_apply: Callable[..., jax.Array] | None = None) -> jax.Array:
    """mean((phi(z) - dCE/dz)^2) on final query logits z (the reference's `coeffGrad` term).

    The target, the true gradient of the episode's mean query cross-entropy with respect to
    z, (softmax(z) - one_hot(y)) / Nq, is held fixed; phi and z receive gradient, as in the
    reference. With leading episode axes, the mean over all of them. `phi_apply` as in
    `apply`.
    """
    phi_apply = phi.apply if phi_apply is None else phi_apply
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    true_grad = (jax.nn.softmax(logits, axis=-1) - one_hot) / logits.shape[-2]
    return jnp.mean(jnp.square(phi_apply(params["grad_net"], logits)
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
