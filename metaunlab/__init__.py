"""metaunlab: meta-learning from unlabeled data in JAX.

The SIB head (`metaunlab.sib`) is a set of pure functions on pytrees:

    params = metaunlab.sib.init(rng, n_way, feat_dim)
    logits = metaunlab.sib.apply(params, support_feats, support_labels, query_feats,
                                 steps=3, lr=1e-3)

A head built with parts (feature transforms, a readout) is a `Head`, whose description is
saved with its checkpoints:

    head = metaunlab.Head(n_way, feat_dim, transforms=("power", "centering"))
    logits = head.apply(head.init(rng), support_feats, support_labels, query_feats)

A head with `phi="equivariant"` (`equivariant_phi`) serves any number of ways:
`head.for_ways(n_way)`.

Where things are: the reference SIB head `sib` (its synthetic-gradient network
`synthetic_gradient`), composable head parts `head`, backbones `backbones`, the baselines
`methods`, data and episodes `data`, training `train` (`pretrain`, `metatrain`, the whole
pipeline `train.pipeline.train_and_evaluate(config, workdir)`), evaluation `evaluation`, a
trained work dir `trained_model.TrainedModel`, the Omniglot research tools `research`.
"""

from metaunlab import head, methods, sib
from metaunlab.backbones import get_backbone
from metaunlab.evaluation import evaluate, mean_and_ci95
from metaunlab.head import Head
from metaunlab.methods import Method, get_method, sib_method

__version__ = "0.1.0"
__all__ = ["Head", "Method", "TrainedModel", "evaluate", "get_backbone", "get_method",
           "head", "mean_and_ci95", "methods", "sib", "sib_method", "train_and_evaluate",
           "train_on_features"]


def __getattr__(name):
    # Checkpointing and the pipeline import orbax and tensorboardX: only when asked for.
    if name == "TrainedModel":
        from metaunlab.trained_model import TrainedModel

        return TrainedModel
    if name == "train_and_evaluate":
        from metaunlab.train.pipeline import train_and_evaluate

        return train_and_evaluate
    if name == "train_on_features":
        from metaunlab.train.metatrain import train_on_features

        return train_on_features
    raise AttributeError(f"module 'metaunlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
