"""Accuracy of a trained work dir on a fixed episode file (reference JSON format)."""

from __future__ import annotations

import numpy as np

from metaunlab import evaluation
from metaunlab.data.episodes import (
    episodes_from_records,
    load_episodes_json,
    resolve_episode_paths,
)
from metaunlab.restore import TrainedModel


def evaluate_episode_file(workdir: str, episodes_path: str, image_root: str, *,
                          checkpoint: str = "last") -> dict:
    """`{"episodes", "methods": {"sib", "k0"}, "by_shape": {...}}`, accuracies in percent.

    Episodes of different shapes are evaluated in groups (one compilation per shape); the
    overall numbers average over all episodes of the file.
    """
    records = load_episodes_json(episodes_path)
    resolved = resolve_episode_paths(records, image_root, source=episodes_path)
    unique = sorted({p for support, query in resolved for group in (support, query)
                     for paths in group for p in paths})
    index_of = {p: i for i, p in enumerate(unique)}
    model = TrainedModel.load(workdir)
    feats = model.embed_files(unique)
    mt = model.config.metatrain
    per_method: dict[str, list[np.ndarray]] = {"sib": [], "k0": []}
    by_shape = {}
    for shape, (_, episodes) in episodes_from_records(resolved, index_of,
                                                      episodes_path).items():
        params = model.sib_params(shape.n_way, shape.n_shot, checkpoint)
        name = f"{shape.n_way}way_{shape.n_shot}shot_{shape.n_query}query"
        by_shape[name] = {"episodes": len(episodes)}
        for method, steps in (("sib", mt.sib_steps), ("k0", 0)):
            accs = evaluation.episode_accuracies(params, feats, episodes, steps=steps,
                                                 lr=mt.inner_lr)
            per_method[method].append(accs)
            mean, ci = evaluation.mean_and_ci95(accs)
            by_shape[name][method] = {"accuracy": mean, "ci95": ci}
    methods = {}
    for method, parts in per_method.items():
        mean, ci = evaluation.mean_and_ci95(np.concatenate(parts))
        methods[method] = {"accuracy": mean, "ci95": ci,
                           "steps": mt.sib_steps if method == "sib" else 0}
    return {"workdir": workdir, "episodes_file": episodes_path, "episodes": len(records),
            "checkpoint": checkpoint, "methods": methods, "by_shape": by_shape}
