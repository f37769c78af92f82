"""The common interface of the few-shot methods: a `Method` record and a name registry.

Every method is a pure JAX function of one episode on frozen features:

    fn(support_feats (Ns, D), support_labels (Ns,) int in [0, n_way), query_feats (Nq, D),
       n_way) -> query probabilities (Nq, n_way)

`n_way` is static (a Python int: it fixes array shapes); everything else is traced, so a
method is jit-able and vmap-able over a leading episode axis (`Method.batched`).

Transductive methods also take `query_mask=(Nq,) bool` or None: the real queries of an
episode whose query set was padded to a common size (`metaunlab.data.episodes.Episodes`).
Padded queries must not change the prediction of any real query (every statistic over the
queries, every neighbour, marginal and BatchNorm uses the real ones only); their own rows
are finite and meaningless. None means every query is real and runs the unmasked
computation itself. Inductive methods predict each query alone, so they never need one and
`Method` does not pass it to them. Methods
that centre features with the *base-class* mean (SimpleShot, LaplacianShot) also accept
`base_mean=(D,)` or None; a trained method (SIB) carries its parameters in `params` and
takes them as `params=`. `Method.__call__` passes each only to the methods that take it.

Hyper-parameters are keyword arguments of each module's function, with the published
defaults; `Method.with_options(**kw)` makes a variant with other values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaunlab.numerics import l2_normalize

__all__ = ["METHODS", "Method", "centre_and_normalize", "get_method", "masked_mean",
           "register"]

ProbsFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
    """A few-shot classifier on frozen features.

    Attributes:
      name: registry key and table label.
      fn: the function of one episode (see the module docstring).
      is_transductive: whether the prediction for one query depends on the other
        (unlabeled) queries.
      paper: the reference, "Authors, title, venue year".
      uses_base_mean: whether fn takes a `base_mean` keyword.
      params: trained parameters passed to fn as `params=` (None for the training-free
        methods).
      episode_axes: whether fn itself accepts leading episode axes (else `batched` vmaps
        it).
    """

    name: str
    fn: ProbsFn
    is_transductive: bool
    paper: str
    uses_base_mean: bool = False
    params: Any = dataclasses.field(default=None, compare=False, repr=False)
    episode_axes: bool = False

    def __call__(self, support_feats: jax.Array, support_labels: jax.Array,
                 query_feats: jax.Array, n_way: int, *,
                 base_mean: jax.Array | None = None, params: Any = None,
                 query_mask: jax.Array | None = None) -> jax.Array:
        """Query probabilities for one episode.

        Args:
          support_feats: (Ns, D) support features.
          support_labels: (Ns,) int labels in [0, n_way).
          query_feats: (Nq, D) query features.
          n_way: the number of classes N (static).
          base_mean: (D,) base-class mean feature, passed only to methods that use one.
          params: trained parameters; None for the method's own.
          query_mask: (Nq,) bool or None, passed only to transductive methods.

        Returns:
          (Nq, N) query probabilities.
        """
        kwargs = _keywords(self.uses_base_mean, base_mean, self.params is not None,
                           self.params if params is None else params,
                           self.is_transductive, query_mask)
        return self.fn(support_feats, support_labels, query_feats, n_way, **kwargs)

    def batched(self, n_way: int, base_mean: jax.Array | None = None) -> ProbsFn:
        """The method on a batch of episodes, jitted.

        Args:
          n_way: the number of classes N.
          base_mean: (D,) base-class mean feature, or None.

        Returns:
          A function `(support_feats (B, Ns, D), support_labels (B, Ns), query_feats
          (B, Nq, D)[, query_mask (B, Nq)]) -> (B, Nq, N)`; one trace per shape (and per
          mask or none).
        """
        return functools.partial(self.predictor(n_way), self.params, base_mean)

    def predictor(self, n_way: int) -> ProbsFn:
        """The batched method with its parameters and base mean as traced inputs.

        Args:
          n_way: the number of classes N.

        Returns:
          A jitted function `(params, base_mean, fs (B, Ns, D), ys (B, Ns), fq (B, Nq, D),
          query_mask=None) -> (B, Nq, N)`: one compilation serves every trained head, data
          set and padding of the same shapes.
        """
        return _predictor(self.fn, n_way, self.uses_base_mean, self.params is not None,
                          self.episode_axes, self.is_transductive)

    def with_options(self, name: str | None = None, **options) -> Method:
        """The same method with other hyper-parameters.

        Args:
          name: the variant's name; None keeps this method's.
          **options: keyword arguments of fn, e.g. `balanced=False` for `pt_map`.

        Returns:
          A new `Method`; this one is unchanged.
        """
        return dataclasses.replace(self, name=name or self.name,
                                   fn=functools.partial(self.fn, **options))


def _keywords(uses_base_mean: bool, base_mean, uses_params: bool, params,
              takes_mask: bool, query_mask) -> dict[str, Any]:
    """The keyword arguments a method function takes, of those given."""
    kwargs = {}
    if uses_base_mean:
        kwargs["base_mean"] = base_mean
    if uses_params:
        kwargs["params"] = params
    if takes_mask and query_mask is not None:
        kwargs["query_mask"] = query_mask
    return kwargs


def _with_mask(fn: ProbsFn, support_feats, support_labels, query_feats, query_mask):
    return fn(support_feats, support_labels, query_feats, query_mask=query_mask)


@functools.cache
def _predictor(fn: ProbsFn, n_way: int, uses_base_mean: bool, uses_params: bool,
               episode_axes: bool, takes_mask: bool) -> ProbsFn:
    def one_batch(params, base_mean, support_feats, support_labels, query_feats,
                  query_mask=None):
        kwargs = _keywords(uses_base_mean, base_mean, uses_params, params, takes_mask,
                           query_mask)
        mask = kwargs.pop("query_mask", None)  # mapped over episodes with the features
        per_episode = functools.partial(fn, n_way=n_way, **kwargs)
        args = (support_feats, support_labels, query_feats)
        if mask is not None:
            per_episode = functools.partial(_with_mask, per_episode)
            args += (mask,)
        return (per_episode if episode_axes else jax.vmap(per_episode))(*args)

    return jax.jit(one_batch)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to `METHODS` under its name.

    Args:
      method: a `Method` whose name is not registered yet.

    Returns:
      `method` itself.

    Raises:
      ValueError: the name is taken.
    """
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """A registered method by name.

    Args:
      name: a key of `METHODS`, e.g. "protonet_cosine", "tim_gd", "pt_map".

    Returns:
      The registered `Method`.

    Raises:
      ValueError: no method has that name; the message lists those that exist.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def masked_mean(x: jax.Array, mask: jax.Array | None, axis: int = 0) -> jax.Array:
    """Mean of x over `axis`, over the rows where `mask` is True (all rows for None)."""
    if mask is None:
        return x.mean(axis=axis)
    weights = jnp.expand_dims(mask.astype(x.dtype), tuple(range(1, x.ndim - axis)))
    return jnp.sum(weights * x, axis=axis) / jnp.maximum(jnp.sum(weights, axis=axis), 1.0)


def centre_and_normalize(support_feats: jax.Array, query_feats: jax.Array,
                         base_mean: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """CL2N (SimpleShot): subtract the base-class mean (else the support mean), then L2."""
    centre = support_feats.mean(axis=0) if base_mean is None else base_mean
    return l2_normalize(support_feats - centre), l2_normalize(query_feats - centre)
