"""metaunlab: meta-learning from unlabeled data in JAX.

The SIB head (`metaunlab.sib`) is a set of pure functions on pytrees:

    params = metaunlab.sib.init(rng, n_way, feat_dim)
    logits = metaunlab.sib.apply(params, support_feats, support_labels, query_feats,
                                 steps=3, lr=1e-3)

Backbones live in `metaunlab.backbones`, data in `metaunlab.data`, training loops in
`metaunlab.pretrain` / `metaunlab.metatrain`, evaluation in `metaunlab.evaluation`, and the
whole published pipeline in `metaunlab.pipeline.train_and_evaluate`.
"""

from metaunlab import sib
from metaunlab.backbones import get_backbone
from metaunlab.evaluation import mean_and_ci95

__version__ = "0.1.0"
__all__ = ["get_backbone", "mean_and_ci95", "sib"]
