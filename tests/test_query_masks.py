"""Padded query sets: every method, SIB included, ignores padded queries when given the
mask, a batch of differently sized query sets compiles once (the masked phi VJP is
autodiff's: tests/test_synthetic_gradient.py)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import evaluation, sib
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.methods import METHODS, sib_method

N_WAY, N_SHOT, N_REAL, N_PAD, DIM = 5, 2, 13, 7, 16


def _episode(seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.random((N_WAY * N_SHOT, DIM)).astype(np.float32)
    ys = np.repeat(np.arange(N_WAY), N_SHOT).astype(np.int32)
    xq = rng.random((N_REAL, DIM)).astype(np.float32)
    junk = 10.0 * rng.random((N_PAD, DIM)).astype(np.float32)  # far from every real query
    return xs, ys, xq, np.concatenate([xq, junk]), np.arange(N_REAL + N_PAD) < N_REAL


def _all_methods():
    params = sib.init(jax.random.PRNGKey(0), N_WAY, DIM)
    params["init"]["w"] = params["init"]["w"] * 3.0  # steps that move the logits
    return [*METHODS.values(), sib_method(params, 3, lr=0.05)]


METHOD_CASES = [pytest.param(m, id=m.name) for m in _all_methods()]


@pytest.mark.parametrize("method", METHOD_CASES)
def test_padded_queries_change_nothing_for_real_ones(method) -> None:
    xs, ys, xq, xq_padded, mask = _episode()
    base = np.full((DIM,), 0.5, np.float32)
    plain = np.asarray(method(xs, ys, xq, N_WAY, base_mean=base))
    padded = np.asarray(method(xs, ys, xq_padded, N_WAY, base_mean=base,
                               query_mask=jnp.asarray(mask)))
    assert np.all(np.isfinite(padded))
    np.testing.assert_allclose(padded[:N_REAL], plain, atol=2e-5)
    # All-true mask: the unmasked computation.
    ones = np.asarray(method(xs, ys, xq, N_WAY, base_mean=base,
                             query_mask=jnp.ones(N_REAL, bool)))
    np.testing.assert_allclose(ones, plain, atol=1e-6)
    if method.is_transductive:  # the junk queries do matter when nobody masks them
        unmasked = np.asarray(method(xs, ys, xq_padded, N_WAY, base_mean=base))
        assert np.abs(unmasked[:N_REAL] - plain).max() > 1e-4


# SIB's padded batches against one unpadded call per episode: tests/test_head.py, for every
# head composition, in float64.
@pytest.mark.parametrize("name", ["pt_map", "tim_gd", "laplacianshot"])
def test_masked_batch_equals_the_loop_over_unpadded_episodes(name) -> None:
    """vmap over padded episodes of different real sizes == each episode alone."""
    method = METHODS[name]
    rng = np.random.default_rng(3)
    sizes = [6, 11, 20, 15]
    slots = max(sizes)
    xs = rng.random((len(sizes), N_WAY * N_SHOT, DIM)).astype(np.float32)
    ys = np.tile(np.repeat(np.arange(N_WAY), N_SHOT), (len(sizes), 1)).astype(np.int32)
    xq = rng.random((len(sizes), slots, DIM)).astype(np.float32)
    mask = np.arange(slots)[None] < np.array(sizes)[:, None]
    batched = np.asarray(method.batched(N_WAY, None)(xs, ys, xq, mask))
    for b, size in enumerate(sizes):
        alone = np.asarray(method(xs[b], ys[b], xq[b, :size], N_WAY))
        np.testing.assert_allclose(batched[b, :size], alone, atol=2e-5)


def test_a_batch_of_imbalanced_episodes_compiles_once() -> None:
    """Dirichlet query sets of varying totals, padded to one number of slots: evaluating
    two different batches traces the method once."""
    labels = np.repeat(np.arange(12), 20)
    feats = np.random.default_rng(0).random((len(labels), DIM)).astype(np.float32)
    sampler = EpisodeSampler(labels, EpisodeShape(N_WAY, 1, 5), seed=0,
                             query_distribution="dirichlet:2", query_totals=(8, 25))
    first, second = sampler.sample(0, 8), sampler.sample(1, 8)
    assert first.query_mask is not None and not np.array_equal(first.query_mask,
                                                               second.query_mask)
    assert len({int(m.sum()) for m in first.query_mask}) > 1  # totals differ within a batch
    counted = chex.assert_max_traces(METHODS["pt_map"].fn, n=1)
    method = dataclasses.replace(METHODS["pt_map"], fn=counted)
    for episodes in (first, second):
        result = evaluation.evaluate(method, feats, episodes, chunk=8)
        assert result.accuracies.shape == (8,)


def test_masked_accuracy_counts_real_queries_only() -> None:
    """The same episodes, padded with a mask or not, score the same."""
    labels = np.repeat(np.arange(10), 20)
    rng = np.random.default_rng(2)
    feats = (np.eye(10)[labels] * 3 + rng.random((len(labels), 10))).astype(np.float32)
    sampler = EpisodeSampler(labels, EpisodeShape(N_WAY, 1, 4), seed=4,
                             query_distribution="dirichlet:2")
    episodes = sampler.sample(0, 6)
    from metaunlab.data.episodes import pad_episodes
    padded = pad_episodes(episodes, 30)
    for name in ("protonet_cosine", "bd_cspn"):
        plain = evaluation.evaluate(METHODS[name], feats, episodes).accuracies
        masked = evaluation.evaluate(METHODS[name], feats, padded).accuracies
        np.testing.assert_allclose(masked, plain, atol=1e-4)
