"""The whole published method as one function: `train_and_evaluate(config, workdir)`.

  1. load the dataset's train / val / test classes;
  2. pretrain the backbone on the train classes (cosine classifier), keep the best by
     validation episodes (with `data.format=features`, read a features file instead of
     steps 1 and 2: `metaunlab.data.features`);
  3. for each requested setting ("5way_1shot", ...), meta-train SIB on the frozen
     backbone and meta-test it, with K = 0 on the same episodes;
  4. write results.json and print a table.

Every stage checkpoints into the work directory, so rerunning the same command resumes.
"""

from __future__ import annotations

import contextlib
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from metaunlab import evaluation
from metaunlab.data.dataset import ImageDataset
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.data.features import FEATURES_FORMAT
from metaunlab.files import WorkdirLock, write_error
from metaunlab.head import Head
from metaunlab.methods.sib_head import StepScales
from metaunlab.research import step_tuning
from metaunlab.research.protocols import (
    meta_test_query_counts,
    protocol_name,
)
from metaunlab.research.step_tuning import parse_candidates
from metaunlab.results import setting_name, sib_table
from metaunlab.train.config_checks import check_config, parse_settings
from metaunlab.train.inputs import (
    MetaTrainingInputs,
    build_backbone,
    check_shapes_before_training,
    from_features,
    from_images,
    load_splits,
    meta_training_source,
    validation_episodes,
)
from metaunlab.train.metatrain import (
    head_of_config,
    meta_train,
    training_query_distributions,
    with_defaults,
)
from metaunlab.train.metrics import MetricWriter
from metaunlab.train.parallel import is_primary
from metaunlab.train.workdir import save_config, write_json_atomic

