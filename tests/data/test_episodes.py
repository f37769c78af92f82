"""Tests for metaunlab.data.episodes (seeded sampling of episodes)."""

from __future__ import annotations

import numpy as np
import pytest

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.episodes import (
    EpisodeSampler,
    EpisodeShape,
    batch_episodes,
    check_episode_shape,
)
from metaunlab.data.errors import DataError

SHAPE = EpisodeShape(n_way=5, n_shot=2, n_query=3)


def _fields(e):
    return (e.support_idx, e.support_labels, e.query_idx, e.query_labels)


def test_shape_sizes() -> None:
    assert (SHAPE.support_size, SHAPE.query_size) == (10, 15)
    with pytest.raises(DataError, match="n_shot must be a positive integer"):
        EpisodeShape(n_way=5, n_shot=0, n_query=1)


def test_same_seed_and_step_give_same_episodes(interleaved_labels) -> None:
    a = EpisodeSampler(interleaved_labels(), SHAPE, seed=7).sample(step=3, batch_size=4)
    b = EpisodeSampler(interleaved_labels(), SHAPE, seed=7).sample(step=3, batch_size=4)
    for x, y in zip(_fields(a), _fields(b), strict=True):
        np.testing.assert_array_equal(x, y)
    other_step = EpisodeSampler(interleaved_labels(), SHAPE, seed=7).sample(step=4, batch_size=4)
    other_seed = EpisodeSampler(interleaved_labels(), SHAPE, seed=8).sample(step=3, batch_size=4)
    assert not np.array_equal(a.support_idx, other_step.support_idx)
    assert not np.array_equal(a.support_idx, other_seed.support_idx)
    assert not np.array_equal(a.support_idx[0], a.support_idx[1])  # episodes differ in a batch


def test_slices_of_a_batch_match_the_whole(interleaved_labels) -> None:
    sampler = EpisodeSampler(interleaved_labels(), SHAPE, seed=1)
    whole = sampler.sample(step=9, batch_size=4)
    halves = batch_episodes(
        [sampler.sample(9, 2, first_episode=0), sampler.sample(9, 2, first_episode=2)]
    )
    single = sampler.episode(9, 3)
    for x, y, z in zip(_fields(whole), _fields(halves), _fields(single), strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x[3:], z)


def test_episode_contents_are_correct(interleaved_labels) -> None:
    labels = interleaved_labels()
    episodes = EpisodeSampler(labels, SHAPE, seed=0).sample(step=0, batch_size=8)
    assert episodes.support_idx.shape == (8, 10) and episodes.query_idx.shape == (8, 15)
    assert all(f.dtype == np.int32 for f in _fields(episodes))
    for b in range(8):
        s_idx, s_lab, q_idx, q_lab = (f[b] for f in _fields(episodes))
        assert np.bincount(s_lab).tolist() == [2] * 5
        assert np.bincount(q_lab).tolist() == [3] * 5
        assert not set(s_idx) & set(q_idx) and len(set(s_idx)) == 10 and len(set(q_idx)) == 15
        # Each episode label maps to exactly one dataset class, distinct across labels.
        classes = [
            set(labels[s_idx[s_lab == w]]) | set(labels[q_idx[q_lab == w]]) for w in range(5)
        ]
        assert all(len(c) == 1 for c in classes) and len(set.union(*classes)) == 5
    # Support is shuffled, not grouped by label (reference behaviour).
    assert any(np.any(np.diff(episodes.support_labels[b]) < 0) for b in range(8))


def test_n_way_too_large(interleaved_labels) -> None:
    with pytest.raises(DataError, match=r"split 'test' has 12 classes but n_way=20; lower n_way"):
        EpisodeSampler(interleaved_labels(), EpisodeShape(20, 1, 1), seed=0, split_name="test")


def test_too_few_images_per_class_names_the_class(interleaved_labels) -> None:
    labels = np.concatenate([interleaved_labels(), np.array([12, 12], np.int32)])
    with pytest.raises(
        DataError,
        match=r"class 12 in split 'train' has 2 images but n_shot=2 "
        r"\+ n_query=3 needs 5",
    ):
        EpisodeSampler(labels, SHAPE, seed=0)
    names = tuple(f"c{i}" for i in range(13))
    ds = ImageDataset(np.zeros((len(labels), 2, 2, 1), np.uint8), labels, names)
    with pytest.raises(DataError, match="class 'c12' in split 'val' has 2 images"):
        check_episode_shape(ds, SHAPE, "val")


def test_within_group_episodes_draw_every_class_from_one_eligible_group(
        interleaved_labels) -> None:
    labels = interleaved_labels(num_classes=12, per_class=7)
    # Groups of 5, 4 and 3 classes: at 4-way the 3-class group can never be drawn.
    groups = np.array([0] * 5 + [1] * 4 + [2] * 3)
    sampler = EpisodeSampler(labels, EpisodeShape(4, 1, 2), seed=0, groups=groups)
    assert sampler.eligible_groups == [0, 1]
    seen = set()
    for step in range(60):
        ep = sampler.episode(step, 0)
        classes = {int(labels[i]) for i in np.concatenate([ep.support_idx[0], ep.query_idx[0]])}
        assert len(classes) == 4
        (group,) = {int(groups[c]) for c in classes}
        seen.add(group)
    assert seen == {0, 1}
    again = EpisodeSampler(labels, EpisodeShape(4, 1, 2), seed=0, groups=groups)
    np.testing.assert_array_equal(again.sample(3, 5).query_idx, sampler.sample(3, 5).query_idx)


def test_within_group_episodes_need_a_group_of_n_way_classes(interleaved_labels) -> None:
    labels = interleaved_labels(num_classes=12, per_class=7)
    with pytest.raises(DataError, match="the largest has 6"):
        EpisodeSampler(labels, EpisodeShape(7, 1, 2), seed=0, groups=np.repeat([0, 1], 6))
    with pytest.raises(DataError, match="one group id per class label"):
        EpisodeSampler(labels, EpisodeShape(2, 1, 2), seed=0, groups=np.zeros(5, int))
