"""The `metatrain` config group: every field of SIB meta-training, with its one default.

`default_config()` is the group as the experiment configs start from it (the reference's
published settings); `with_defaults(config)` completes a partial group (a stored work dir
written before a field existed, or `train_on_features`'s) with those defaults, so that the
library reads every field as an attribute.
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """The `metatrain` group's fields and defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 100
    c.iterations = 50_000
    c.batch_size = 1  # global: split over all devices, so a multiple of their count
    c.n_query = 15
    c.sib_steps = 3
    c.inner_lr = 1e-3
    c.lr = 1e-3
    # Iterations after which lr is divided by 10 (the reference: none, a constant rate).
    c.decay_steps = ()
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.grad_coeff = 0.0
    c.val_every = 1000
    c.log_every = 100
    # "images": features recomputed on freshly augmented images every episode (faithful);
    # "features": the frozen-feature cache, computed once (metaunlab/train/feature_cache.py);
    # "auto": features when the meta-training transform draws nothing at random.
    c.source = "auto"
    # With source "features": 0 = one un-augmented feature per image; M > 0 = M views per
    # image augmented by the meta-training transform, one picked at random per episode.
    c.feature_views = 0
    # A preset of metaunlab.data.augment for meta-training only ("" = data.transform).
    c.transform = ""
    # Save the full state this often (steps; 0 = only at validation and on SIGTERM).
    c.checkpoint_every = 500
    # Memory levers: recompute the K SIB steps in the backward pass, and the compute dtype
    # of the frozen backbone when source = "images" ("float32" or "bfloat16").
    c.remat = False
    c.backbone_dtype = "float32"
    # Speed only (the same iterations): meta-training iterations per dispatched call
    # (0 = automatic: 10 on features, 1 on images; metaunlab/train/metatrain.py).
    c.steps_per_call = 0
    # Queries per class of meta-training episodes: "" = n_query always; "1,5,15" = each
    # block of steps_per_call iterations draws one of these (each compiles once).
    c.query_counts = ""
    # How each meta-training query set splits between its classes: "balanced" (the
    # reference) or "dirichlet:ALPHA" (class proportions ~ Dirichlet(ALPHA), the realistic
    # imbalanced sets of Veilleux et al.; metaunlab/data/query_sets.py).
    c.query_distribution = "balanced"
    # The cosine classifier's initial inverse temperature (learned; the reference: 10).
    c.init_scale = 10.0
    # False (the reference): the head reads the features as they are. True: each episode's
    # L2-normalised features are moved by a meta-learned multiple (from 1) of their mean
    # over its support and queries (metaunlab.head.parts.centering), so features that new
    # alphabets crowd around one direction spread out again before phi steps on them.
    c.center_features = False
    # False (the reference): the head reads the backbone's features. True: it reads them
    # raised elementwise to a meta-learned exponent, from 0.5 (PT-MAP's power transform,
    # metaunlab.head.parts.power_transform), before any centring.
    c.power_transform = False
    # False (the reference): SIB predicts each query's softmax of its logits. True: after the
    # K steps the logits are read out as the query set's balanced assignment (Sinkhorn at a
    # meta-learned temperature, metaunlab.head.parts.balanced_readout), in meta-training and
    # in every evaluation; K = 0 stays the inductive classifier. It assumes classes of about
    # equal frequency in the query set, as PT-MAP's assignment does.
    c.balanced_readout = False
    # Filled in per setting by the pipeline.
    c.n_way = 5
    c.n_shot = 1
    return c


def with_defaults(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
    """A copy of `config` with every field it lacks set to its default."""
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    return ml_collections.ConfigDict({**default_config().to_dict(), **given})
