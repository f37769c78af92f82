"""An episode's features as the SIB head reads them: the backbone's own (the reference), or,
for heads built with the options, power-transformed and/or centred on the episode's mean.

Both options are parameters of the head (`sib.init(..., power_transform=True,
centering=True)`), meta-learned with the rest, so every evaluation, `predict` and `compare`
apply them without anything else changing. The power transform comes first, since it acts on
the raw (post-ReLU) features; centring then works on unit vectors.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from metaunlab.numerics import l2_normalize, power_transform

__all__ = ["POWER_EXPONENT_INIT", "center_episode", "power_transform_episode",
           "transform_episode"]

# The exponent the meta-learned power transform starts from: PT-MAP's beta, which its
# authors chose for ReLU features (Hu, Gripon, Pateux, ICANN 2021).
POWER_EXPONENT_INIT = 0.5


def power_transform_episode(params: dict[str, Any], support_feats: jax.Array,
                            query_feats: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The features unchanged, or, for parameters with a `power` entry, raised elementwise
    to the meta-learned `exponent` (`numerics.power_transform`, sign kept).

    Why: a ReLU backbone's features are non-negative with a few large coordinates per image;
    a square-root-like transform makes their distribution per coordinate closer to Gaussian
    and lets the many small coordinates count in the cosines. It is elementwise, so it reads
    nothing of the other images: K = 0 stays inductive. On the Omniglot held-out alphabets it
    is what PT-MAP's lead over the balanced assignment alone comes from (docs/omniglot.md,
    "Reading the queries out as a matching").
    """
    if "power" not in params:
        return support_feats, query_feats
    exponent = params["power"]["exponent"]
    return power_transform(support_feats, exponent), power_transform(query_feats, exponent)


def center_episode(params: dict[str, Any], support_feats: jax.Array, query_feats: jax.Array,
                   query_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The features unchanged (the reference), or, for parameters with a `centering` entry
    (`sib.init(..., centering=True)`), L2-normalised and moved by `strength` times the mean
    of the episode's normalised support and (real) query features:

        x -> x / ||x|| - strength * mean over support and queries of (x / ||x||).

    Why: on alphabets far from the training ones the backbone maps every character near
    one common direction (the cosine between different classes' features rises from about
    0.3 to 0.6), so all cosines are compressed together. phi's BatchNorm normalises that
    compression away and steps as boldly as on well-spread features, and its steps then
    gather most queries into a few classes. The mean is over the episode's own images,
    support and queries, which a transductive head reads anyway; the queries weigh in
    with `query_mask`'s real rows only. Shapes as `sib.apply`'s, with leading episode axes.
    """
    if "centering" not in params:
        return support_feats, query_feats
    support_hat, query_hat = l2_normalize(support_feats), l2_normalize(query_feats)
    total = jnp.sum(support_hat, axis=-2)
    count = support_hat.shape[-2]
    if query_mask is None:
        total = total + jnp.sum(query_hat, axis=-2)
        count = count + query_hat.shape[-2]
    else:
        weights = query_mask.astype(query_hat.dtype)[..., None]
        total = total + jnp.sum(weights * query_hat, axis=-2)
        count = count + jnp.sum(weights, axis=-2)
    shift = params["centering"]["strength"] * (total / count)[..., None, :]
    return support_hat - shift, query_hat - shift


def transform_episode(params: dict[str, Any], support_feats: jax.Array,
                      query_feats: jax.Array,
                      query_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`power_transform_episode`, then `center_episode`: what the head reads."""
    support_feats, query_feats = power_transform_episode(params, support_feats, query_feats)
    return center_episode(params, support_feats, query_feats, query_mask)