# The stages a caller drives one by one, with the inputs they read (`metaunlab.train.inputs`).
__all__ = ["build_backbone", "check_shapes_before_training", "load_splits",
           "meta_training_source", "parse_settings", "train_and_evaluate", "tune_steps",
           "validation_episodes", "write_protocol_summary"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run (or resume) the whole pipeline in `workdir`.

    The config is checked before anything is stored; one run at a time holds the work dir
    (`metaunlab.files.WorkdirLock`, taken by the writing process).

    Args:
      config: an experiment config (`experiments/configs/*.py`; fields and defaults in
        `metaunlab.train.config_schema`).
      workdir: the work directory; a rerun with the same one resumes.

    Returns:
      The results, also written to `<workdir>/results.json`: `{"dataset", "protocol",
      "backbone", "test_classes", "metatrain_source", "eval_checkpoint", "settings",
      "wall_seconds", "devices", "processes"}`, where `settings` maps "5way_1shot" (and
      "5way_1shot_<q>query" for `test.extra_query_counts`) to `{"n_way", "n_shot",
      "n_query", "episodes", "methods": {"sib", "k0"[, "sib_tuned"]}, ...}`, accuracies in
      percent with 95% intervals.

    Raises:
      ConfigError: the config fails its checks, or disagrees with the one the work dir was
        trained with.
      DataError: the data is missing, corrupt or too small for the episodes.
    """
    check_config(config)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise write_error(workdir, error) from None
    with WorkdirLock(workdir) if is_primary() else contextlib.nullcontext():
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    started = time.time()
    save_config(workdir, config)
    writer = MetricWriter(workdir)
    try:  # closed on every way out: its TensorBoard thread must not outlive the process
        return _run_stages(config, workdir, writer, started)
    finally:
        writer.close()


def _run_stages(config: ml_collections.ConfigDict, workdir: str, writer: MetricWriter,
                started: float) -> dict:
    if config.data.format == FEATURES_FORMAT:
        inputs = from_features(config, workdir)
    else:
        inputs = from_images(config, workdir, writer)
    protocol = protocol_name(config)
    results = {"dataset": config.data.name, "protocol": protocol, "backbone": config.backbone,
               "test_classes": test_class_count(inputs.test_labels),
               "metatrain_source": inputs.mode, "eval_checkpoint": config.eval_checkpoint,
               "settings": {}}
    for n_way, n_shot in parse_settings(config.settings):
        name = setting_name(n_way, n_shot)
        mt = with_defaults(config.metatrain)
        mt.n_way, mt.n_shot = n_way, n_shot
        last, best = meta_train(
            mt, source=inputs.source, train_labels=inputs.train_labels,
            feat_dim=inputs.feat_dim, val_feats=inputs.val_feats,
            val_episodes=inputs.val_episodes(EpisodeShape(n_way, n_shot, mt.n_query)),
            workdir=os.path.join(workdir, "metatrain", name), writer=writer,
            backbone_variables=inputs.backbone_variables, feature_fn=inputs.feature_fn,
            transform=inputs.transform, phase=f"metatrain_{name}",
            train_groups=inputs.train_groups)
        params = last if config.eval_checkpoint == "last" else best
        head = head_of_config(mt, inputs.feat_dim)
        step_scales = tune_steps(config, inputs, head, params, mt,
                                 os.path.join(workdir, "metatrain", name))
        for n_query in meta_test_query_counts(config):
            key = name if n_query == config.test.n_query else f"{name}_{n_query}query"
            shape = EpisodeShape(n_way, n_shot, n_query)
            sampler = EpisodeSampler(inputs.test_labels, shape, seed=config.test.seed,
                                     split_name="test", groups=inputs.test_groups)
            test_eps = sampler.sample(0, config.test.episodes)
            methods = evaluation.evaluate_sib(head, params, inputs.test_feats, test_eps,
                                              steps=mt.sib_steps, lr=mt.inner_lr,
                                              step_scales=step_scales, desc=f"test {key}")
            results["settings"][key] = {
                "dataset": config.data.name, "protocol": protocol, "n_way": n_way,
                "n_shot": n_shot, "n_query": n_query, "episodes": config.test.episodes,
                "methods": methods}
            if sampler.eligible_groups is not None:  # the alphabets episodes come from
                results["settings"][key]["alphabets"] = [
                    inputs.episode_group_names[g] for g in sampler.eligible_groups]
            writer.forget_after(f"test_{key}", -1)  # a rerun tests again: one record each
            writer.write(f"test_{key}", mt.iterations,
                         **{method: entry["accuracy"] for method, entry in methods.items()})
            tqdm.write(f"test {key}: " + ", ".join(
                f"{label} {methods[m]['accuracy']:.2f} +- {methods[m]['ci95']:.2f}%"
                for m, label in (("sib", "SIB"), ("sib_tuned", "SIB tuned step"),
                                 ("k0", "K=0")) if m in methods))
    results["wall_seconds"] = time.time() - started
    results["devices"] = [str(d) for d in jax.devices()]
    results["processes"] = jax.process_count()
    write_json_atomic(os.path.join(workdir, "results.json"), results)
    table = sib_table(results["settings"])
    if is_primary():  # one writer for the shared work directory
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(table + "\n")
        print(table)
    return results


def tune_steps(config: ml_collections.ConfigDict, inputs: MetaTrainingInputs, head: Head,
               params,
               mt: ml_collections.ConfigDict, head_dir: str) -> StepScales | None:
    """With `test.step_scales`, the best of those multiples of the head's step for each
    meta-tested query count, on seeded validation episodes of that count from each query
    distribution the head was meta-trained on (never the test episodes), kept in
    `<head_dir>/step_scales.json`; None without."""
    candidates = parse_candidates(config.test.step_scales)
    if not candidates:
        return None
    distributions = [d.name for d in training_query_distributions(mt)]
    episodes = {n_query: step_tuning.tuning_episodes(
        inputs.val_labels, EpisodeShape(mt.n_way, mt.n_shot, n_query),
        distributions=distributions, seed=config.val_seed, count=config.val_episodes,
        groups=inputs.val_groups) for n_query in meta_test_query_counts(config)}
    name = setting_name(mt.n_way, mt.n_shot)
    scales, accuracy = step_tuning.tune_step_scales(
        head, params, inputs.val_feats, episodes, steps=mt.sib_steps, lr=mt.inner_lr,
        candidates=candidates, desc=f"tune step {name}")
    if is_primary():
        step_tuning.save(head_dir, scales, accuracy, candidates=candidates,
                         steps=mt.sib_steps, checkpoint=config.eval_checkpoint,
                         episodes=config.val_episodes)
    tqdm.write(f"tune step {name}: " + ", ".join(
        f"x{s:g} at {q:g} queries per class"
        for q, s in zip(scales.queries_per_class, scales.scales, strict=True)))
    return scales


def test_class_count(labels) -> int:
    return labels.num_classes if isinstance(labels, ImageDataset) else len(np.unique(labels))


def write_protocol_summary(workdir: str, results: dict[str, dict]) -> str:
    """`<workdir>/results.json` ({"protocols": {name: that run's results}}) and results.md
    with one table per protocol, for runs made in `<workdir>/<protocol>`; returns the text."""
    sections = [f"## {name}\n\n{sib_table(run['settings'])}" for name, run in results.items()]
    text = "\n\n".join(sections)
    if is_primary():
        write_json_atomic(os.path.join(workdir, "results.json"), {"protocols": results})
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(text + "\n")
    return text
