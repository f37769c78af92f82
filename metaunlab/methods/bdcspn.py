"""BD-CSPN: prototype rectification by bias diminishing (transductive).

Liu, Song & Qin, "Prototype Rectification for Few-Shot Learning", ECCV 2020.
On L2-normalised features:

1. cross-class bias: shift every query by xi = mean(support) - mean(query)
   (`query_shift`), so both sets have the same mean;
2. intra-class bias: pseudo-label the shifted queries with the class-mean prototypes P_n
   (nearest by cosine), add them to their predicted class's members S'_n, and replace
   each prototype by the weighted mean  P'_n = sum_i w_i x_i over x_i in S'_n, with
   w_i = softmax_i(eps * cos(x_i, P_n)), eps = 10;
3. classify queries by `scale * cos(query, P'_n)`, scale 10.

Defaults and deviations: the paper adds the top-Z most confident pseudo-labelled queries
of each class; `top_z=None` (default) adds every query with its predicted label (Z >=
number of queries), `top_z=Z` keeps the Z most confident per class. The authors published
no code; easyfsl's implementation, our cross-check, also adds every query. The paper's Z
and its miniImageNet numbers are not checked here (no miniImageNet features on this
machine). Features are normalised before the shift (the paper's order is not restated).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaunlab.methods.base import Method, register
from metaunlab.numerics import class_means, l2_normalize


def query_shift(support: jax.Array, query: jax.Array) -> jax.Array:
    """xi = mean(support) - mean(query): (D,). Adding it to each query aligns the means."""
    return support.mean(axis=0) - query.mean(axis=0)


def rectified_prototypes(support: jax.Array, support_labels: jax.Array, query: jax.Array,
                         n_way: int, *, eps: float = 10.0,
                         top_z: int | None = None) -> jax.Array:
    """(N, D) rectified prototypes from (already normalised and shifted) features."""
    protos = class_means(support, support_labels, n_way)
    cos_q = l2_normalize(query) @ l2_normalize(protos).T  # (Nq, N)
    pseudo = jax.nn.one_hot(jnp.argmax(cos_q, -1), n_way, dtype=query.dtype)  # (Nq, N)
    if top_z is not None:
        confidence = jnp.max(cos_q, -1)
        same_class = pseudo @ pseudo.T  # (Nq, Nq): 1 where both have the same pseudo-label
        better = (confidence[None, :] > confidence[:, None]).astype(query.dtype)
        rank = jnp.sum(same_class * better, axis=1)  # more confident same-class queries
        pseudo = pseudo * (rank < top_z)[:, None]
    members = jnp.concatenate([support, query])  # (Ns + Nq, D)
    membership = jnp.concatenate([jax.nn.one_hot(support_labels, n_way, dtype=query.dtype),
                                  pseudo])  # (Ns + Nq, N)
    cos_m = l2_normalize(members) @ l2_normalize(protos).T  # (Ns + Nq, N)
    logits = jnp.where(membership > 0, eps * cos_m, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=0)  # over the members of each class
    weights = jnp.where(membership > 0, weights, 0.0)  # a class with no member: all -inf
    return weights.T @ members


def bd_cspn(support_feats: jax.Array, support_labels: jax.Array, query_feats: jax.Array,
            n_way: int, *, eps: float = 10.0, scale: float = 10.0,
            top_z: int | None = None) -> jax.Array:
    support, query = l2_normalize(support_feats), l2_normalize(query_feats)
    query = query + query_shift(support, query)
    protos = rectified_prototypes(support, support_labels, query, n_way, eps=eps, top_z=top_z)
    return jax.nn.softmax(scale * (l2_normalize(query) @ l2_normalize(protos).T), axis=-1)


METHOD = register(Method(
    name="bd_cspn", fn=bd_cspn, is_transductive=True,
    paper="Liu et al., Prototype Rectification for Few-Shot Learning, ECCV 2020"))
