"""Fixtures shared by the tests of metaunlab.methods: batches of synthetic few-shot tasks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import sib
from metaunlab.methods import get_method


def _tasks(seed, *, batch=6, n_way=5, n_shot=2, n_query=6, dim=24, noise=0.3, offset=0.0):
    """A batch of episodes: Gaussian classes around random centres; every query of an
    episode is moved by one common `offset` vector of norm `offset * sqrt(dim)` (the class
    centres have norm about sqrt(dim)). Features may be negative: PT-MAP's power transform
    is sign-preserving, so every method accepts them."""
    rng = np.random.default_rng(seed)
    support, support_labels, query, query_labels = [], [], [], []
    for _ in range(batch):
        centres = rng.normal(size=(n_way, dim))
        ys = rng.permutation(np.repeat(np.arange(n_way), n_shot))
        yq = rng.permutation(np.repeat(np.arange(n_way), n_query))
        shift = rng.normal(size=dim)
        shift *= offset * np.sqrt(dim) / np.linalg.norm(shift)
        support.append(centres[ys] + noise * rng.normal(size=(len(ys), dim)))
        query.append(centres[yq] + noise * rng.normal(size=(len(yq), dim)) + shift)
        support_labels.append(ys)
        query_labels.append(yq)
    return (jnp.asarray(np.stack(support), jnp.float32),
            jnp.asarray(np.stack(support_labels), jnp.int32),
            jnp.asarray(np.stack(query), jnp.float32), np.stack(query_labels))


@functools.cache
def _batched(name: str, n_way: int):
    return get_method(name).batched(n_way)


def _accuracy(probs, labels):
    return 100.0 * float(np.mean(np.argmax(np.asarray(probs), -1) == labels))


@pytest.fixture(scope="session")
def batched():
    """`batched(name, n_way)`: the registered method's batched predictor, compiled once per
    process for each (name, n_way)."""
    return _batched


@pytest.fixture(scope="session")
def accuracy():
    """`accuracy(probs, labels)`: percent of queries whose most probable class is the label."""
    return _accuracy


@pytest.fixture(scope="module")
def separated():
    return _tasks(0)


@pytest.fixture(scope="module")
def shifted():
    # Same shapes as `separated`, so every compiled method is reused.
    return _tasks(2, offset=2.0)


@pytest.fixture(scope="module")
def sib_params(separated):
    return sib.init(jax.random.PRNGKey(0), 5, separated[0].shape[-1])

