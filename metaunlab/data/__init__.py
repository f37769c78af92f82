"""Data layer: datasets, loaders for Omniglot and the SIB folder layout, episode sampling."""

from metaunlab.data.dataset import ImageDataset, concat
from metaunlab.data.episodes import (
    Episodes,
    EpisodeSampler,
    EpisodeShape,
    batch_episodes,
    check_episode_shape,
    fixed_episodes_to_json,
    load_episodes_json,
    resolve_episode_paths,
    save_episodes_json,
)
from metaunlab.data.errors import DataError
from metaunlab.data.folders import load_reference_layout, load_split_folder
from metaunlab.data.omniglot import (
    DEFAULT_OMNIGLOT_DIR,
    load_omniglot,
    rotate_classes,
    split_omniglot,
)

__all__ = [
    "DEFAULT_OMNIGLOT_DIR",
    "DataError",
    "EpisodeSampler",
    "EpisodeShape",
    "Episodes",
    "ImageDataset",
    "batch_episodes",
    "check_episode_shape",
    "concat",
    "fixed_episodes_to_json",
    "load_episodes_json",
    "load_omniglot",
    "load_reference_layout",
    "load_split_folder",
    "resolve_episode_paths",
    "rotate_classes",
    "save_episodes_json",
    "split_omniglot",
]
