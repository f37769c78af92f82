"""SIB's synthetic step size chosen on validation episodes, one multiple per query count.

A synthetic step of `metaunlab.sib` is a sum over the queries, and the reference takes
one step size `lr` whatever the query set. A head meta-trained on query sets of 1 to 15
queries per class therefore steps too short on the smallest and too far on the largest
(docs/omniglot.md, "The size of SIB's steps"). `tune_step_scales` measures the trained head
on seeded validation episodes of each query count at each candidate multiple of its step
and keeps the best one per count: a `StepScales` that `sib_method(..., step_scales=)` applies
to any query count (interpolated between the tuned counts). The head's parameters are not
changed and no test episode is read.

`tuning_episodes` draws them from every query distribution the head was meta-trained on
(balanced and Dirichlet in the Omniglot demo), so the chosen step suits both.

`save` / `load` keep the choice beside the head, in `metatrain/<setting>/step_scales.json`:

    {"checkpoint", "steps", "candidates", "episodes", "queries_per_class",
     "val_accuracy": {"<q>": [one per candidate]}, "scales": [one per count]}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from metaunlab import evaluation, sib
from metaunlab.data.episodes import Episodes, EpisodeSampler, EpisodeShape, batch_episodes
from metaunlab.data.query_sets import QueryDistribution, imbalanced_fits
from metaunlab.errors import ConfigError
from metaunlab.head import Head
from metaunlab.methods.sib_head import StepScales, sib_method
from metaunlab.train.workdir import read_json, write_json_atomic

FILE_NAME = "step_scales.json"
_RETUNE = "delete it and rerun the same command to tune again"


def parse_candidates(text: str, flag: str = "--config.test.step_scales") -> tuple[float, ...]:
    """"0.5,1,2" -> (0.5, 1.0, 2.0); "" -> () (no tuning). Refuses non-positive values."""
    if not text.strip():
        return ()
    try:
        values = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise ConfigError(f"{flag}={text!r} is not a comma-separated list of numbers; give "
                          "multiples of the trained step size, e.g. 0.25,0.5,1,2,4.") from None
    if not values or values[0] <= 0 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{flag}={text!r} holds a value that is not a positive number; "
                          "every multiple of the step size must be > 0 (K = 0 is reported "
                          "on its own).")
    return values


def _preferred(candidates: Sequence[float], accuracies: Sequence[float]) -> float:
    """The candidate of the highest accuracy; among equals, the one nearest the trained
    step (1) in log scale, so a tie never moves the step."""
    best = max(accuracies)
    tied = [c for c, a in zip(candidates, accuracies, strict=True) if a == best]
    return min(tied, key=lambda c: abs(math.log(c)))


def tuning_episodes(labels: np.ndarray, shape: EpisodeShape, *, distributions: Sequence[str],
                    seed: int, count: int, groups: np.ndarray | None = None) -> Episodes:
    """`count` seeded validation episodes of `shape` for each of `distributions` (the query
    distributions a head was meta-trained on) that fits the classes at that many queries per
    class (`query_sets.imbalanced_fits`), one batch: a step chosen on balanced episodes alone
    would be chosen for balanced query sets."""
    smallest = int(np.unique(np.asarray(labels), return_counts=True)[1].min())
    batches = []
    for spec in distributions:
        distribution = QueryDistribution.parse(spec)
        if not (distribution.is_balanced
                or imbalanced_fits(shape.n_query, shape.n_shot, smallest)):
            continue
        sampler = EpisodeSampler(labels, shape, seed=seed, split_name="val", groups=groups,
                                 query_distribution=distribution)
        batches.append(sampler.sample(0, count))
    if not batches:  # no distribution fits: balanced sets, as meta-training then draws
        batches.append(EpisodeSampler(labels, shape, seed=seed, split_name="val",
                                      groups=groups).sample(0, count))
    return batch_episodes(batches)


def tune_step_scales(head: Head, params: sib.Params, feats: np.ndarray,
                     episodes_by_count: Mapping[int, Episodes], *, steps: int, lr: float,
                     candidates: Sequence[float],
                     desc: str | None = None) -> tuple[StepScales, dict[int, list[float]]]:
    """The best multiple of the step `lr` of `head` (with `params`) for each query count, on
    its episodes.

    `episodes_by_count` maps queries per class to validation episodes of that count (with
    indices into `feats`). Returns the `StepScales` and the validation accuracy of every
    candidate at every count.
    """
    if not candidates:
        raise ValueError("tune_step_scales needs at least one candidate multiple")
    counts = sorted(episodes_by_count)
    accuracy: dict[int, list[float]] = {}
    for q in counts:
        accuracy[q] = []
        for scale in candidates:
            method = sib_method(params, steps, lr, step_scales=StepScales((q,), (scale,)),
                                head=head)
            label = None if desc is None else f"{desc} {q}query x{scale:g}"
            result = evaluation.evaluate(method, feats, episodes_by_count[q], desc=label)
            accuracy[q].append(result.accuracy)
    chosen = StepScales(tuple(float(q) for q in counts),
                        tuple(_preferred(candidates, accuracy[q]) for q in counts))
    return chosen, accuracy


def save(directory: str, scales: StepScales, accuracy: Mapping[int, Sequence[float]], *,
         candidates: Sequence[float], steps: int, checkpoint: str, episodes: int) -> str:
    path = os.path.join(directory, FILE_NAME)
    write_json_atomic(path, {
        "checkpoint": checkpoint, "steps": int(steps), "candidates": list(candidates),
        "episodes": int(episodes), "queries_per_class": list(scales.queries_per_class),
        "val_accuracy": {str(q): list(a) for q, a in accuracy.items()},
        "scales": list(scales.scales)})
    return path


def load(directory: str, checkpoint: str) -> StepScales | None:
    """The tuned multiples of the head in `directory` for its `checkpoint` ("last" or
    "best"), or None when none were tuned for that checkpoint."""
    path = os.path.join(directory, FILE_NAME)
    if not os.path.exists(path):
        return None
    record = read_json(path, _RETUNE)
    try:
        if record["checkpoint"] != checkpoint:
            return None
        return StepScales(tuple(float(q) for q in record["queries_per_class"]),
                          tuple(float(s) for s in record["scales"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{path} is not a step-size record ({error}); {_RETUNE}.") from None

