"""Data layer: datasets, a loader per on-disk form, episodes and episode files, augmentation.

`load_dataset_splits(config.data)` (sources.py) picks the loader for a config."""

from metaunlab.data.cifar100 import load_cifar100, load_cifar_fs, load_fc100
from metaunlab.data.dataset import ImageDataset, concat
from metaunlab.data.episode_files import (
    EpisodeFile,
    fixed_episodes_to_json,
    load_episodes_json,
    read_episode_file,
    resolve_episode_paths,
    save_episodes_json,
)
from metaunlab.data.episodes import (
    Episodes,
    EpisodeSampler,
    EpisodeShape,
    batch_episodes,
    check_episode_shape,
)
from metaunlab.data.errors import DataError
from metaunlab.data.folders import load_reference_layout, load_split_folder
from metaunlab.data.mini_imagenet import load_mini_imagenet, load_pickle_cache
from metaunlab.data.omniglot import (
    DEFAULT_OMNIGLOT_DIR,
    load_omniglot,
    mirror_classes,
    rotate_classes,
    split_omniglot,
)
from metaunlab.data.safe_pickle import load_data_pickle
from metaunlab.data.sources import load_dataset_splits
from metaunlab.data.tiered_imagenet import load_tiered_imagenet, load_tiered_split
from metaunlab.data.user_folders import load_user_folders

__all__ = [
    "DEFAULT_OMNIGLOT_DIR",
    "DataError",
    "EpisodeFile",
    "EpisodeSampler",
    "EpisodeShape",
    "Episodes",
    "ImageDataset",
    "batch_episodes",
    "check_episode_shape",
    "concat",
    "fixed_episodes_to_json",
    "load_cifar100",
    "load_cifar_fs",
    "load_data_pickle",
    "load_dataset_splits",
    "load_episodes_json",
    "load_fc100",
    "load_mini_imagenet",
    "load_omniglot",
    "load_pickle_cache",
    "load_reference_layout",
    "load_split_folder",
    "load_tiered_imagenet",
    "load_tiered_split",
    "load_user_folders",
    "mirror_classes",
    "read_episode_file",
    "resolve_episode_paths",
    "rotate_classes",
    "save_episodes_json",
    "split_omniglot",
]
