"""SIB as a `Method`: a trained SIB head (the computation itself is `metaunlab.sib`).

Hu et al., "Empirical Bayes Transductive Meta-Learning with Synthetic Gradients", ICLR
2020. `sib_method(params, steps, lr)` wraps meta-trained parameters; its probabilities are
the softmax of `sib.apply` logits after K = `steps` synthetic-gradient steps. K = 0 is the
learned initialization network alone (inductive: it never looks at the queries); K > 0 is
transductive (the synthetic-gradient network reads the query logits, and its BatchNorm
uses query statistics). The published setting is K = 3, lr = 1e-3. The method takes
leading episode axes itself, so a batch of episodes runs as one `sib.apply` call.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metaunlab import sib
from metaunlab.methods.base import Method

PAPER = ("Hu et al., Empirical Bayes Transductive Meta-Learning with Synthetic Gradients, "
         "ICLR 2020")


@functools.cache
def _probabilities(steps: int, lr: float, step_queries: int | None):
    """The method function for (steps, lr, step_queries); cached, so that every head of the
    same K and step size shares one compiled predictor (`Method.predictor`)."""
    def fn(support_feats, support_labels, query_feats, n_way, *, params, query_mask=None):
        if n_way != sib.n_way_of(params):
            raise ValueError(f"this SIB head was meta-trained for {sib.n_way_of(params)}-way "
                             f"episodes, not {n_way}-way")
        queries = (query_feats.shape[-2] if query_mask is None
                   else jnp.sum(query_mask, axis=-1).astype(query_feats.dtype))
        step = lr if step_queries is None else sib.query_scaled_lr(lr, n_way, queries,
                                                                   step_queries)
        logits = sib.apply(params, support_feats, support_labels, query_feats, steps=steps,
                           lr=step, query_mask=query_mask)
        return jax.nn.softmax(logits, axis=-1)

    return fn


def sib_method(params: sib.Params, steps: int, lr: float = 1e-3,
               name: str | None = None, step_queries: int | None = None) -> Method:
    """A trained SIB head with K = `steps` synthetic steps of size `lr` as a `Method`.

    `step_queries`: None (the reference) steps by `lr` whatever the query set; an integer
    Q means `lr` is the step for Q queries per class, rescaled to each episode's query count
    (`sib.query_scaled_lr`), as a head meta-trained with `metatrain.query_scaled_step` was.
    """
    return Method(name=name or f"sib_k{steps}",
                  fn=_probabilities(int(steps), float(lr),
                                    None if step_queries is None else int(step_queries)),
                  is_transductive=steps > 0, paper=PAPER, params=params, episode_axes=True)


def step_queries_of(metatrain_config) -> int | None:
    """`sib_method`'s step_queries for a head trained with this `metatrain` config group:
    its n_query with `query_scaled_step`, else None."""
    if metatrain_config.get("query_scaled_step", False):
        return int(metatrain_config.n_query)
    return None
