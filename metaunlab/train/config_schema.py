"""Every field of a run's config, each with its default and its check beside it.

The experiment configs start from `default_config()` and override a few fields; the
library completes a partial group (a work dir written before a field existed, or
`train_on_features`'s config) with `with_defaults(config, group)`; `config_checks.
check_config` applies each field's check (`rules()`) before anything is stored. A field
whose check is None (names, paths, data loader options) is checked where it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_collections

from metaunlab.train.checks import (
    COUNT,
    DECAY,
    DTYPE,
    MAX_SIB_STEPS,
    MOMENTUM,
    NON_NEGATIVE,
    RATE,
    Check,
    count_list,
    flag,
    integer,
    integers,
    one_of,
    query_distribution,
    scale_list,
)


class Field(NamedTuple):
    """A config field: its default (or a function that makes it, for a mutable default)
    and its `(check, what it must be)`, or None."""

    default: Any
    rule: tuple[Check, str] | None = None


TOP: dict[str, Field] = {
    "seed": Field(0, NON_NEGATIVE),
    "backbone": Field("conv4"),
    # Comma-separated "<N>way_<K>shot" settings to meta-train and test.
    "settings": Field("5way_1shot"),
    # The published numbers use the last checkpoint; or "best".
    "eval_checkpoint": Field("last", one_of("last", "best")),
    "val_seed": Field(1, NON_NEGATIVE),
    "val_episodes": Field(1000, COUNT),

    "log_every": Field(100, COUNT),
}


DATA: dict[str, Field] = {
    "name": Field(""),
    "root": Field(""),
    "image_size": Field(lambda: ml_collections.FieldReference(None, field_type=int)),
    "transform": Field(""),
    # The on-disk form where a data set has several (metaunlab/data/sources.py lists them);
    # "auto" picks it by the files present.
    "format": Field("auto"),
    # Expected checksums, "<file>=sha256:<hex>,..." relative to data.root; checked first.
    "checksums": Field(""),
    # Check the published MD5 of cifar-100-python (CIFAR-FS, FC100); off only for fixtures.
    "verify_checksum": Field(True),
}


PRETRAIN: dict[str, Field] = {
    # Backbone pretraining: cosine classifier on the base classes.
    "seed": Field(0, NON_NEGATIVE),
    "epochs": Field(60, NON_NEGATIVE),
    "batch_size": Field(64, COUNT),  # global: split over all devices, so a multiple of their count
    "lr": Field(0.1, RATE),
    "warmup_steps": Field(6000, NON_NEGATIVE),
    "decay_epochs": Field((50,), integers(0)),
    "decay_factor": Field(0.1, RATE),
    "momentum": Field(0.9, MOMENTUM),
    "weight_decay": Field(5e-4, DECAY),
    "val_every_epochs": Field(1, COUNT),
    "val_n_way": Field(5, integer(2)),
    "val_n_shot": Field(1, COUNT),
    "val_n_query": Field(15, COUNT),
    "log_every": Field(50, COUNT),
    # A preset of metaunlab.data.augment for pretraining only ("" = data.transform).
    "transform": Field(""),
    # Save the full state this often (steps; 0 = only at validation and on SIGTERM).
    "checkpoint_every": Field(1000, NON_NEGATIVE),
    # Memory levers: recompute each residual block in the backward pass (wrn28_10, resnet12),
    # and the backbone's compute dtype ("float32" or "bfloat16"; parameters stay float32).
    "backbone_remat": Field(False, flag()),
    "backbone_dtype": Field("float32", DTYPE),
}


METATRAIN: dict[str, Field] = {
    # SIB meta-training on the frozen backbone (the reference's published settings; each
    # field's meaning beside its default in metaunlab/train/metatrain_config.py).
    "seed": Field(100, NON_NEGATIVE),
    "iterations": Field(50_000, COUNT),
    "batch_size": Field(1, COUNT),  # global: split over all devices, so a multiple of their count
    "n_query": Field(15, COUNT),
    "sib_steps": Field(3, integer(0, MAX_SIB_STEPS)),
    "inner_lr": Field(1e-3, RATE),
    "lr": Field(1e-3, RATE),
    # Iterations after which lr is divided by 10 (the reference: none, a constant rate).
    "decay_steps": Field((), integers(1)),
    "momentum": Field(0.9, MOMENTUM),
    "weight_decay": Field(5e-4, DECAY),
    "grad_coeff": Field(0.0, DECAY),
    "val_every": Field(1000, COUNT),
    "log_every": Field(100, COUNT),
    # "images": features recomputed on freshly augmented images every episode (faithful);
    # "features": the frozen-feature cache, computed once (metaunlab/train/feature_cache.py);
    # "auto": features when the meta-training transform draws nothing at random.
    "source": Field("auto", one_of("auto", "images", "features")),
    # With source "features": 0 = one un-augmented feature per image; M > 0 = M views per
    # image augmented by the meta-training transform, one picked at random per episode.
    "feature_views": Field(0, NON_NEGATIVE),
    # A preset of metaunlab.data.augment for meta-training only ("" = data.transform).
    "transform": Field(""),
    # Save the full state this often (steps; 0 = only at validation and on SIGTERM).
    "checkpoint_every": Field(500, NON_NEGATIVE),
    # Memory levers: recompute the K SIB steps in the backward pass, and the compute dtype
    # of the frozen backbone when source = "images" ("float32" or "bfloat16").
    "remat": Field(False, flag()),
    "backbone_dtype": Field("float32", DTYPE),
    # Speed only (the same iterations): meta-training iterations per dispatched call
    # (0 = automatic: 10 on features, 1 on images; metaunlab/train/metatrain.py).
    "steps_per_call": Field(0, NON_NEGATIVE),
    # Queries per class of meta-training episodes: "" = n_query always; "1,5,15" = each
    # block of steps_per_call iterations draws one of these (each compiles once).
    "query_counts": Field("", count_list()),
    # How each meta-training query set splits between its classes: "balanced" (the
    # reference) or "dirichlet:ALPHA" (class proportions ~ Dirichlet(ALPHA), the realistic
    # imbalanced sets of Veilleux et al.; metaunlab/data/query_sets.py).
    "query_distribution": Field("balanced", query_distribution()),
    # The cosine classifier's initial inverse temperature (learned; the reference: 10).
    "init_scale": Field(10.0, RATE),
    # False (the reference): the head reads the features as they are. True: each episode's
    # L2-normalised features are moved by a meta-learned multiple (from 1) of their mean
    # over its support and queries (metaunlab.head.parts.centering), so features that new
    # alphabets crowd around one direction spread out again before phi steps on them.
    "center_features": Field(False, flag()),
    # False (the reference): the head reads the backbone's features. True: it reads them
    # raised elementwise to a meta-learned exponent, from 0.5 (PT-MAP's power transform,
    # metaunlab.head.parts.power_transform), before any centring.
    "power_transform": Field(False, flag()),
    # False (the reference): SIB predicts each query's softmax of its logits. True: after the
    # K steps the logits are read out as the query set's balanced assignment (Sinkhorn at a
    # meta-learned temperature, metaunlab.head.parts.balanced_readout), in meta-training and
    # in every evaluation; K = 0 stays the inductive classifier. It assumes classes of about
    # equal frequency in the query set, as PT-MAP's assignment does.
    "balanced_readout": Field(False, flag()),
    # The synthetic-gradient network: "per_way" (the reference's MLP over a query's N
    # logits, as wide as N) or "equivariant" (the same weights for any N,
    # metaunlab/equivariant_phi.py), whose head serves every way count.
    "phi": Field("per_way", one_of("per_way", "equivariant")),
    # Way counts of meta-training episodes: "" = n_way always; "5,20" = each block of
    # iterations draws one of these, as it draws its query count (phi "equivariant" only).
    "ways": Field("", count_list()),
    # Filled in per setting by the pipeline.
    "n_way": Field(5),
    "n_shot": Field(1),
}


TEST: dict[str, Field] = {
    "episodes": Field(2000, COUNT),
    "n_query": Field(15, COUNT),
    "seed": Field(2, NON_NEGATIVE),
    # More query counts to meta-test each setting at ("1,5"): results.json keys
    # "<setting>_<q>query" beside "<setting>" (test.n_query), with the same test seed.
    "extra_query_counts": Field("", count_list()),
    # "" (the reference): SIB steps by metatrain.inner_lr whatever the query set. Multiples
    # of that step ("0.25,0.5,1,2,4"): for each meta-tested query count, the multiple with
    # the best accuracy on seeded validation episodes of that count is chosen
    # (metaunlab.research.step_tuning) and results.json adds "sib_tuned" beside "sib" and "k0".
    "step_scales": Field("", scale_list()),
}


# Fields only some experiment configs add (the Omniglot protocols), checked when present.
OPTIONAL_RULES: dict[str, tuple[Check, str]] = {
    "metatrain.within_alphabet": flag(), "test.within_alphabet": flag(),
    "data.alphabet_fold": integer(-1),
}
GROUPS: dict[str, dict[str, Field]] = {
    "data": DATA, "pretrain": PRETRAIN, "metatrain": METATRAIN, "test": TEST}


def _defaults(fields: Mapping[str, Field]) -> dict[str, Any]:
    return {name: f.default() if callable(f.default) else f.default
            for name, f in fields.items()}


def default_config() -> ml_collections.ConfigDict:
    """The config every experiment config starts from: each field at its default."""
    config = ml_collections.ConfigDict(_defaults(TOP))
    for name, fields in GROUPS.items():
        config[name] = ml_collections.ConfigDict(_defaults(fields))
    return config


def with_defaults(config: ml_collections.ConfigDict | Mapping,
                  group: str) -> ml_collections.ConfigDict:
    """A copy of the `group` config group `config` with every field it lacks at its
    default."""
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    return ml_collections.ConfigDict({**_defaults(GROUPS[group]), **given})


def rules() -> dict[str, tuple[Check, str]]:
    """Each checked field's `(check, what it must be)`, by its path ("metatrain.lr")."""
    out = {name: f.rule for name, f in TOP.items() if f.rule is not None}
    for group, fields in GROUPS.items():
        out.update({f"{group}.{name}": f.rule for name, f in fields.items()
                    if f.rule is not None})
    return {**out, **OPTIONAL_RULES}
