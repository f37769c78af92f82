"""Frozen-feature cache: the backbone's features of every training image, computed once.

The backbone is frozen during meta-training, so the reference's per-episode forward pass
only differs from a lookup through the random augmentation of the training images. The
cache keeps M augmented views of each image (M = `views`), drawn once with the training
transform, and each episode picks one view per image at random; `views = 0` keeps one
un-augmented feature per image (the evaluation transform), which is exact whenever the
training transform draws nothing at random.

The cache lives in the work dir, `<workdir>/feature_cache/train_views<M>.npy` with a JSON
description beside it, and is written atomically (temporary file, then rename), so a rerun
reuses it and an interrupted run never leaves half an array behind. A cache made for other
images, another backbone checkpoint, transform, seed or M is recomputed, not reused, and
so is a damaged one (with a warning).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from metaunlab import evaluation
from metaunlab.data.augment import ImageTransform
from metaunlab.errors import ConfigError, shown
from metaunlab.files import atomic_path
from metaunlab.train.workdir import read_json, write_json_atomic

_COMPUTED_AGAIN = "the feature cache is computed again"


def fingerprint(tree: Any) -> str:
    """A short hash of a pytree of arrays: which images, or which backbone weights."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def compute_views(feature_fn: Callable, variables: Any, images: np.ndarray,
                  transform: ImageTransform, views: int, seed: int,
                  desc: str | None = None) -> np.ndarray:
    """(N, D) un-augmented features when `views` is 0, else (N, views, D) augmented ones."""
    if views < 0:
        raise ConfigError(f"--config.metatrain.feature_views={views}; use 0 (un-augmented "
                         "features) or the number of augmented views per image.")
    if views == 0:
        return evaluation.embed(feature_fn, variables, images, transform.eval, desc=desc)
    rng = jax.random.PRNGKey(seed)
    per_view = [evaluation.embed(feature_fn, variables, images, transform.train,
                                 rng=jax.random.fold_in(rng, view),
                                 desc=None if desc is None else f"{desc} view {view + 1}/{views}")
                for view in range(views)]
    return np.stack(per_view, axis=1)


def load_or_compute(cache_dir: str, feature_fn: Callable, variables: Any, images: np.ndarray,
                    transform: ImageTransform, *, views: int, seed: int,
                    desc: str | None = None) -> np.ndarray:
    """The cached features of `images` (see the module docstring), computing them if needed."""
    description = {"views": views, "seed": seed, "transform": repr(transform),
                   "images": fingerprint(images), "backbone": fingerprint(variables),
                   "count": len(images)}
    array_path = os.path.join(cache_dir, f"train_views{views}.npy")
    info_path = array_path[:-len(".npy")] + ".json"
    if os.path.exists(array_path) and os.path.exists(info_path):
        try:  # a damaged cache is computed again
            if read_json(info_path, _COMPUTED_AGAIN) == description:
                return np.load(array_path)
        except ConfigError as error:
            logging.warning("%s", error)
        except (ValueError, EOFError) as error:
            logging.warning("%s is damaged (%s); %s.", shown(array_path), error, _COMPUTED_AGAIN)
    feats = compute_views(feature_fn, variables, images, transform, views, seed, desc=desc)
    os.makedirs(cache_dir, exist_ok=True)
    with atomic_path(array_path, suffix=".npy") as partial:
        np.save(partial, feats)
    write_json_atomic(info_path, description)
    return feats
