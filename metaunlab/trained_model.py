"""A trained run read back from its work directory: backbone, preprocessing and SIB heads.

    model = TrainedModel.load("workdirs/omniglot")
    feats = model.embed_files(paths)                 # images read exactly as in training
    params = model.sib_params(n_way=5, n_shot=1)     # the head meta-trained for 5-way
    results = model.evaluate_episode_file("episodes.json", image_root="images/")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from metaunlab import evaluation, sib
from metaunlab.backbones import Backbone, get_backbone, init_backbone
from metaunlab.checkpoints import Checkpointer
from metaunlab.data import augment
from metaunlab.data.decode import ImageFormat, load_image_files
from metaunlab.data.episode_files import read_episode_file
from metaunlab.methods.sib_head import sib_method
from metaunlab.workdir import load_config, read_json


def setting_name(n_way: int, n_shot: int) -> str:
    """(5, 1) -> "5way_1shot", the name of a meta-training setting and its folder."""
    return f"{n_way}way_{n_shot}shot"


@dataclasses.dataclass
class TrainedModel:
    """The frozen backbone of a work dir with its variables and input preprocessing."""

    workdir: str
    config: ml_collections.ConfigDict
    backbone: Backbone
    variables: Any
    transform: augment.ImageTransform
    image_format: ImageFormat
    image_shape: tuple[int, int, int]

    @classmethod
    def load(cls, workdir: str) -> TrainedModel:
        config = load_config(workdir)
        model_path = os.path.join(workdir, "model.json")
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{model_path} does not exist; the run in --workdir={workdir} "
                                    "did not get past data loading, so there is no model yet.")
        info = read_json(model_path)
        image_shape = tuple(info["image_shape"])
        transform = augment.preset(config.data.transform)
        size = transform.output_size(image_shape[0])
        module, feat_dim = get_backbone(config.backbone, size)
        backbone = init_backbone(module, feat_dim, (size, size, image_shape[2]), config.seed)
        variables = Checkpointer(os.path.join(workdir, "pretrain", "best")).restore(
            backbone.variables)
        # New files are resized to the stored training size whatever the run's setting.
        fmt = dataclasses.replace(ImageFormat(**info["image_format"]),
                                  image_size=image_shape[0])
        return cls(workdir, config, backbone, variables, transform, fmt, image_shape)

    def embed(self, images: np.ndarray, desc: str | None = None) -> np.ndarray:
        """Features (N, D) of uint8 images (N, H, W, C) stored like the training images."""
        return evaluation.embed(self.backbone.features, self.variables, images,
                                self.transform.eval, desc=desc)

    def embed_files(self, paths: Sequence[str]) -> np.ndarray:
        """Features (N, D) of image files, decoded exactly as the training images were."""
        return self.embed(np.stack(load_image_files(paths, self.image_format)), "embed files")

    def trained_settings(self) -> list[str]:
        """The meta-trained settings of the run ("5way_1shot", ...)."""
        root = os.path.join(self.workdir, "metatrain")
        return sorted(os.listdir(root)) if os.path.isdir(root) else []

    def head_for(self, n_way: int, n_shot: int) -> str | None:
        """The setting whose head serves n_way-way n_shot-shot episodes: the same setting
        when trained, else any with the same n_way (phi depends on n_way only)."""
        settings = self.trained_settings()
        candidates = [setting_name(n_way, n_shot)] + [s for s in settings
                                                      if s.startswith(f"{n_way}way_")]
        return next((c for c in candidates if c in settings), None)

    def sib_params(self, n_way: int, n_shot: int, checkpoint: str = "last") -> sib.Params:
        """The SIB head meta-trained for n_way-way episodes (`head_for`)."""
        name = self.head_for(n_way, n_shot)
        if name is None:
            raise ValueError(f"no SIB head for {n_way}-way episodes in {self.workdir} (trained: "
                             f"{', '.join(self.trained_settings()) or 'none'}); meta-train "
                             f"with --config.settings={setting_name(n_way, n_shot)} first.")
        saved = Checkpointer(os.path.join(self.workdir, "metatrain", name, checkpoint)).restore()
        # `last` holds the whole training state, `best` the parameters alone.
        return saved["params"] if checkpoint == "last" else saved

    def evaluate_episode_file(self, episodes_path: str, image_root: str, *,
                              checkpoint: str = "last") -> dict:
        """SIB and K = 0 on every episode of a reference-format episode file.

        Returns `{"workdir", "episodes_file", "episodes", "checkpoint", "methods": {"sib",
        "k0"}, "by_shape": {...}}`, accuracies in percent with 95% intervals. Episodes of
        different shapes are evaluated in groups (one compilation per shape), each with the
        head trained for its way; the overall numbers average over all episodes of the file.
        """
        episode_file = read_episode_file(episodes_path, image_root)
        feats = self.embed_files(episode_file.paths)
        mt = self.config.metatrain
        per_method: dict[str, list[np.ndarray]] = {"sib": [], "k0": []}
        by_shape = {}
        for shape, (_, episodes) in episode_file.groups.items():
            params = self.sib_params(shape.n_way, shape.n_shot, checkpoint)
            name = f"{setting_name(shape.n_way, shape.n_shot)}_{shape.n_query}query"
            by_shape[name] = {"episodes": len(episodes)}
            for method, steps in (("sib", mt.sib_steps), ("k0", 0)):
                head = sib_method(params, steps, mt.inner_lr)
                result = evaluation.evaluate(head, feats, episodes)
                per_method[method].append(result.accuracies)
                by_shape[name][method] = {"accuracy": result.accuracy, "ci95": result.ci95}
        methods = {}
        for method, parts in per_method.items():
            mean, ci = evaluation.mean_and_ci95(np.concatenate(parts))
            methods[method] = {"accuracy": mean, "ci95": ci,
                               "steps": mt.sib_steps if method == "sib" else 0}
        return {"workdir": self.workdir, "episodes_file": episodes_path,
                "episodes": episode_file.num_episodes, "checkpoint": checkpoint,
                "methods": methods, "by_shape": by_shape}
