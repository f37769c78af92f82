"""What meta-training and testing read: a run's splits, its frozen backbone and the
meta-training source (images or cached features), built from a config.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from metaunlab import evaluation
from metaunlab.backbones import Backbone, get_backbone, init_backbone
from metaunlab.data import augment
from metaunlab.data.dataset import ImageDataset
from metaunlab.data.decode import ImageFormat
from metaunlab.data.episode_files import episodes_from_records, load_episodes_json
from metaunlab.data.episodes import Episodes, EpisodeSampler, EpisodeShape, check_episode_shape
from metaunlab.data.errors import DataError
from metaunlab.data.features import load_feature_file
from metaunlab.data.sources import load_dataset_splits
from metaunlab.errors import ConfigError
from metaunlab.research.protocols import (
    episode_group_names,
    episode_groups,
    meta_test_query_counts,
)
from metaunlab.research.step_tuning import parse_candidates
from metaunlab.train import feature_cache
from metaunlab.train.config_checks import parse_settings
from metaunlab.train.metatrain import (
    training_query_counts,
    with_defaults,
)
from metaunlab.train.metrics import MetricWriter
from metaunlab.train.pretrain import pretrain
from metaunlab.train.workdir import write_json_atomic


@dataclasses.dataclass
class Splits:
    """The three class-disjoint splits, and what is needed to read more images like them."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    image_format: ImageFormat
    val_paths: list[str] | None = None  # relative paths of val images (reference JSON)
    val_root: str | None = None


def load_splits(data: ml_collections.ConfigDict) -> Splits:
    """The splits of ``config.data``; ``metaunlab.data.sources`` knows every data set."""
    splits, extras = load_dataset_splits(data)
    return Splits(splits["train"], splits["val"], splits["test"], extras.image_format,
                  val_paths=extras.val_paths, val_root=extras.val_root)


def validation_episodes(config: ml_collections.ConfigDict, splits: Splits,
                        shape: EpisodeShape) -> Episodes:
    """The reference's fixed JSON episodes when the dataset ships them, else seeded ones
    (within one alphabet each with `test.within_alphabet`)."""
    if splits.val_paths is not None and config.data.root:
        path = os.path.join(config.data.root, f"val1000Episode_{shape.n_way}_way_"
                                              f"{shape.n_shot}_shot.json")
        if os.path.exists(path):
            index_of = {p: i for i, p in enumerate(splits.val_paths)}
            groups = episodes_from_records(load_episodes_json(path), index_of, source=path)
            if list(groups) != [shape]:
                raise DataError(f"{path} holds episodes of shapes {list(groups)}, not {shape}; "
                                "regenerate it or remove it to use seeded episodes.")
            return next(iter(groups.values()))[1]
    sampler = EpisodeSampler(splits.val, shape, seed=config.val_seed, split_name="val",
                             groups=episode_groups(config, splits.val, "test"))
    return sampler.sample(0, config.val_episodes)


def check_shapes_before_training(config: ml_collections.ConfigDict, train, val, test, *,
                                 pretraining: bool = True) -> None:
    """Fail in seconds, not after pretraining, when a split (an ImageDataset or a labels
    array) cannot hold a requested episode."""
    pre = config.pretrain
    if pretraining:
        check_episode_shape(val, EpisodeShape(pre.val_n_way, pre.val_n_shot, pre.val_n_query),
                            "val")
    train_queries = max(training_query_counts(config.metatrain))
    for n_way, n_shot in parse_settings(config.settings):
        # Samplers check every shape, and with groups that some alphabet has n_way classes.
        EpisodeSampler(train, EpisodeShape(n_way, n_shot, train_queries), 0, "train",
                       groups=episode_groups(config, train, "metatrain"))
        EpisodeSampler(val, EpisodeShape(n_way, n_shot, config.metatrain.n_query), 0, "val",
                       groups=episode_groups(config, val, "test"))
        for n_query in meta_test_query_counts(config):
            EpisodeSampler(test, EpisodeShape(n_way, n_shot, n_query), 0, "test",
                           groups=episode_groups(config, test, "test"))
            if parse_candidates(config.test.step_scales):  # tuned on val
                EpisodeSampler(val, EpisodeShape(n_way, n_shot, n_query), 0, "val",
                               groups=episode_groups(config, val, "test"))


def meta_training_source(config: ml_collections.ConfigDict, backbone: Backbone, variables,
                         train_images, transform: augment.ImageTransform, workdir: str):
    """What meta-training reads: `(source, feature_fn, transform, mode)` for `meta_train`.

    `config.metatrain.source` is "images" (faithful: features recomputed inside every step
    on images augmented with the meta-training transform), "features" (the frozen-feature
    cache of `metatrain.feature_views` augmented views per image, or un-augmented features
    when 0; see `metaunlab.train.feature_cache`) or "auto" (features when the transform draws
    nothing at random, where both are the same computation, else images).
    """
    mt = with_defaults(config.metatrain)
    mt_transform = augment.preset(mt.transform) if mt.transform else transform
    stored = train_images.shape[1]
    if mt_transform.output_size(stored) != transform.output_size(stored):
        raise ConfigError(f"--config.metatrain.transform={mt.transform!r} changes the image size; "
                         "pick a transform with the same output size as data.transform.")
    mode = mt.source
    if mode == "auto":
        mode = "features" if mt_transform.train_equals_eval else "images"
    if mode == "images":
        return train_images, backbone.features, mt_transform, mode
    if mode != "features":
        raise ConfigError(f"--config.metatrain.source={mode!r}; use auto, images or features.")
    views = mt.feature_views
    if views == 0 and not mt_transform.train_equals_eval:
        tqdm.write("metatrain: caching un-augmented features although the meta-training "
                   "transform augments; set --config.metatrain.feature_views=M for M "
                   "augmented views per image, or source=images for the faithful path")
    feats = feature_cache.load_or_compute(
        os.path.join(workdir, "feature_cache"), backbone.features, variables, train_images,
        mt_transform, views=views, seed=mt.seed, desc="cache train features")
    return feats, None, None, f"features_views{views}" if views else mode


