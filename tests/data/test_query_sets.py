"""Query-set shapes: the authors' Dirichlet rounding, capacities, totals and padding."""

import math

import numpy as np
import pytest

from metaunlab.data.episodes import EpisodeSampler, EpisodeShape, batch_episodes, pad_episodes
from metaunlab.data.errors import DataError
from metaunlab.data.query_sets import QueryDistribution, dirichlet_counts


def _authors_rounding(prob, q_shot):
    """Veilleux et al.'s `convert_prob_to_samples` for one task, transcribed loop for loop."""
    prob = np.array(prob, np.float64) * q_shot
    if sum(np.round(prob)) != q_shot:
        too_many = sum(np.round(prob)) > q_shot
        while sum(np.round(prob)) != q_shot:
            idx, closest = 0, None
            for j in range(len(prob)):
                frac = math.modf(prob[j])[0]
                if closest is None or abs(frac - 0.5) < closest:
                    idx, closest = j, abs(frac - 0.5)
            prob[idx] = np.floor(prob[idx]) if too_many else np.ceil(prob[idx])
    return np.round(prob).astype(int)


@pytest.mark.parametrize("n_way,total,alpha", [(5, 75, 2.0), (5, 25, 2.0), (20, 20, 0.5),
                                               (10, 37, 1.0)])
def test_dirichlet_counts_are_the_authors(n_way, total, alpha) -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = rng.dirichlet(np.full(n_way, alpha))
        counts = dirichlet_counts(p, total)
        np.testing.assert_array_equal(counts, _authors_rounding(p, total))
        assert counts.sum() == total and counts.min() >= 0


def test_parse_and_names() -> None:
    assert QueryDistribution.parse("balanced").is_balanced
    assert QueryDistribution.parse("Dirichlet:2").name == "dirichlet:2"
    assert QueryDistribution.parse("dirichlet:0.5").alpha == 0.5
    for bad in ("dirichlet", "dirichlet:x", "dirichlet:-1", "zipf:2", ""):
        with pytest.raises(DataError, match="dirichlet"):
            QueryDistribution.parse(bad)


def test_dirichlet_episodes_fixed_total_within_capacity() -> None:
    labels = np.repeat(np.arange(30), 20)  # 20 images per class, like Omniglot
    sampler = EpisodeSampler(labels, EpisodeShape(5, 5, 5), seed=3,
                             query_distribution="dirichlet:2")
    episodes = sampler.sample(0, 400)
    counts = episodes.query_counts()
    assert episodes.query_mask is None and episodes.query_idx.shape == (400, 25)
    assert np.all(counts.sum(1) == 25) and counts.max() <= 15
    assert (counts == 0).any() and (counts >= 10).any()  # imbalanced, absent classes included
    np.testing.assert_allclose(counts.mean(0), 5.0, atol=0.5)  # symmetric on average
    for b in range(20):  # support and queries disjoint, each query of its class
        assert not set(episodes.support_idx[b]) & set(episodes.query_idx[b])
        support_class = {int(labels[i]): int(y) for i, y in zip(
            episodes.support_idx[b], episodes.support_labels[b], strict=True)}
        for i, y in zip(episodes.query_idx[b], episodes.query_labels[b], strict=True):
            assert support_class[int(labels[i])] == int(y)
    again = sampler.sample(0, 400)
    np.testing.assert_array_equal(again.query_idx, episodes.query_idx)


def test_balanced_stream_is_unchanged_by_the_option() -> None:
    labels = np.repeat(np.arange(15), 20)
    shape = EpisodeShape(5, 1, 3)
    default = EpisodeSampler(labels, shape, seed=1).sample(2, 5)
    explicit = EpisodeSampler(labels, shape, seed=1, query_distribution="balanced").sample(2, 5)
    np.testing.assert_array_equal(default.query_idx, explicit.query_idx)
    assert np.all(default.query_counts() == 3)


