"""Head recipes against each other on validation episodes, each against its matched K = 0.

`run_head_study(workdir, variants, ...)` (`python -m experiments.head_study`) meta-trains one
SIB head per recipe, seed and setting on the frozen training features of a trained work dir
(its backbone, its meta-training config with the recipe's fields changed), and scores every
head on the same seeded episodes of the run's validation split, never its test split: SIB at
its trained K and the same head at K = 0, with their paired difference, on balanced and on
class-imbalanced query sets, beside the transductive baselines named in `baselines`. Nothing
is written into the work dir.

`split="test"` scores the same way on test episodes, to report a recipe already chosen on
validation over several meta-training seeds; it is not for choosing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from metaunlab import evaluation
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.data.query_sets import QueryDistribution
from metaunlab.errors import ConfigError
from metaunlab.methods import METHODS
from metaunlab.research.protocols import meta_test_query_counts
from metaunlab.research.step_tuning import parse_candidates, tune_step_scales, tuning_episodes
from metaunlab.results import markdown_table
from metaunlab.train.metatrain import head_of_config, meta_train, training_query_distributions
from metaunlab.train.metrics import MetricWriter
from metaunlab.trained_model import TrainedModel, setting_name

from ..configs.common import base_config


@dataclasses.dataclass(frozen=True)
class Cell:
    """One group of validation episodes: a setting, queries per class, a distribution."""

    n_way: int
    n_shot: int
    n_query: int
    distribution: str

    @property
    def name(self) -> str:
        short = self.distribution.replace("dirichlet:", "dir")
        return f"{setting_name(self.n_way, self.n_shot)}_q{self.n_query}_{short}"


def parse_variants(text: str) -> dict[str, dict]:
    """`{"name": {metatrain field: value}}` from JSON; every field must exist in the config."""
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--variants is not JSON ({e.msg}); write e.g. "
                          "'{\"plain\": {}, \"mixed\": {\"query_distribution\": "
                          "\"balanced,dirichlet:2\"}}'.") from None
    if not isinstance(variants, dict) or not variants or not all(
            isinstance(v, dict) for v in variants.values()):
        raise ConfigError("--variants must be a JSON object of recipe names to objects of "
                          "metatrain fields.")
    return variants


def recipe(base: ml_collections.ConfigDict, overrides: Mapping, n_way: int, n_shot: int,
           seed: int) -> ml_collections.ConfigDict:
    """The work dir's `metatrain` config with `overrides`, for one setting and seed."""
    config = ml_collections.ConfigDict(base.to_dict())
    defaults = base_config().metatrain
    for field, value in overrides.items():
        if field not in config and field in defaults:  # a field newer than the run
            config[field] = defaults[field]
        if field not in config:
            raise ConfigError(f"--variants: {field!r} is not a metatrain field; "
                              f"--print_config lists them.")
        try:
            config[field] = tuple(value) if isinstance(value, list) else value
        except TypeError as e:
            raise ConfigError(f"--variants: {field}={value!r}: {e}") from None
    config.n_way, config.n_shot, config.seed = n_way, n_shot, base.seed + seed
    config.val_every = 10**9
    config.checkpoint_every = 0
    return config