def build_backbone(config: ml_collections.ConfigDict, splits: Splits
                   ) -> tuple[Backbone, augment.ImageTransform]:
    transform = augment.preset(config.data.transform)
    stored = splits.train.images.shape
    image_size = transform.output_size(stored[1])
    # Block remat only matters where gradients flow through the backbone: pretraining.
    module, feat_dim = get_backbone(config.backbone, image_size,
                                    remat=config.pretrain.backbone_remat)
    return init_backbone(module, feat_dim, (image_size, image_size, stored[3]),
                         config.seed), transform


@dataclasses.dataclass
class MetaTrainingInputs:
    """What meta-training and meta-testing read, from images and a pretrained backbone or
    from a features file: the arguments of `meta_train` and the test features."""

    feat_dim: int
    source: Any  # (N, D) features, (N, M, D) cached views or (N, H, W, C) images
    mode: str  # how the source was made, for results.json
    train_labels: np.ndarray
    val_feats: np.ndarray
    val_episodes: Callable[[EpisodeShape], Episodes]
    test_feats: np.ndarray
    test_labels: Any  # labels array or ImageDataset (class names in errors)
    val_labels: Any = None  # for seeded validation episodes of any shape (step tuning)
    val_groups: np.ndarray | None = None
    train_groups: np.ndarray | None = None  # alphabet per class for within-alphabet episodes
    test_groups: np.ndarray | None = None
    episode_group_names: tuple[str, ...] = ()
    backbone_variables: Any = None
    feature_fn: Any = None
    transform: Any = None


def from_images(config: ml_collections.ConfigDict, workdir: str,
                writer: MetricWriter) -> MetaTrainingInputs:
    """Load the images, pretrain the backbone (or resume), embed val and test."""
    splits = load_splits(config.data)
    tqdm.write(f"data: {splits.train.num_classes} train / {splits.val.num_classes} val / "
               f"{splits.test.num_classes} test classes, {len(splits.train)} train images of "
               f"shape {splits.train.images.shape[1:]}")
    check_shapes_before_training(config, splits.train, splits.val, splits.test)
    backbone, transform = build_backbone(config, splits)
    # What `experiments.evaluate` needs to turn new image files into the same inputs.
    write_json_atomic(os.path.join(workdir, "model.json"), {
        "image_shape": list(splits.train.images.shape[1:]),
        "image_format": dataclasses.asdict(splits.image_format),
        "feat_dim": backbone.feat_dim})

    pre = config.pretrain
    pre_shape = EpisodeShape(pre.val_n_way, pre.val_n_shot, pre.val_n_query)
    # Pretraining may augment more than meta-training (config.pretrain.transform); both
    # evaluate through the data's own transform.
    pre_transform = augment.preset(pre.transform) if pre.transform else transform
    if pre_transform.output_size(splits.train.images.shape[1]) != transform.output_size(
            splits.train.images.shape[1]):
        raise ConfigError(f"--config.pretrain.transform={pre.transform!r} changes the image "
                          "size; pick a transform with the same output size as data.transform.")
    variables = pretrain(pre, backbone, splits.train, splits.val.images,
                         validation_episodes(config, splits, pre_shape), pre_transform,
                         workdir, writer)

    def embed(images, desc):
        return evaluation.embed(backbone.features, variables, images, transform.eval,
                                desc=desc)

    source, feature_fn, train_transform, mode = meta_training_source(
        config, backbone, variables, splits.train.images, transform, workdir)
    return MetaTrainingInputs(
        backbone.feat_dim, source, mode, splits.train.labels,
        embed(splits.val.images, "embed val"),
        lambda shape: validation_episodes(config, splits, shape),
        embed(splits.test.images, "embed test"), splits.test,
        val_labels=splits.val, val_groups=episode_groups(config, splits.val, "test"),
        train_groups=episode_groups(config, splits.train, "metatrain"),
        test_groups=episode_groups(config, splits.test, "test"),
        episode_group_names=episode_group_names(config, splits.test),
        backbone_variables=variables, feature_fn=feature_fn, transform=train_transform)


def from_features(config: ml_collections.ConfigDict, workdir: str) -> MetaTrainingInputs:
    """Read the features file of `config.data.root` (`metaunlab.data.features`)."""
    if not config.data.root:
        raise ConfigError("--config.data.format=features reads a .npz of features; name it "
                          "with --data_dir (or --config.data.root).")
    splits = load_feature_file(config.data.root)
    train, val, test = splits["train"], splits["val"], splits["test"]
    feat_dim = train.features.shape[1]
    tqdm.write(f"data: {train.num_classes} train / {val.num_classes} val / "
               f"{test.num_classes} test classes, {len(train)} train features of dimension "
               f"{feat_dim} from {config.data.root}")
    check_shapes_before_training(config, train.labels, val.labels, test.labels,
                                 pretraining=False)
    write_json_atomic(os.path.join(workdir, "model.json"), {
        "features_file": os.path.abspath(config.data.root), "feat_dim": feat_dim})

    def val_episodes(shape):
        sampler = EpisodeSampler(val.labels, shape, seed=config.val_seed, split_name="val")
        return sampler.sample(0, config.val_episodes)

    return MetaTrainingInputs(feat_dim, train.features, "features_file", train.labels,
                              val.features, val_episodes, test.features, test.labels,
                              val_labels=val.labels)
