"""Few-shot classifiers on frozen features, behind one interface (see `base.Method`).

Inductive: `protonet_cosine`, `simpleshot`, `logreg`. Transductive: `transductive_ft`,
`bd_cspn`, `laplacianshot`, `tim_gd`, `alpha_tim`, `pt_map`. A trained SIB head becomes a
Method with `sib_method(params, steps, lr)`.
"""

from metaunlab.methods import (  # noqa: F401  (importing registers each method)
    bdcspn,
    finetune,
    laplacianshot,
    logreg,
    protonet,
    ptmap,
    simpleshot,
    tim,
)
from metaunlab.methods.base import METHODS, Method, get_method
from metaunlab.methods.sib_head import sib_method

__all__ = ["METHODS", "Method", "get_method", "sib_method"]
