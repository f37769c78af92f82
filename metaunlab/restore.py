"""A trained model read back from its work directory: backbone, transform and SIB heads."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from metaunlab import evaluation, metatrain, sib
from metaunlab.backbones import get_backbone
from metaunlab.checkpoints import Checkpointer
from metaunlab.data import augment
from metaunlab.data.decode import ImageFormat, load_image_files
from metaunlab.pretrain import Backbone, init_backbone
from metaunlab.workdir import load_config, read_json


@dataclasses.dataclass
class TrainedModel:
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
        return evaluation.embed(self.backbone.features, self.variables, images,
                                self.transform.eval, desc=desc)

    def embed_files(self, paths: Sequence[str]) -> np.ndarray:
        return self.embed(np.stack(load_image_files(paths, self.image_format)), "embed files")

    def trained_settings(self) -> list[str]:
        root = os.path.join(self.workdir, "metatrain")
        return sorted(os.listdir(root)) if os.path.isdir(root) else []

    def sib_params(self, n_way: int, n_shot: int, checkpoint: str = "last") -> sib.Params:
        """The SIB head meta-trained for n_way (same n_shot preferred: phi depends on n_way)."""
        settings = self.trained_settings()
        candidates = [f"{n_way}way_{n_shot}shot"] + [s for s in settings
                                                      if s.startswith(f"{n_way}way_")]
        name = next((c for c in candidates if c in settings), None)
        if name is None:
            raise ValueError(f"no SIB head for {n_way}-way episodes in {self.workdir} (trained: "
                             f"{', '.join(settings) or 'none'}); meta-train with "
                             f"--config.settings={n_way}way_{n_shot}shot first.")
        mt = self.config.metatrain
        params = sib.init(jax.random.PRNGKey(0), n_way, self.backbone.feat_dim)
        directory = os.path.join(self.workdir, "metatrain", name, checkpoint)
        if checkpoint == "best":
            return Checkpointer(directory).restore(params)
        state = metatrain.init_state(params, metatrain.make_optimizer(mt), mt.seed)
        return Checkpointer(directory).restore(state)["params"]
