"""The parts a SIB head can be built with, each a small component with one interface.

A `FeatureTransform` maps an episode's (support, query) features to the features the head
reads; a `Readout` maps the head's query logits to the logits it reports. Each part owns
its parameters, an entry of the head's parameter dict under `key`, meta-learned with the
rest. `metaunlab.head.Head` chains them around the reference head (`metaunlab.sib`), the
way optax chains gradient transformations: transforms in order, then the head, then the
readout.

Parts:
  "power"      `power_transform`: features raised elementwise to a learned exponent.
  "centering"  `centering`: features normalised and centred on the episode's mean.
  "balanced"   `balanced_readout`: logits read out as the query set's balanced assignment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaunlab.numerics import l2_normalize
from metaunlab.numerics import power_transform as elementwise_power
from metaunlab.synthetic_gradient import balanced_assignment

Params = dict[str, Any]

__all__ = ["POWER_EXPONENT_INIT", "READOUTS", "READOUT_ITERATIONS", "TRANSFORMS",
           "FeatureTransform", "Readout", "balanced_readout", "centering", "power_transform"]

# PT-MAP's beta, chosen by its authors for ReLU features (Hu, Gripon, Pateux, ICANN 2021).
POWER_EXPONENT_INIT = 0.5
# Sinkhorn iterations of the balanced readout (docs/omniglot.md: 10 and 100 agree).
READOUT_ITERATIONS = 10


class FeatureTransform(NamedTuple):
    """An episode feature transform.

    Attributes:
      key: its parameters' entry in the head's parameter dict.
      init: () -> its fresh parameters.
      apply: (params, support (..., Ns, D), query (..., Nq, D), query_mask (..., Nq) or
        None) -> (support, query), the features the head reads.
      reads_queries: whether it reads the episode's other images (then K = 0 is
        transductive).
      description: what it does and assumes, in words.
    """

    key: str
    init: Callable[[], Params]
    apply: Callable[..., tuple[jax.Array, jax.Array]]
    reads_queries: bool
    description: str


class Readout(NamedTuple):
    """A readout of the head's query logits.

    Attributes:
      key: its parameters' entry in the head's parameter dict.
      init: () -> its fresh parameters.
      apply: (params, logits (..., Nq, N), query_mask (..., Nq) or None) -> logits.
      reads_queries: whether it reads the other queries (then K = 0 is transductive).
      description: what it does and assumes, in words.
    """

    key: str
    init: Callable[[], Params]
    apply: Callable[..., jax.Array]
    reads_queries: bool
    description: str


def power_transform() -> FeatureTransform:
    """Features raised elementwise to a meta-learned exponent (sign kept), from
    `POWER_EXPONENT_INIT`.

    A ReLU backbone's features are non-negative with a few large coordinates; a
    square-root-like transform brings each coordinate closer to Gaussian and lets the many
    small ones count in the cosines. Elementwise: it reads no other image.
    """
    def apply(params, support, query, query_mask=None):
        del query_mask  # elementwise
        exponent = params["exponent"]
        return elementwise_power(support, exponent), elementwise_power(query, exponent)

    return FeatureTransform(
        key="power", init=lambda: {"exponent": jnp.asarray(POWER_EXPONENT_INIT, jnp.float32)},
        apply=apply, reads_queries=False,
        description="a power transform of the features")


def centering() -> FeatureTransform:
    """Features L2-normalised and moved by a meta-learned `strength` (from 1) times the
    mean of the episode's normalised support and real query features:

        x -> x / ||x|| - strength * mean over support and queries of (x / ||x||).

    On alphabets far from the training ones a backbone maps every character near one
    common direction, so all cosines are compressed together; phi's BatchNorm normalises
    that away and steps too boldly. Centring spreads the cosines again. It reads the
    episode's queries (`query_mask`'s real rows), so the head's K = 0 is transductive.
    """
    def apply(params, support, query, query_mask=None):
        support_hat, query_hat = l2_normalize(support), l2_normalize(query)
        total = jnp.sum(support_hat, axis=-2)
        count = support_hat.shape[-2]
        if query_mask is None:
            total = total + jnp.sum(query_hat, axis=-2)
            count = count + query_hat.shape[-2]
        else:
            weights = query_mask.astype(query_hat.dtype)[..., None]
            total = total + jnp.sum(weights * query_hat, axis=-2)
            count = count + jnp.sum(weights, axis=-2)
        shift = params["strength"] * (total / count)[..., None, :]
        return support_hat - shift, query_hat - shift

    return FeatureTransform(
        key="centering", init=lambda: {"strength": jnp.asarray(1.0, jnp.float32)},
        apply=apply, reads_queries=True,
        description="features centred on the episode's mean (K = 0 reads the queries)")


def balanced_readout(iterations: int = READOUT_ITERATIONS) -> Readout:
    """The log of the query set's balanced assignment under the logits at a meta-learned
    temperature (from 1): logits whose softmax is that assignment.

    `iterations` Sinkhorn iterations (`synthetic_gradient.balanced_assignment`) give every
    class an equal share of the real queries and every query a total of 1. At one query
    per class this is a matching, which each query's own softmax cannot see. It assumes,
    as PT-MAP does, that the classes are about equally frequent among the queries.
    """
    def apply(params, logits, query_mask=None):
        temperature = jnp.exp(params["log_temperature"])
        return balanced_assignment(temperature * logits, query_mask, iterations=iterations)

    return Readout(
        key="readout", init=lambda: {"log_temperature": jnp.asarray(0.0, jnp.float32)},
        apply=apply, reads_queries=True,
        description="a balanced readout (assumes every class is about equally frequent "
                    "among the queries)")


# The parts by the name a `Head` description gives them.
TRANSFORMS: dict[str, Callable[[], FeatureTransform]] = {
    "power": power_transform, "centering": centering}
READOUTS: dict[str, Callable[[], Readout]] = {"balanced": balanced_readout}
