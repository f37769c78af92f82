"""`python -m experiments.crowding`: feature crowding and prediction shares of a work dir."""

from __future__ import annotations

import numpy as np

from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.errors import ConfigError
from metaunlab.evaluation import mean_and_ci95, sib_variants
from metaunlab.research import diagnostics
from metaunlab.trained_model import TrainedModel


def crowding_report(workdir: str, *, n_way: int, n_query: int, num_episodes: int,
                    seed: int, split: str) -> str:
    """The markdown report `experiments.crowding` prints (its module docstring)."""
    model = TrainedModel.load(workdir)
    if model.head_for(n_way, 1) is None:
        raise ConfigError(f"--ways={n_way}: {workdir} has no {n_way}-way head (trained: "
                          f"{', '.join(model.trained_settings()) or 'none'}).")
    lines = ["| split | cosine, different classes | cosine, same class | length of the mean "
             "direction |", "|---|---|---|---|"]
    for name in ("train", "val", "test"):
        feats, labels = model.split_features(name, max_rows=3000)
        c = diagnostics.feature_crowding(feats, labels)
        lines.append(f"| {name} | {c['between']:.3f} | {c['within']:.3f} | "
                     f"{c['mean_norm']:.3f} |")
    feats, labels = model.split_features(split)  # every row: episodes index into them
    groups = model.split_groups(split)
    episodes = EpisodeSampler(labels, EpisodeShape(n_way, 1, n_query), seed, split,
                              groups=groups).sample(0, num_episodes)
    params = model.sib_params(n_way, 1)
    mt = model.config.metatrain
    lines += ["", f"{num_episodes} {n_way}-way 1-shot {split} episodes, {n_query} queries per "
              f"class{', within one alphabet' if groups is not None else ''} (a balanced "
              f"query set: share {1 / n_way:.3f})", "",
              "| K | accuracy | largest class share | classes predicted |", "|---|---|---|---|"]
    variants = sib_variants(model.head(n_way, 1), params, steps=mt.sib_steps, lr=mt.inner_lr)
    for steps, head in ((0, variants["k0"]), (mt.sib_steps, variants["sib"])):
        probs = np.asarray(head.predictor(n_way)(
            head.params, None, feats[episodes.support_idx], episodes.support_labels,
            feats[episodes.query_idx], None))
        correct = np.argmax(probs, -1) == episodes.query_labels
        accuracy, ci = mean_and_ci95(100.0 * correct.mean(axis=-1))
        share, predicted = diagnostics.prediction_shares(probs)
        lines.append(f"| {steps} | {accuracy:.2f} +- {ci:.2f} | {share.mean():.3f} | "
                     f"{predicted.mean():.1f} of {n_way} |")
    return "\n".join(lines)
