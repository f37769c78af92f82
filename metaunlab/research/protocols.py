"""Evaluation protocols: how a config's validation, test and meta-training episodes are drawn.

  character        Omniglot split by character; episodes mix alphabets.
  alphabet         Omniglot split by alphabet (held-out alphabets); episodes mix them.
  within_alphabet  held-out alphabets, and every validation / test episode draws all its
                   classes from one alphabet (`test.within_alphabet`), as in Lake et al.'s
                   one-shot runs; `metatrain.within_alphabet` does the same for training.
  classes          any other data set's class split.

Each setting is meta-tested at `test.n_query` queries per class and at every count of
`test.extra_query_counts`.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.omniglot_splits import alphabet_groups
from metaunlab.errors import ConfigError
from metaunlab.train.checks import parse_counts


def episode_groups(config: ml_collections.ConfigDict, split, stage: str) -> np.ndarray | None:
    """Alphabet ids per class of `split` when `config.<stage>.within_alphabet` (Omniglot
    images only; `metaunlab.data.omniglot_splits.alphabet_groups`), else None."""
    if not config[stage].get("within_alphabet", False):
        return None
    if config.data.name != "omniglot" or not isinstance(split, ImageDataset):
        raise ConfigError(f"--config.{stage}.within_alphabet needs Omniglot images, whose class "
                          f"names carry their alphabet; data.name={config.data.name!r}, "
                          f"data.format={config.data.format!r}.")
    return alphabet_groups(split)[0]


def episode_group_names(config: ml_collections.ConfigDict, split) -> tuple[str, ...]:
    """The names of `episode_groups`' ids for `split` (empty when episodes are not grouped)."""
    if episode_groups(config, split, "test") is None:
        return ()
    return alphabet_groups(split)[1]


def protocol_name(config: ml_collections.ConfigDict) -> str:
    """What results.json calls the evaluation protocol: "within_alphabet" (test episodes
    from one held-out alphabet each), "alphabet" (held-out alphabets, mixed episodes),
    "character" (Omniglot's character split) or "classes" (any other class split)."""
    if config.test.get("within_alphabet", False):
        return "within_alphabet"
    if config.data.name == "omniglot":
        return config.data.get("split_by", "character")
    return "classes"


def meta_test_query_counts(config: ml_collections.ConfigDict) -> list[int]:
    """test.n_query first, then the distinct `test.extra_query_counts`."""
    extra = parse_counts(config.test.extra_query_counts)
    return [config.test.n_query] + [q for q in extra if q != config.test.n_query]