def test_query_totals_pad_with_a_mask() -> None:
    labels = np.repeat(np.arange(15), 20)
    sampler = EpisodeSampler(labels, EpisodeShape(5, 1, 4), seed=0, query_totals=(3, 20))
    episodes = sampler.sample(0, 50)
    real = episodes.query_mask.sum(1)
    assert episodes.query_idx.shape == (50, 20)
    assert real.min() >= 3 and real.max() <= 20 and len(set(real)) > 5
    counts = episodes.query_counts()
    assert np.all(counts.max(1) - counts.min(1) <= 1)  # balanced: equal up to one
    assert np.all(counts.sum(1) == real)
    for b in range(50):  # real slots first; padding repeats a real index with label 0
        n = real[b]
        assert episodes.query_mask[b, :n].all() and not episodes.query_mask[b, n:].any()
        assert np.all(episodes.query_labels[b, n:] == 0)
    with pytest.raises(DataError, match="query_totals"):
        EpisodeSampler(labels, EpisodeShape(5, 1, 4), seed=0, query_totals=(3, 21))


def test_capacity_is_checked() -> None:
    labels = np.repeat(np.arange(10), 10)
    sampler = EpisodeSampler(labels, EpisodeShape(5, 1, 5), seed=0,
                             query_distribution="dirichlet:2")
    counts = sampler.sample(0, 200).query_counts()  # 9 per class left after the support
    assert counts.max() == 9 and np.all(counts.sum(1) == 25)  # redrawn, never clipped
    tight = EpisodeSampler(np.repeat(np.arange(10), 6), EpisodeShape(5, 1, 5), seed=0,
                           query_distribution="dirichlet:2")
    with pytest.raises(DataError, match="none fit"):  # only the balanced split fits
        tight.sample(0, 1)
    with pytest.raises(DataError, match="do not fit"):
        QueryDistribution.parse("dirichlet:2").counts(np.random.default_rng(0), 5, 30, 5)


def test_pad_and_batch_episodes() -> None:
    labels = np.repeat(np.arange(10), 20)
    a = EpisodeSampler(labels, EpisodeShape(5, 1, 2), seed=0).sample(0, 3)
    b = EpisodeSampler(labels, EpisodeShape(5, 1, 4), seed=0).sample(0, 2)
    with pytest.raises(DataError, match="pad_episodes"):
        batch_episodes([a, b])
    both = batch_episodes([pad_episodes(a, 20), b])
    assert both.query_idx.shape == (5, 20)
    np.testing.assert_array_equal(both.query_mask.sum(1), [10, 10, 10, 20, 20])
    np.testing.assert_array_equal(both.query_counts()[:3], np.full((3, 5), 2))


def test_every_distribution_has_the_same_support_sets() -> None:
    """Balanced, Dirichlet and variable-size query sets of episode (seed, step, b) share its
    classes and support images, so a comparison between them is paired."""
    labels = np.repeat(np.arange(20), 20)
    shape = EpisodeShape(5, 2, 5)
    samplers = [EpisodeSampler(labels, shape, seed=9),
                EpisodeSampler(labels, shape, seed=9, query_distribution="dirichlet:2"),
                EpisodeSampler(labels, shape, seed=9, query_distribution="dirichlet:0.5",
                               query_totals=(5, 25))]
    batches = [s.sample(3, 10) for s in samplers]
    for other in batches[1:]:
        np.testing.assert_array_equal(other.support_idx, batches[0].support_idx)
        np.testing.assert_array_equal(other.support_labels, batches[0].support_labels)
        for b in range(10):  # queries of the episode's classes, none a support image
            real = other.query_idx[b][other.mask_or_ones[b]]
            assert set(labels[real]) <= set(labels[other.support_idx[b]])
            assert not set(real) & set(other.support_idx[b])
    assert not np.array_equal(batches[1].query_idx, batches[0].query_idx)