def run_head_study(workdir: str, variants: Mapping[str, Mapping], *, settings: Sequence[tuple],
                   query_counts: Sequence[int], distributions: Sequence[str],
                   seeds: Sequence[int] = (0,), episodes: int = 500, episode_seed: int = 7,
                   baselines: Sequence[str] = ("alpha_tim",), split: str = "val",
                   progress: bool = True) -> dict:
    """Meta-train every recipe and score it on validation; returns the study as a dict:
    `{"cells": [...], "results": {recipe: {cell: {"sib", "k0", "minus_k0": [one per seed]}}},
    "baselines": {cell: {method: {"accuracy", "ci95"}}}, "minutes": {recipe: ...}}`.

    Where the run tunes SIB's step on validation (`test.step_scales`), every head is tuned
    the same way (`metaunlab.research.step_tuning`, on the run's seeded validation episodes of each
    of its meta-tested query counts) and each cell adds "sib_tuned" and "tuned_minus_k0"."""
    if split not in ("val", "test"):
        raise ConfigError(f"--split={split!r}: use val (to choose) or test (to report).")
    started = time.time()
    model = TrainedModel.load(workdir)
    config = model.config
    unknown = [b for b in baselines if b not in METHODS]
    if unknown:
        raise ConfigError(f"--baselines: unknown method(s) {', '.join(unknown)}.")
    train_feats, train_labels = model.split_features("train")
    train_groups = model.split_groups("train", stage="metatrain")
    val_feats, val_labels = model.split_features(split)
    val_groups = model.split_groups(split)
    candidates = parse_candidates(config.test.get("step_scales", ""))
    if candidates:
        tune_feats, tune_labels = model.split_features("val")
        tune_groups = model.split_groups("val")
    cells = [Cell(w, s, q, QueryDistribution.parse(d).name) for (w, s) in settings
             for q in query_counts for d in distributions]
    episode_sets = {}
    for cell in cells:
        sampler = EpisodeSampler(val_labels, EpisodeShape(cell.n_way, cell.n_shot, cell.n_query),
                                 seed=episode_seed, split_name=split, groups=val_groups,
                                 query_distribution=cell.distribution)
        episode_sets[cell] = sampler.sample(0, episodes)

    base_results = {}
    for cell in cells:
        base_results[cell.name] = {}
        for name in baselines:
            result = evaluation.evaluate(METHODS[name], val_feats, episode_sets[cell])
            base_results[cell.name][name] = {"accuracy": result.accuracy, "ci95": result.ci95}

    fields = ("sib", "k0", "minus_k0") + (("sib_tuned", "tuned_minus_k0") if candidates else ())
    results: dict = {name: {c.name: {f: [] for f in fields} for c in cells} for name in variants}
    minutes = {}
    jobs = [(v, seed, w, s) for v in variants for seed in seeds for (w, s) in settings]
    bar = tqdm(jobs, desc="head study", disable=None if progress else True)  # only on a terminal
    for variant, seed, n_way, n_shot in bar:
        bar.set_postfix(recipe=variant, seed=seed, setting=setting_name(n_way, n_shot))
        mt = recipe(config.metatrain, variants[variant], n_way, n_shot, seed)
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            params, _ = meta_train(mt, source=train_feats, train_labels=train_labels,
                                   feat_dim=train_feats.shape[1], val_feats=None,
                                   val_episodes=None, workdir=tmp,
                                   writer=MetricWriter(tmp, enabled=False),
                                   phase=f"study_{variant}", train_groups=train_groups)
        minutes[variant] = minutes.get(variant, 0.0) + (time.time() - t0) / 60
        head = head_of_config(mt, train_feats.shape[1])
        scales = None
        if candidates:
            tuning = {q: tuning_episodes(
                tune_labels, EpisodeShape(n_way, n_shot, q),
                distributions=[d.name for d in training_query_distributions(mt)],
                seed=config.val_seed, count=config.val_episodes, groups=tune_groups)
                for q in meta_test_query_counts(config)}
            scales, _ = tune_step_scales(head, params, tune_feats, tuning, steps=mt.sib_steps,
                                         lr=mt.inner_lr, candidates=candidates)
        methods = evaluation.sib_variants(head, params, steps=mt.sib_steps, lr=mt.inner_lr,
                                          step_scales=scales)
        for cell in cells:
            if (cell.n_way, cell.n_shot) != (n_way, n_shot):
                continue
            sib = evaluation.evaluate(methods["sib"], val_feats, episode_sets[cell])
            k0 = evaluation.evaluate(methods["k0"], val_feats, episode_sets[cell])
            entry = results[variant][cell.name]
            entry["sib"].append(sib.accuracy)
            entry["k0"].append(k0.accuracy)
            entry["minus_k0"].append(evaluation.paired_difference(sib.accuracies,
                                                                  k0.accuracies))
            if scales is not None:
                tuned = evaluation.evaluate(methods["sib_tuned"], val_feats, episode_sets[cell])
                entry["sib_tuned"].append(tuned.accuracy)
                entry["tuned_minus_k0"].append(evaluation.paired_difference(tuned.accuracies,
                                                                            k0.accuracies))
            if progress:
                tqdm.write(f"{variant} seed {seed} {cell.name}: SIB {sib.accuracy:.2f}, K = 0 "
                           f"{k0.accuracy:.2f}, paired {entry['minus_k0'][-1]['mean']:+.2f} "
                           f"+- {entry['minus_k0'][-1]['ci95']:.2f}")
    return {"workdir": os.path.abspath(workdir), "split": split, "episodes": episodes,
            "episode_seed": episode_seed, "seeds": list(seeds), "variants": dict(variants),
            "cells": [c.name for c in cells], "results": results, "baselines": base_results,
            "minutes": minutes, "wall_seconds": time.time() - started}


def _mean_and_spread(values: Sequence[float], signed: bool = False) -> str:
    """"95.12" for one seed; "95.12 (94.90..95.30)": the mean and the range over seeds."""
    fmt = "{:+.2f}" if signed else "{:.2f}"
    text = fmt.format(np.mean(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}..{fmt.format(max(values))})"
    return text


def format_study(study: dict) -> str:
    """A markdown table: one row per recipe and cell; SIB, K = 0 and their paired difference
    (means over seeds with the range over seeds; the difference's interval is the first
    seed's), SIB at its tuned step and its difference where the run tunes one, then the
    baselines."""
    rows = []
    baseline_names = sorted({m for c in study["baselines"].values() for m in c})
    tuned = any(entry.get("sib_tuned") for cells in study["results"].values()
                for entry in cells.values())
    for variant, cells in study["results"].items():
        for cell in study["cells"]:
            entry = cells[cell]
            if not entry["sib"]:
                continue
            row = [variant, cell, _mean_and_spread(entry["sib"]), _mean_and_spread(entry["k0"]),
                   _mean_and_spread([d["mean"] for d in entry["minus_k0"]], signed=True)
                   + f" +- {entry['minus_k0'][0]['ci95']:.2f}"]
            if tuned:
                row += [_mean_and_spread(entry["sib_tuned"]),
                        _mean_and_spread([d["mean"] for d in entry["tuned_minus_k0"]],
                                         signed=True)
                        + f" +- {entry['tuned_minus_k0'][0]['ci95']:.2f}"]
            rows.append(row + [f"{study['baselines'][cell][b]['accuracy']:.2f}"
                               for b in baseline_names])
    header = ["recipe", "cell", "SIB", "K = 0", "SIB - K = 0 (paired)"]
    header += ["SIB, tuned step", "tuned - K = 0 (paired)"] if tuned else []
    return markdown_table(header + baseline_names, rows)
