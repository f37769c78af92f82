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

from metaunlab import sib
from metaunlab.methods.base import Method

PAPER = ("Hu et al., Empirical Bayes Transductive Meta-Learning with Synthetic Gradients, "
         "ICLR 2020")


@functools.cache
def _probabilities(steps: int, lr: float):
    """The method function for (steps, lr); cached, so that every head of the same K and
    step size shares one compiled predictor (`Method.predictor`)."""
    def fn(support_feats, support_labels, query_feats, n_way, *, params):
        if n_way != sib.n_way_of(params):
            raise ValueError(f"this SIB head was meta-trained for {sib.n_way_of(params)}-way "
                             f"episodes, not {n_way}-way")
        logits = sib.apply(params, support_feats, support_labels, query_feats, steps=steps,
                           lr=lr)
        return jax.nn.softmax(logits, axis=-1)

    return fn


def sib_method(params: sib.Params, steps: int, lr: float = 1e-3,
               name: str | None = None) -> Method:
    """A trained SIB head with K = `steps` synthetic steps of size `lr` as a `Method`."""
    return Method(name=name or f"sib_k{steps}", fn=_probabilities(int(steps), float(lr)),
                  is_transductive=steps > 0, paper=PAPER, params=params, episode_axes=True)
