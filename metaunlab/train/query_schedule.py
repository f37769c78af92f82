"""Which query sets meta-training draws: the queries per class and how they split between
the classes, iteration by iteration, as pure functions of (seed, step) so that a resumed
run draws the same ones.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from metaunlab.data.query_sets import QueryDistribution
from metaunlab.errors import ConfigError
from metaunlab.train.checks import count_list, parse_counts, query_distribution
from metaunlab.train.config_schema import with_defaults


def training_query_counts(config: ml_collections.ConfigDict) -> list[int]:
    """The queries per class meta-training draws from: `metatrain.query_counts` ("1,5,15"),
    or `metatrain.n_query` alone when that is empty."""
    text = str(with_defaults(config, "metatrain").query_counts or "")
    check, what = count_list()
    if not check(text):
        raise ConfigError(f"--config.metatrain.query_counts={text!r} is not allowed; it must "
                          f"be {what}.")
    return parse_counts(text) or [int(config.n_query)]


# Iterations that share one query count: a call of `steps_per_call` iterations that fits in a
# block has one shape (each shape compiles once); one that straddles two blocks runs its
# iterations one at a time. Fixed, so the draws do not depend on steps_per_call.
QUERY_COUNT_BLOCK = 10


def query_count_index(seed: int, step: int, choices: int) -> int:
    """Which of `choices` query counts iteration `step` uses: one seeded draw per block of
    QUERY_COUNT_BLOCK iterations, a pure function of (seed, step), so resuming draws the
    same ones."""
    return _block_draw(seed, 0x5155, step, choices)


def _block_draw(seed: int, stream: int, step: int, choices: int) -> int:
    """One seeded draw among `choices` per block of QUERY_COUNT_BLOCK iterations, from its
    own `stream`."""
    if choices == 1:
        return 0
    block = step // QUERY_COUNT_BLOCK
    return int(np.random.default_rng([seed, stream, block]).integers(choices))


def training_ways(config: ml_collections.ConfigDict) -> list[int]:
    """The way counts meta-training draws from: `metatrain.ways` ("5,20"), or `n_way` alone
    when that is empty.

    Raises:
      ConfigError: several way counts for a head whose phi is as wide as one of them.
    """
    config = with_defaults(config, "metatrain")
    text = str(config.ways or "")
    check, what = count_list()
    if not check(text):
        raise ConfigError(f"--config.metatrain.ways={text!r} is not allowed; it must be {what}.")
    ways = sorted(set(parse_counts(text))) or [int(config.n_way)]
    if ways != [int(config.n_way)] and config.phi != "equivariant":
        raise ConfigError(f"--config.metatrain.ways={text!r} trains one head on several way "
                          "counts, which needs --config.metatrain.phi=equivariant (the "
                          "reference phi is as wide as one way count).")
    return ways


def way_index(seed: int, step: int, choices: int) -> int:
    """Which of `choices` way counts iteration `step` uses: one seeded draw per block of
    QUERY_COUNT_BLOCK iterations, like `query_count_index` (another stream)."""
    return _block_draw(seed, 0x3A7, step, choices)


def training_query_distributions(config: ml_collections.ConfigDict) -> list[QueryDistribution]:
    """The query distributions meta-training draws from: `metatrain.query_distribution`, one
    or several separated by commas ("balanced,dirichlet:2")."""
    text = str(with_defaults(config, "metatrain").query_distribution or "")
    check, what = query_distribution()
    if not check(text):
        raise ConfigError(f"--config.metatrain.query_distribution={text!r} is not allowed; it "
                          f"must be {what}.")
    out: list[QueryDistribution] = []
    for part in text.split(","):
        distribution = QueryDistribution.parse(part)
        if distribution not in out:
            out.append(distribution)
    return out


def distribution_index(seed: int, step: int, choices: int) -> int:
    """Which of `choices` query distributions iteration `step` uses: a seeded draw per
    iteration, a pure function of (seed, step) like `query_count_index`. Every distribution
    keeps the query set's size, so a call of several iterations keeps one shape."""
    if choices == 1:
        return 0
    return int(np.random.default_rng([seed, 0xD1, step]).integers(choices))
