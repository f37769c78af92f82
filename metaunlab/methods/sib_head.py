"""SIB as a `Method`: a trained SIB head (no re-implementation; see `metaunlab.sib`).

Hu et al., "Empirical Bayes Transductive Meta-Learning with Synthetic Gradients", ICLR
2020. `sib_method(params, steps, lr)` wraps meta-trained parameters; its probabilities are
the softmax of `sib.apply` logits after K = `steps` synthetic-gradient steps. K = 0 is the
learned initialization network alone (inductive: it never looks at the queries); K > 0 is
transductive (the synthetic-gradient network reads the query logits, and its BatchNorm
uses query statistics). The published setting is K = 3, lr = 1e-3.
"""

from __future__ import annotations

import jax

from metaunlab import sib
from metaunlab.methods.base import Method

PAPER = ("Hu et al., Empirical Bayes Transductive Meta-Learning with Synthetic Gradients, "
         "ICLR 2020")


def sib_method(params: sib.Params, steps: int, lr: float = 1e-3,
               name: str | None = None) -> Method:
    trained_n_way = sib.n_way_of(params)

    def fn(support_feats, support_labels, query_feats, n_way):
        if n_way != trained_n_way:
            raise ValueError(f"this SIB head was meta-trained for {trained_n_way}-way "
                             f"episodes, not {n_way}-way")
        logits = sib.apply(params, support_feats, support_labels, query_feats, steps=steps,
                           lr=lr)
        return jax.nn.softmax(logits, axis=-1)

    return Method(name=name or f"sib_k{steps}", fn=fn, is_transductive=steps > 0, paper=PAPER)
