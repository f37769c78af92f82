"""Turn a checkpoint of the SIB reference code into a metaunlab work directory.

A reference checkpoint is either a backbone state dict (the reference's ``main_feat.py``
output, e.g. ``netFeatBest64.653.pth``) or a meta-training checkpoint ``{"netFeat", "SIB",
"lr", "nbStep"}`` (``main.py``'s ``netSIBBest.pth`` / ``netSIBLast.pth``). The work
directory written here is the one a training run would have written at that point:

* ``config.json``: the experiment config the caller passes, with ``backbone`` = the
  architecture, ``pretrain.epochs = 0`` (use the backbone in ``pretrain/best``, never
  pretrain over it) and, for SIB checkpoints, ``settings = "<N>way_<shot>shot"``,
  ``metatrain.sib_steps = nbStep`` and ``metatrain.inner_lr = metatrain.lr = lr`` (the
  reference uses one value for both);
* ``model.json``: the stored image shape and format and the feature dimension;
* ``pretrain/best``: the backbone variables ``{"params", "batch_stats"}``;
* for SIB checkpoints, ``metatrain/<N>way_<shot>shot/last`` (a step-0 meta-training state
  around the imported head, so rerunning the experiment on this work dir continues
  meta-training from it) and ``.../best`` (the head's parameters).

The reference has no notion of the shot a head was trained for (phi depends on the number
of ways only), hence ``shot``. Conv-4 heads get their per-feature weights permuted into this
package's feature order (see ``convert.py``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from metaunlab.backbones import get_backbone
from metaunlab.data import augment
from metaunlab.data.errors import DataError
from metaunlab.errors import ConfigError
from metaunlab.interop.convert import (
    backbone_from_torch,
    canonical_arch,
    sib_from_torch,
    split_checkpoint,
)
from metaunlab.interop.pth import load_pth
from metaunlab.train import metatrain
from metaunlab.train.checkpoints import Checkpointer
from metaunlab.train.checks import MAX_SIB_STEPS
from metaunlab.train.workdir import save_config, write_json_atomic


def _workdir_is_free(workdir: str) -> None:
    for sub in ("pretrain", "metatrain"):
        path = os.path.join(workdir, sub)
        if os.path.isdir(path) and os.listdir(path):
            raise ConfigError(f"--workdir={workdir} already holds a model ({path} is not empty); "
                             "import into a new work directory.")


def _check_fits(arch: str, size: int, variables: Any) -> int:
    """The feature dimension of `arch` at `size` px, once the converted weights fit it."""
    module, feat_dim = get_backbone(arch, size)
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, size, size, 3)), train=False))
    got = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32),
                                 variables)
    if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(got) or any(
            a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(expected),
                                               jax.tree_util.tree_leaves(got), strict=True)):
        raise DataError(f"the converted {arch} weights do not fit this package's {arch} for "
                         f"{size} px inputs (3 input channels).")
    return feat_dim


def _sib_schedule(meta: dict[str, Any]) -> tuple[int, float]:
    steps, lr = meta["nbStep"], meta["lr"]
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= MAX_SIB_STEPS:
        raise DataError(f"the checkpoint's nbStep is {steps!r}, not a number of synthetic "
                        f"steps from 0 to {MAX_SIB_STEPS}; the file is not a SIB checkpoint.")
    if (not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr)
            or not 0 < lr <= 10):
        raise DataError(f"the checkpoint's lr is {lr!r}, not a step size in (0, 10]; the file "
                        "is not a SIB checkpoint.")
    return steps, float(lr)


def import_checkpoint(checkpoint: str, arch: str, config: ml_collections.ConfigDict,
                      workdir: str, shot: int = 1, use_torch: bool | None = None
                      ) -> dict[str, Any]:
    """Write the work directory described in the module docstring; returns a summary dict.

    `config` is the experiment config of the checkpoint's dataset (its `data.image_size` is
    the stored image size). Raises ConfigError or DataError (one sentence) for
    anything a user can get wrong.
    """
    arch = canonical_arch(arch)
    if shot < 1:
        raise ConfigError(f"--shot must be at least 1, got {shot}.")
    if not os.path.isfile(checkpoint):
        raise ConfigError(f"--checkpoint={checkpoint} does not exist; give the path of a "
                          ".pth file.")
    _workdir_is_free(workdir)
    feat_sd, sib_sd, meta = split_checkpoint(load_pth(checkpoint, use_torch=use_torch))

    config = ml_collections.ConfigDict(config.to_dict())
    config.backbone = arch
    config.pretrain.epochs = 0
    image_size = config.data.image_size
    size = augment.preset(config.data.transform).output_size(image_size)
    variables = backbone_from_torch(arch, feat_sd)
    feat_dim = _check_fits(arch, size, variables)

    dataset = config.data.name
    summary: dict[str, Any] = {"workdir": workdir, "arch": arch, "dataset": dataset,
                               "feat_dim": feat_dim, "sib": None}
    params = None
    if sib_sd is not None:
        params = sib_from_torch(sib_sd, arch=arch)
        n_way, head_dim = (params["grad_net"]["dense1"]["kernel"].shape[0],
                           params["init"]["w"].shape[0])
        if head_dim != feat_dim:
            raise DataError(f"the SIB head takes {head_dim} features but the {arch} backbone "
                             f"gives {feat_dim} on {dataset} ({size} px inputs); check --arch "
                             "and --dataset.")
        steps, lr = _sib_schedule(meta)
        setting = f"{n_way}way_{shot}shot"
        config.settings = setting
        config.metatrain.n_way, config.metatrain.n_shot = n_way, shot
        config.metatrain.sib_steps = steps
        config.metatrain.inner_lr = lr
        config.metatrain.lr = lr
        summary["sib"] = {"setting": setting, "n_way": n_way, "steps": steps, "lr": lr}

    os.makedirs(workdir, exist_ok=True)
    save_config(workdir, config)
    write_json_atomic(os.path.join(workdir, "model.json"), {
        "image_shape": [image_size, image_size, 3],
        "image_format": {"channels": 3, "image_size": image_size, "resample": "bilinear",
                         "invert": False},
        "feat_dim": feat_dim})

    def as_jax(tree):
        return jax.tree_util.tree_map(jnp.asarray, tree)

    Checkpointer(os.path.join(workdir, "pretrain", "best")).save(0, as_jax(variables))
    if params is not None:
        params = as_jax(params)
        mt = config.metatrain
        state = metatrain.init_state(params, metatrain.make_optimizer(mt), mt.seed)
        root = os.path.join(workdir, "metatrain", summary["sib"]["setting"])
        Checkpointer(os.path.join(root, "last")).save(0, state)
        Checkpointer(os.path.join(root, "best")).save(0, params)
        metatrain.head_of_config(mt, feat_dim).save(root)  # the authors' head: the reference
    return summary
