"""Turn a PyTorch checkpoint of the SIB reference code into a metaunlab work directory.

    python -m experiments.import_torch --checkpoint=FILE.pth --arch=wrn28_10 \
        --dataset=miniimagenet --workdir=W [--shot=1] [--torch_free]

FILE.pth is either a backbone state dict (the reference's main_feat.py output) or a
meta-training checkpoint {"netFeat", "SIB", "lr", "nbStep"} (main.py's netSIBBest/Last.pth).
W receives:

* config.json: the dataset's experiment config with backbone = --arch, pretrain.epochs = 0
  (use the backbone in pretrain/best, do not pretrain) and, for SIB checkpoints,
  settings = "<N>way_<shot>shot", metatrain.sib_steps = nbStep (K) and metatrain.inner_lr =
  metatrain.lr = lr (the reference uses one value for both);
* model.json: the stored image shape and format and the feature dimension;
* pretrain/best: the backbone variables {"params", "batch_stats"};
* for SIB checkpoints, metatrain/<N>way_<shot>shot/last (a step-0 meta-training state around
  the imported head) and .../best (the head's parameters).

Then `python -m experiments.evaluate --workdir=W ...` evaluates the imported model, and
`metaunlab.restore.TrainedModel.load(W)` reads it. The reference has no notion of the shot
a head was trained for (phi depends on the number of ways only), hence --shot (default 1).
Conv-4 heads get their per-feature weights permuted into this package's feature order (see
metaunlab/interop/convert.py).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from absl import app, flags, logging

# dataset name -> (config module, stored image size)
DATASETS = {"miniimagenet": ("miniimagenet", 84), "cifar_fs": ("cifar_fs", 32)}


def _canonical_dataset(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown --dataset={name!r}; the reference checkpoints are for "
                         f"{' or '.join(DATASETS)}.")
    return key


def _workdir_is_free(workdir: str) -> None:
    for sub in ("pretrain", "metatrain"):
        path = os.path.join(workdir, sub)
        if os.path.isdir(path) and os.listdir(path):
            raise ValueError(f"--workdir={workdir} already holds a model ({path} is not empty); "
                             "import into a new work directory.")


def import_checkpoint(checkpoint: str, arch: str, dataset: str, workdir: str, shot: int = 1,
                      use_torch: bool | None = None) -> dict[str, Any]:
    """Write the work directory described in the module docstring; returns a summary dict.

    Raises FileNotFoundError or ValueError (one sentence) for anything a user can get wrong.
    """
    from metaunlab.interop import canonical_arch, load_pth, split_checkpoint

    arch = canonical_arch(arch)
    dataset = _canonical_dataset(dataset)
    if shot < 1:
        raise ValueError(f"--shot must be at least 1, got {shot}.")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"--checkpoint={checkpoint} does not exist.")
    _workdir_is_free(workdir)
    feat_sd, sib_sd, meta = split_checkpoint(load_pth(checkpoint, use_torch=use_torch))

    # Heavy imports only once the cheap checks have passed.
    import jax
    import jax.numpy as jnp
    import numpy as np

    from metaunlab import metatrain
    from metaunlab.backbones import get_backbone
    from metaunlab.checkpoints import Checkpointer
    from metaunlab.data import augment
    from metaunlab.interop import backbone_from_torch, sib_from_torch
    from metaunlab.workdir import save_config, write_json_atomic

    module_name, image_size = DATASETS[dataset]
    config = importlib.import_module(f"experiments.configs.{module_name}").get_config(
        "5shot" if shot == 5 else "1shot")
    config.backbone = arch
    config.pretrain.epochs = 0

    transform = augment.preset(config.data.transform)
    size = transform.output_size(image_size)
    module, feat_dim = get_backbone(arch, size)
    variables = backbone_from_torch(arch, feat_sd)
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, size, size, 3)), train=False))
    got = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32),
                                 variables)
    if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(got) or any(
            a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(expected),
                                               jax.tree_util.tree_leaves(got), strict=True)):
        raise ValueError(f"the converted {arch} weights do not fit this package's {arch} for "
                         f"{size} px inputs (3 input channels).")

    summary: dict[str, Any] = {"workdir": workdir, "arch": arch, "dataset": dataset,
                               "feat_dim": feat_dim, "sib": None}
    params = None
    if sib_sd is not None:
        params = sib_from_torch(sib_sd, arch=arch)
        n_way, head_dim = params["grad_net"]["dense1"]["kernel"].shape[0], params["init"][
            "w"].shape[0]
        if head_dim != feat_dim:
            raise ValueError(f"the SIB head takes {head_dim} features but the {arch} backbone "
                             f"gives {feat_dim} on {dataset} ({size} px inputs); check --arch "
                             "and --dataset.")
        steps, lr = meta["nbStep"], meta["lr"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"the checkpoint's nbStep is {steps!r}, not a number of steps.")
        if not isinstance(lr, int | float) or isinstance(lr, bool):
            raise ValueError(f"the checkpoint's lr is {lr!r}, not a step size.")
        setting = f"{n_way}way_{shot}shot"
        config.settings = setting
        config.metatrain.n_way, config.metatrain.n_shot = n_way, shot
        config.metatrain.sib_steps = steps
        config.metatrain.inner_lr = float(lr)
        config.metatrain.lr = float(lr)
        summary["sib"] = {"setting": setting, "n_way": n_way, "steps": steps, "lr": float(lr)}

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
    return summary


flags.DEFINE_string("checkpoint", None, "The reference .pth file.", required=True)
flags.DEFINE_string("arch", None, "conv4 or wrn28_10 (ConvNet_4_64, WRN_28_10).", required=True)
flags.DEFINE_string("dataset", None, "miniimagenet or cifar_fs.", required=True)
flags.DEFINE_string("workdir", None, "The new work directory.", required=True)
flags.DEFINE_integer("shot", 1, "The shot the SIB head is filed under (N-way <shot>-shot).")
flags.DEFINE_bool("torch_free", False, "Read the .pth with the restricted torch-free reader "
                  "even when torch is installed.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        summary = import_checkpoint(FLAGS.checkpoint, FLAGS.arch, FLAGS.dataset, FLAGS.workdir,
                                    shot=FLAGS.shot,
                                    use_torch=False if FLAGS.torch_free else None)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
