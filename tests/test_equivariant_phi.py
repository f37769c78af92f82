"""The synthetic-gradient network that serves any way count (`metaunlab.equivariant_phi`),
and the head and meta-training around it. Its conformance to the reference head's
properties (padded batch = one call per episode, finite-difference meta-gradients, K = 0,
one meta-training step) is checked in tests/test_head.py with every other composition."""

import functools
import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metaunlab import equivariant_phi
from metaunlab.errors import ConfigError
from metaunlab.head import Head
from metaunlab.train import metatrain
from metaunlab.train.metrics import MetricWriter
from metaunlab.train.query_schedule import training_ways, way_index
from tests._toy_meta_training import toy_features


def _perturbed_phi(seed=0):
    """Parameters away from their initial values (BatchNorm scales off 1, biases off 0)."""
    leaves, tree = jax.tree_util.tree_flatten(equivariant_phi.init(jax.random.PRNGKey(seed)))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [np.asarray(leaf, np.float64) + 0.3 * rng.normal(size=leaf.shape) for leaf in leaves])


@pytest.mark.parametrize("n_way", [1, 3, 12])
def test_phi_is_equivariant_to_the_order_of_the_classes_at_any_way_count(n_way):
    with jax.enable_x64(True):
        params = _perturbed_phi()
        rng = np.random.default_rng(n_way)
        logits = jnp.asarray(rng.normal(size=(2, 7, n_way)) * 3.0)
        order = rng.permutation(n_way)
        out = equivariant_phi.apply(params, logits)
        assert out.shape == (2, 7, n_way)
        np.testing.assert_allclose(np.asarray(equivariant_phi.apply(params, logits[..., order])),
                                   np.asarray(out)[..., order], rtol=1e-12, atol=1e-12)
        # Not a per-entry function: every class and every other query moves an entry.
        moved_class = equivariant_phi.apply(params, logits.at[:, :, -1].add(1.0))
        moved_query = equivariant_phi.apply(params, logits.at[:, -1, :].add(1.0))
        if n_way > 1:
            assert not np.allclose(np.asarray(moved_class)[:, :, 0], np.asarray(out)[:, :, 0])
        assert not np.allclose(np.asarray(moved_query)[:, 0], np.asarray(out)[:, 0])


def test_one_equivariant_head_serves_every_way_count_and_a_per_way_head_says_what_to_do():
    head = Head(5, 16, phi="equivariant")
    params = head.init(jax.random.PRNGKey(0))
    feats = np.random.default_rng(0).normal(size=(60, 16)).astype(np.float32)
    for n_way in (3, 10):
        apply = jax.jit(functools.partial(head.for_ways(n_way).apply, steps=3))
        logits = apply(params, feats[:n_way], np.arange(n_way), feats[20:20 + 2 * n_way])
        assert logits.shape == (2 * n_way, n_way) and np.all(np.isfinite(np.asarray(logits)))
    per_way = Head(5, 16)
    assert per_way.for_ways(5) is per_way
    with pytest.raises(ConfigError, match=re.escape(
            "5 classes wide, so it cannot serve 10-way episodes; meta-train one with "
            "--config.metatrain.phi=equivariant")):
        per_way.for_ways(10)
    with pytest.raises(ConfigError, match="do not match the head"):
        per_way.check(params)
    with pytest.raises(ConfigError, match="do not match the head"):
        head.check(per_way.init(jax.random.PRNGKey(0)))
    with pytest.raises(ConfigError, match="head phi 'mlp'"):
        Head(5, 16, phi="mlp")


def test_the_description_saves_its_phi_and_reads_one_without_it_as_the_reference(tmp_path):
    Head(5, 16, phi="equivariant").save(str(tmp_path))
    assert Head.load(str(tmp_path)).any_ways
    (tmp_path / "head.json").write_text(json.dumps(
        {"n_way": 5, "feat_dim": 16, "transforms": [], "readout": None}))
    assert Head.load(str(tmp_path)) == Head(5, 16)


def test_meta_training_draws_every_listed_way_count_for_one_head(tmp_path):
    feats, labels = toy_features()
    config = ml_collections.ConfigDict(dict(
        seed=3, iterations=40, batch_size=2, n_way=5, n_shot=1, n_query=2, sib_steps=2,
        lr=1e-2, val_every=40, log_every=40, checkpoint_every=0, phi="equivariant",
        ways="3,5"))
    drawn = {training_ways(config)[way_index(3, step, 2)] for step in range(40)}
    assert drawn == {3, 5}
    writer = MetricWriter(str(tmp_path), enabled=False)
    last, _ = metatrain.meta_train(config, source=feats, train_labels=labels,
                                   feat_dim=feats.shape[1], val_feats=None, val_episodes=None,
                                   workdir=str(tmp_path / "mt"), writer=writer)
    saved = Head.load(str(tmp_path / "mt"))
    assert saved.any_ways
    saved.check(last)
    fresh = saved.init(jax.random.PRNGKey(config.seed))
    moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), last["grad_net"],
                                   fresh["grad_net"])
    assert all(jax.tree_util.tree_leaves(moved))
    config.phi = "per_way"
    with pytest.raises(ConfigError, match=re.escape("needs --config.metatrain.phi=equivariant")):
        training_ways(config)
