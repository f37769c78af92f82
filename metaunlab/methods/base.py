"""The common interface of the few-shot methods: a `Method` record and a name registry.

Every method is a pure JAX function of one episode on frozen features:

    fn(support_feats (Ns, D), support_labels (Ns,) int in [0, n_way), query_feats (Nq, D),
       n_way) -> query probabilities (Nq, n_way)

`n_way` is static (a Python int: it fixes array shapes); everything else is traced, so a
method is jit-able and vmap-able over a leading episode axis (`Method.batched`). Methods
that centre features with the *base-class* mean (SimpleShot, LaplacianShot) also accept
`base_mean=(D,)` or None; `Method.__call__` passes it only to those.

Hyper-parameters are keyword arguments of each module's function, with the published
defaults; `Method.with_options(**kw)` makes a variant with other values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from metaunlab.sib import l2_normalize

__all__ = ["METHODS", "Method", "class_means", "entropy", "get_method", "l2_normalize",
           "register", "sq_distances"]

ProbsFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
    """A few-shot classifier on frozen features.

    name: registry key and table label; fn: see the module docstring; is_transductive:
    whether the prediction for one query depends on the other (unlabeled) queries;
    paper: the reference, "Authors, title, venue year"; uses_base_mean: whether fn takes a
    `base_mean` keyword.
    """

    name: str
    fn: ProbsFn
    is_transductive: bool
    paper: str
    uses_base_mean: bool = False

    def __call__(self, support_feats: jax.Array, support_labels: jax.Array,
                 query_feats: jax.Array, n_way: int, *,
                 base_mean: jax.Array | None = None) -> jax.Array:
        if self.uses_base_mean:
            return self.fn(support_feats, support_labels, query_feats, n_way,
                           base_mean=base_mean)
        return self.fn(support_feats, support_labels, query_feats, n_way)

    def batched(self, n_way: int, base_mean: jax.Array | None = None) -> ProbsFn:
        """Jitted `(B, Ns, D), (B, Ns), (B, Nq, D) -> (B, Nq, n_way)`; one trace per shape."""
        per_episode = functools.partial(self.__call__, n_way=n_way, base_mean=base_mean)
        return jax.jit(jax.vmap(per_episode))

    def with_options(self, name: str | None = None, **options) -> Method:
        """The same method with other hyper-parameters (keyword arguments of fn)."""
        return dataclasses.replace(self, name=name or self.name,
                                   fn=functools.partial(self.fn, **options))


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


# ---- shared building blocks ----------------------------------------------------------------

def class_means(feats: jax.Array, labels: jax.Array, n_way: int) -> jax.Array:
    """(N, D) per-class mean of `feats` (Ns, D); an absent class gets zeros, not NaN."""
    one_hot = jax.nn.one_hot(labels, n_way, dtype=feats.dtype)
    counts = jnp.maximum(one_hot.sum(axis=0), 1.0)[:, None]
    return (one_hot.T @ feats) / counts


def sq_distances(x: jax.Array, centres: jax.Array) -> jax.Array:
    """(n, N) squared Euclidean distances between rows of x (n, D) and centres (N, D)."""
    d2 = (jnp.sum(x * x, -1)[:, None] - 2.0 * x @ centres.T + jnp.sum(centres * centres, -1))
    return jnp.maximum(d2, 0.0)


def entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
    """Shannon entropy in nats along `axis` (0 log 0 = 0)."""
    return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0),
                    axis=axis)


def centre_and_normalize(support_feats: jax.Array, query_feats: jax.Array,
                         base_mean: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """CL2N (SimpleShot): subtract the base-class mean (else the support mean), then L2."""
    centre = support_feats.mean(axis=0) if base_mean is None else base_mean
    return l2_normalize(support_feats - centre), l2_normalize(query_feats - centre)
