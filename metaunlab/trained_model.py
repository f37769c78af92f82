"""A trained run read back from its work directory: backbone, preprocessing and SIB heads.

    model = TrainedModel.load("workdirs/omniglot")
    feats = model.embed_files(paths)                 # images read exactly as in training
    feats, labels = model.split_features("test")     # a split of the run's own data
    head = model.head(n_way=5, n_shot=1)             # the head meta-trained for 5-way
    params = model.sib_params(n_way=5, n_shot=1)     # and its parameters
    results = model.evaluate_episode_file("episodes.json", image_root="images/")
    predictions = model.predict_folders("support/", "queries/")   # metaunlab.prediction

A run on a features file (`data.format=features`) has no backbone: `split_features` reads the
file, and embedding images is refused.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from metaunlab import evaluation, prediction, sib
from metaunlab.backbones import Backbone, get_backbone, init_backbone
from metaunlab.data import augment
from metaunlab.data.decode import ImageFormat, load_image_files
from metaunlab.data.episode_files import read_episode_file
from metaunlab.data.features import load_feature_file
from metaunlab.data.sources import load_dataset_splits
from metaunlab.errors import ConfigError
from metaunlab.head import HEAD_FILE, Head
from metaunlab.methods.sib_head import StepScales
from metaunlab.prediction import (
    Predictions,
)
from metaunlab.research import step_tuning
from metaunlab.research.protocols import episode_groups
from metaunlab.results import setting_name
from metaunlab.train.checkpoints import Checkpointer
from metaunlab.train.workdir import REWRITE_BY_TRAINING, load_config, read_json


def _subset(total: int, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or total <= max_rows:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, max_rows, replace=False))


@dataclasses.dataclass
class TrainedModel:
    """The frozen backbone of a work dir with its variables and input preprocessing (None
    for a run on a features file), and its meta-trained heads. Build it with `load`.

    Attributes:
      workdir: the work directory.
      config: the config the run was trained with (`config.json`).
      feat_dim: the feature dimension D.
      backbone: the backbone (`metaunlab.backbones.Backbone`), or None for a features run.
      variables: the backbone's variables, best on validation (`pretrain/best`).
      transform: the run's image transform; its evaluation form preprocesses images.
      image_format: how image files are decoded (size, channels, polarity).
      image_shape: (H, W, C) of the stored training images.
      features_file: the features file of a features run, else None.
    """

    workdir: str
    config: ml_collections.ConfigDict
    feat_dim: int
    backbone: Backbone | None = None
    variables: Any = None
    transform: augment.ImageTransform | None = None
    image_format: ImageFormat | None = None
    image_shape: tuple[int, int, int] | None = None
    features_file: str | None = None
    _datasets: dict | None = dataclasses.field(default=None, init=False, repr=False)

    def __repr__(self) -> str:
        source = (f"features={self.features_file!r}" if self.features_file is not None
                  else f"backbone={self.config.backbone!r}, image_shape={self.image_shape}")
        return (f"TrainedModel(workdir={self.workdir!r}, {source}, feat_dim={self.feat_dim}, "
                f"heads={self.trained_settings()})")

    @classmethod
    def load(cls, workdir: str) -> TrainedModel:
        """The trained run in `workdir`.

        Args:
          workdir: a work directory written by `train_and_evaluate` (or imported).

        Returns:
          The `TrainedModel`, with the backbone restored from `pretrain/best` (none for a
          run on a features file). Heads are read when asked for.

        Raises:
          ConfigError: the run has no `model.json` (it did not get past data loading).
        """
        config = load_config(workdir)
        model_path = os.path.join(workdir, "model.json")
        if not os.path.exists(model_path):
            raise ConfigError(f"{model_path} does not exist; the run in --workdir={workdir} "
                                    "did not get past data loading, so there is no model yet.")
        info = read_json(model_path, REWRITE_BY_TRAINING)
        try:
            if "features_file" in info:
                feat_dim, features_file = int(info["feat_dim"]), str(info["features_file"])
            else:
                height, width, channels = (int(n) for n in info["image_shape"])
                image_format = ImageFormat(**info["image_format"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{model_path} is not a model description ({error!r}); "
                              f"{REWRITE_BY_TRAINING}.") from None
        if "features_file" in info:
            return cls(workdir, config, feat_dim, features_file=features_file)
        image_shape = (height, width, channels)
        transform = augment.preset(config.data.transform)
        size = transform.output_size(image_shape[0])
        module, feat_dim = get_backbone(config.backbone, size)
        backbone = init_backbone(module, feat_dim, (size, size, image_shape[2]), config.seed)
        variables = Checkpointer(os.path.join(workdir, "pretrain", "best"),
                                 read_only=True).restore(backbone.variables)
        # New files are resized to the stored training size whatever the run's setting.
        fmt = dataclasses.replace(image_format, image_size=image_shape[0])
        return cls(workdir, config, feat_dim, backbone, variables, transform, fmt, image_shape)

    def embed(self, images: np.ndarray, desc: str | None = None) -> np.ndarray:
        """Features of images stored like the training images.

        Args:
          images: (N, H, W, C) uint8 images, preprocessed here as the run evaluates.
          desc: a progress-bar label, or None.

        Returns:
          (N, D) features of the frozen backbone.
        """
        self._require_backbone()
        return evaluation.embed(self.backbone.features, self.variables, images,
                                self.transform.eval, desc=desc)

    def split_features(self, split: str, *, max_rows: int | None = None,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of one of the run's own splits.

        Args:
          split: "train", "val" or "test".
          max_rows: None for every row, else a seeded subset of that many rows, in order.
          seed: the subset's seed.

        Returns:
          (features (N, D), labels (N,)): embedded images, or the rows of the features file.
        """
        if self.features_file is not None:
            data = load_feature_file(self.features_file)[split]
            feats, labels = data.features, data.labels
            rows = _subset(len(labels), max_rows, seed)
            return feats[rows], labels[rows]
        dataset = self._dataset(split)
        rows = _subset(len(dataset), max_rows, seed)
        return self.embed(dataset.images[rows], desc=f"embed {split}"), dataset.labels[rows]

    def split_groups(self, split: str, stage: str = "test") -> np.ndarray | None:
        """The alphabet of each class of a split, where episodes stay within one alphabet.

        Args:
          split: "train", "val" or "test".
          stage: "test" or "metatrain": whose `within_alphabet` setting applies.

        Returns:
          The alphabet id of each class of `split` when the run draws its `stage` episodes
          within one alphabet (`metaunlab.research.protocols`), else None.
        """
        if self.features_file is not None or not self.config[stage].get("within_alphabet"):
            return None
        return episode_groups(self.config, self._dataset(split), stage)

    def _dataset(self, split: str):
        if self._datasets is None:  # decoded once for every split asked for
            self._datasets = load_dataset_splits(self.config.data)[0]
        return self._datasets[split]

    def _require_backbone(self) -> None:
        if self.backbone is None:
            raise ConfigError(f"--workdir={self.workdir} was trained on the features of "
                              f"{self.features_file}, so it has no backbone to embed images "
                              "with; give it features, or train on images.")

    def embed_files(self, paths: Sequence[str]) -> np.ndarray:
        """Features of image files, decoded exactly as the training images were.

        Args:
          paths: N image files.

        Returns:
          (N, D) features.
        """
        self._require_backbone()
        return self.embed(np.stack(load_image_files(paths, self.image_format)), "embed files")

    def trained_settings(self) -> list[str]:
        """The meta-trained settings of the run, sorted ("5way_1shot", ...)."""
        root = os.path.join(self.workdir, "metatrain")
        return sorted(os.listdir(root)) if os.path.isdir(root) else []

    def head_for(self, n_way: int, n_shot: int) -> str | None:
        """The setting whose head serves n_way-way n_shot-shot episodes.

        Args:
          n_way: classes per episode.
          n_shot: support images per class.

        Returns:
          The same setting when trained, else any trained one with the same n_way (the
          reference phi depends on n_way only), else one whose head serves any way count
          (`Head.any_ways`; the same shot first), else None.
        """
        settings = self.trained_settings()
        candidates = [setting_name(n_way, n_shot)] + [s for s in settings
                                                      if s.startswith(f"{n_way}way_")]
        found = next((c for c in candidates if c in settings), None)
        if found is not None:
            return found
        any_ways = [s for s in settings if self._setting_head_serves_any_ways(s)]
        same_shot = [s for s in any_ways if s.endswith(f"_{n_shot}shot")]
        return (same_shot or any_ways or [None])[0]

    def _setting_head_serves_any_ways(self, setting: str) -> bool:
        folder = os.path.join(self.workdir, "metatrain", setting)
        return os.path.exists(os.path.join(folder, HEAD_FILE)) and Head.load(folder).any_ways

    def head(self, n_way: int, n_shot: int) -> Head:
        """The composition of the head meta-trained for n_way-way episodes.

        Args:
          n_way: classes per episode.
          n_shot: support images per class (`head_for` picks the setting).

        Returns:
          The `Head` saved beside its checkpoints (`Head.save`), for n_way ways.

        Raises:
          ConfigError: no head serves n_way ways.
        """
        name = self._require_head(n_way, n_shot)
        folder = os.path.join(self.workdir, "metatrain", name)
        if os.path.exists(os.path.join(folder, HEAD_FILE)):
            return Head.load(folder).for_ways(n_way)
        # A work dir written before heads were described: its parameters name the parts.
        params = self.sib_params(n_way, n_shot)
        return Head(sib.n_way_of(params), int(params["init"]["w"].shape[-1]),
                    tuple(k for k in ("power", "centering") if k in params),
                    "balanced" if "readout" in params else None)

    def _require_head(self, n_way: int, n_shot: int) -> str:
        name = self.head_for(n_way, n_shot)
        if name is None:
            raise ConfigError(f"no SIB head for {n_way}-way episodes in {self.workdir} (trained: "
                              f"{', '.join(self.trained_settings()) or 'none'}); meta-train "
                              f"--config.settings={setting_name(n_way, n_shot)}, or one head for "
                              "any way count with --config.metatrain.phi=equivariant, in a new "
                              "work dir.")
        return name

    def sib_params(self, n_way: int, n_shot: int, checkpoint: str = "last") -> sib.Params:
        """The parameters of the SIB head meta-trained for n_way-way episodes.

        Args:
          n_way: classes per episode.
          n_shot: support images per class (`head_for` picks the setting).
          checkpoint: "last" (the end of meta-training) or "best" (best on validation).

        Returns:
          The head's parameter pytree (`metaunlab.sib`, plus the entries of its parts).

        Raises:
          ConfigError: no head was meta-trained for n_way ways.
        """
        name = self._require_head(n_way, n_shot)
        saved = Checkpointer(os.path.join(self.workdir, "metatrain", name, checkpoint),
                             read_only=True).restore()
        # `last` holds the whole training state, `best` the parameters alone.
        return saved["params"] if checkpoint == "last" else saved

    def step_scales(self, n_way: int, n_shot: int,
                    checkpoint: str = "last") -> StepScales | None:
        """The step multiples chosen on validation for the head of n_way-way episodes.

        Args:
          n_way: classes per episode.
          n_shot: support images per class (`head_for` picks the setting).
          checkpoint: "last" or "best".

        Returns:
          The `StepScales` the run tuned for that checkpoint (`test.step_scales`,
          `metaunlab.research.step_tuning`), or None when it tuned none.
        """
        name = self.head_for(n_way, n_shot)
        if name is None:
            return None
        return step_tuning.load(os.path.join(self.workdir, "metatrain", name), checkpoint)

    def predict(self, support_feats: np.ndarray, support_labels: np.ndarray,
                query_feats: np.ndarray, *, checkpoint: str = "last", seed: int = 0,
                step: str = "trained") -> tuple[np.ndarray, np.ndarray]:
        """SIB's and K = 0's class probabilities for the queries of one task
        (`metaunlab.prediction.predict`)."""
        return prediction.predict(self, support_feats, support_labels, query_feats,
                                  checkpoint=checkpoint, seed=seed, step=step)

    def predict_folders(self, support_dir: str, query_dir: str, *, checkpoint: str = "last",
                        seed: int = 0, step: str = "trained") -> Predictions:
        """`predict` on image folders (`metaunlab.prediction.predict_folders`)."""
        return prediction.predict_folders(self, support_dir, query_dir,
                                          checkpoint=checkpoint, seed=seed, step=step)

    def describe_head(self, n_way: int, n_shot: int, checkpoint: str = "last",
                      step: str = "trained") -> str:
        """Which head serves n_way-way n_shot-shot tasks and what it assumes, in one line
        (`metaunlab.prediction.describe_head`)."""
        return prediction.describe_head(self, n_way, n_shot, checkpoint, step)

    def evaluate_episode_file(self, episodes_path: str, image_root: str, *,
                              checkpoint: str = "last") -> dict:
        """SIB and K = 0 on every episode of a reference-format episode file.

        Episodes of different shapes are evaluated in groups (one compilation per shape),
        each with the head trained for its way; the overall numbers average over all
        episodes of the file.

        Args:
          episodes_path: the episode file (`metaunlab.data.episode_files`).
          image_root: the folder its image paths are relative to.
          checkpoint: "last" or "best".

        Returns:
          `{"workdir", "episodes_file", "episodes", "checkpoint", "methods": {"sib", "k0"},
          "by_shape": {...}}`, accuracies in percent with 95% intervals. When every head
          used has step multiples tuned on validation (`step_scales`), the methods add
          "sib_tuned", SIB at the multiple for each episode's query count.
        """
        episode_file = read_episode_file(episodes_path, image_root)
        mt = self.config.metatrain
        # Every head and checkpoint is read before any image is embedded: a missing one is
        # reported before the work.
        heads = {shape: (self.head(shape.n_way, shape.n_shot),
                         self.sib_params(shape.n_way, shape.n_shot, checkpoint))
                 for shape in episode_file.groups}
        scales = {shape: self.step_scales(shape.n_way, shape.n_shot, checkpoint)
                  for shape in episode_file.groups}
        tuned = all(s is not None for s in scales.values())
        feats = self.embed_files(episode_file.paths)
        per_method: dict[str, list[np.ndarray]] = {}
        by_shape = {}
        for shape, (_, episodes) in episode_file.groups.items():
            name = f"{setting_name(shape.n_way, shape.n_shot)}_{shape.n_query}query"
            by_shape[name] = {"episodes": len(episodes)}
            variants = evaluation.sib_variants(
                *heads[shape], steps=mt.sib_steps, lr=mt.inner_lr,
                step_scales=scales[shape] if tuned else None)
            for method, head in variants.items():
                result = evaluation.evaluate(head, feats, episodes)
                per_method.setdefault(method, []).append(result.accuracies)
                by_shape[name][method] = {"accuracy": result.accuracy, "ci95": result.ci95}
                if method == "sib_tuned":
                    by_shape[name][method]["step_scale"] = scales[shape].scale_at(
                        shape.n_query)
        methods = {}
        for method, parts in per_method.items():
            mean, ci = evaluation.mean_and_ci95(np.concatenate(parts))
            methods[method] = {"accuracy": mean, "ci95": ci,
                               "steps": 0 if method == "k0" else mt.sib_steps}
        return {"workdir": self.workdir, "episodes_file": episodes_path,
                "episodes": episode_file.num_episodes, "checkpoint": checkpoint,
                "methods": methods, "by_shape": by_shape}
