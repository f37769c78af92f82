"""The meta-training step and loop: parity, no recompiles, exact resume, several iterations
per call, views of cached features, and a bfloat16 frozen backbone."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metaunlab import evaluation, sib
from metaunlab.backbones import Conv4
from metaunlab.data import augment
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.train import metatrain, optim, parallel, query_schedule
from metaunlab.train.metrics import MetricWriter, read_metrics
from tests._toy_meta_training import toy_features


def _metatrain_config(**overrides):
    c = ml_collections.ConfigDict(dict(
        seed=3, iterations=20, batch_size=4, n_way=5, n_shot=1, n_query=3, sib_steps=3,
        inner_lr=1e-3, lr=1e-2, momentum=0.9, weight_decay=5e-4, grad_coeff=0.0, val_every=10,
        log_every=5))
    c.update(overrides)
    return c


def _episode_batch(labels, step, batch=4):
    shape = EpisodeShape(5, 1, 3)
    return metatrain.episodes_as_dict(EpisodeSampler(labels, shape, seed=1).sample(step, batch))


def test_train_step_compiles_once_and_lowers_the_loss():
    feats, labels = toy_features()
    optimizer = optim.sgd_nesterov(0.05)
    # Placed as meta_train places it: an unplaced state would be traced once more, as the
    # step's output (replicated on the mesh) no longer matches its input's placement.
    state = parallel.replicate(
        metatrain.init_state(sib.init(jax.random.PRNGKey(0), 5, 16), optimizer, 0),
        parallel.data_mesh())
    step = metatrain.make_train_step(optimizer, steps=3, inner_lr=1e-3)
    source = jnp.asarray(feats)
    losses = []
    for i in range(30):
        state, metrics = step(state, None, source, _episode_batch(labels, i))
        losses.append(float(metrics["loss"]))
    assert step._cache_size() == 1  # one trace for 30 steps of new episodes
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert int(state["step"]) == 30


# ---- a Conv-4 backbone on 12 px images, shared by the tests of the image step -------------


def _conv4_case(conv4_images, feature_fn):
    """(images, labels, variables, SIB parameters, a batch of 4 episodes): the same arrays in
    every test that uses it, so that a step they share is compiled once."""
    images, labels = conv4_images()
    variables = Conv4().init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)), train=False)
    dim = feature_fn(variables, augment.OMNIGLOT.eval(images[:1])).shape[1]
    return images, labels, variables, sib.init(jax.random.PRNGKey(1), 5, dim), \
        _episode_batch(labels, 0)


def _fresh(params, optimizer):
    """A new state (the steps donate theirs) of a copy of `params`, placed as meta_train
    places it."""
    return parallel.replicate(
        metatrain.init_state(jax.tree_util.tree_map(jnp.copy, params), optimizer, 0),
        parallel.data_mesh())


def test_image_step_equals_feature_step_for_a_deterministic_transform(conv4_images,
                                                                     conv4_feature_fn):
    """With no augmentation the faithful path (embed inside the step) is the cached path."""
    images, _, variables, params, batch = _conv4_case(conv4_images, conv4_feature_fn)
    feats = conv4_feature_fn(variables, augment.OMNIGLOT.eval(images))
    optimizer = optim.sgd_nesterov(0.05)
    from_images = metatrain.make_train_step(optimizer, steps=2, inner_lr=1e-3,
                                            feature_fn=conv4_feature_fn,
                                            transform=augment.OMNIGLOT)
    from_feats = metatrain.make_train_step(optimizer, steps=2, inner_lr=1e-3)
    state_a, metrics_a = from_images(_fresh(params, optimizer), variables,
                                     jnp.asarray(images), batch)
    state_b, metrics_b = from_feats(_fresh(params, optimizer), None, feats, batch)
    assert float(metrics_a["loss"]) == pytest.approx(float(metrics_b["loss"]), rel=1e-5)
    chex.assert_trees_all_close(state_a["params"], state_b["params"], rtol=1e-4, atol=1e-6)


def test_train_step_rejects_half_a_backbone():
    with pytest.raises(ValueError, match="feature_fn and transform"):
        metatrain.make_train_step(optim.sgd_nesterov(0.1), steps=1, inner_lr=1e-3,
                                  transform=augment.OMNIGLOT)


def _run_meta_train(tmp_path, name, iterations):
    feats, labels = toy_features()
    val_feats, val_labels = toy_features(n_classes=6, seed=1)
    val_episodes = EpisodeSampler(val_labels, EpisodeShape(5, 1, 3), seed=2).sample(0, 20)
    writer = MetricWriter(tmp_path / name)
    last, best = metatrain.meta_train(
        _metatrain_config(iterations=iterations), source=feats, train_labels=labels, feat_dim=16,
        val_feats=val_feats, val_episodes=val_episodes, workdir=str(tmp_path / name / "mt"),
        writer=writer)
    writer.close()
    return last, best


def test_interrupted_and_resumed_meta_training_equals_an_uninterrupted_run(tmp_path):
    straight, _ = _run_meta_train(tmp_path, "straight", 20)
    _run_meta_train(tmp_path, "resumed", 10)  # "interrupted" after its step-10 checkpoint
    resumed, best = _run_meta_train(tmp_path, "resumed", 20)
    chex.assert_trees_all_equal(straight, resumed)
    records = read_metrics(tmp_path / "resumed")
    val_steps = [r["step"] for r in records if r["phase"] == "metatrain_val"]
    assert val_steps == [0, 10, 20]  # the resumed run did not repeat steps 1..10
    assert {"loss", "accuracy", "episodes_per_s"} <= set(
        next(r for r in records if r["phase"] == "metatrain"))
    chex.assert_trees_all_equal_shapes(best, resumed)


def test_train_step_makes_no_hidden_host_device_transfers():
    """Inside the jitted step everything stays on the device: with the state, the source and
    the episode batch placed explicitly (as meta_train does), a step under a transfer guard
    that forbids every implicit transfer runs, and so does reading nothing back."""
    feats, labels = toy_features()
    optimizer = optim.sgd_nesterov(0.05)
    mesh = parallel.data_mesh()
    state = parallel.replicate(
        metatrain.init_state(sib.init(jax.random.PRNGKey(0), 5, 16), optimizer, 0), mesh)
    step = metatrain.make_train_step(optimizer, steps=3, inner_lr=1e-3)
    source = parallel.replicate(feats, mesh)
    batches = [parallel.global_batch(_episode_batch(labels, i), 4, mesh) for i in range(3)]
    state, _ = step(state, None, source, batches[0])  # compile outside the guard
    with jax.transfer_guard("disallow"):
        for batch in batches[1:]:
            state, metrics = step(state, None, source, batch)
    assert int(state["step"]) == 3 and np.isfinite(float(metrics["loss"]))
    with pytest.raises(Exception, match=r"[Dd]isallowed"), jax.transfer_guard("disallow"):
        step(state, None, source, _episode_batch(labels, 9))  # numpy episodes: implicit


def test_several_iterations_per_call_are_the_same_iterations():
    """steps_per_call = S runs S iterations in one call: the same updates, RNG draws and
    step count as S calls of the one-iteration step (same sampled episodes)."""
    feats, labels = toy_features()
    optimizer = optim.sgd_nesterov(0.05)
    mesh = parallel.data_mesh()
    params = sib.init(jax.random.PRNGKey(0), 5, 16)

    def fresh():
        return parallel.replicate(metatrain.init_state(
            jax.tree_util.tree_map(jnp.copy, params), optimizer, 0), mesh)

    source = parallel.replicate(feats, mesh)
    batches = [_episode_batch(labels, i) for i in range(4)]
    one = metatrain.make_train_step(optimizer, steps=3, inner_lr=1e-3)
    four = metatrain.make_train_step(optimizer, steps=3, inner_lr=1e-3, steps_per_call=4)
    state_a, losses = fresh(), []
    for batch in batches:
        state_a, metrics = one(state_a, None, source, parallel.global_batch(batch, 4, mesh))
        losses.append(float(metrics["loss"]))
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    state_b, metrics_b = four(fresh(), None, source,
                              parallel.global_batch(stacked, 4, mesh, axis=1))
    assert int(state_b["step"]) == 4
    chex.assert_trees_all_close(state_a["params"], state_b["params"], rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_equal(state_a["rng"], state_b["rng"])
    assert float(metrics_b["loss"]) == pytest.approx(np.mean(losses), rel=1e-5)
    with pytest.raises(ValueError, match="steps_per_call must be at least 1"):
        metatrain.make_train_step(optimizer, steps=3, inner_lr=1e-3, steps_per_call=0)


def test_meta_training_with_several_iterations_per_call_logs_and_validates_on_time(tmp_path):
    """Calls of 3 iterations never step over a log (every 5) or validation (every 10) step:
    single iterations fill in. The run ends where the one-iteration run ends."""
    feats, labels = toy_features()
    val_feats, val_labels = toy_features(n_classes=6, seed=1)
    val_episodes = EpisodeSampler(val_labels, EpisodeShape(5, 1, 3), seed=2).sample(0, 20)
    results = {}
    for per_call in (1, 3):
        name = f"per_call_{per_call}"
        writer = MetricWriter(tmp_path / name)
        results[per_call], _ = metatrain.meta_train(
            _metatrain_config(steps_per_call=per_call, checkpoint_every=0), source=feats,
            train_labels=labels, feat_dim=16, val_feats=val_feats, val_episodes=val_episodes,
            workdir=str(tmp_path / name / "mt"), writer=writer)
        writer.close()
        records = read_metrics(tmp_path / name)
        assert [r["step"] for r in records if r["phase"] == "metatrain"] == [5, 10, 15, 20]
        assert [r["step"] for r in records if r["phase"] == "metatrain_val"] == [0, 10, 20]
    chex.assert_trees_all_close(results[1], results[3], rtol=1e-4, atol=1e-6)


def test_automatic_steps_per_call():
    assert metatrain.auto_steps_per_call(0, from_images=False) == 10
    assert metatrain.auto_steps_per_call(0, from_images=True) == 1
    assert metatrain.auto_steps_per_call(4, from_images=True) == 4
    with pytest.raises(ValueError, match="steps_per_call=-1"):
        metatrain.auto_steps_per_call(-1, from_images=False)


# ---- views of cached features ---------------------------------------------------------------


def test_step_on_identical_views_equals_the_step_on_plain_features(conv4_images, conv4_feature_fn):
    images, _, variables, params, batch = _conv4_case(conv4_images, conv4_feature_fn)
    feats = evaluation.embed(conv4_feature_fn, variables, images, augment.OMNIGLOT.eval)
    optimizer = optim.sgd_nesterov(0.05)
    step = metatrain.make_train_step(optimizer, steps=2, inner_lr=1e-3)
    plain, _ = step(_fresh(params, optimizer), None, jnp.asarray(feats), batch)
    tiled, _ = step(_fresh(params, optimizer), None,
                    jnp.asarray(np.repeat(feats[:, None], 4, axis=1)), batch)
    chex.assert_trees_all_equal(plain["params"], tiled["params"])


def test_step_draws_one_of_the_cached_views_for_each_image():
    # View v of image i is the constant 10 i + v, so the gathered features say which view
    # each episode image got.
    n, views, dim = 30, 4, 8
    source = jnp.asarray((np.arange(n)[:, None, None] * 10 + np.arange(views)[None, :, None]
                          + np.zeros((1, 1, dim))).astype(np.float32))
    idx = jnp.asarray(np.arange(n).reshape(2, 15))
    draws = [np.asarray(metatrain.gather_cached_views(jax.random.PRNGKey(seed), source, idx))
             for seed in range(3)]
    for got in draws:
        assert got.shape == (2, 15, dim)
        assert (got == got[..., :1]).all()  # whole feature vectors, not mixed views
        np.testing.assert_array_equal(got[..., 0] // 10, np.asarray(idx))  # the right image
        assert set((got[..., 0] % 10).astype(int).ravel()) == set(range(views))
    assert not np.array_equal(draws[0], draws[1])  # a new draw each step


# ---- memory: a bfloat16 frozen backbone ----------------------------------------------------


def test_bfloat16_frozen_backbone_step_is_close_to_float32(conv4_images, conv4_feature_fn):
    images, _, variables, params, batch = _conv4_case(conv4_images, conv4_feature_fn)
    optimizer = optim.sgd_nesterov(0.05)
    results = {}
    for dtype in (jnp.float32, jnp.bfloat16):  # float32: the image step of the tests above
        kwargs = {} if dtype == jnp.float32 else {"backbone_dtype": dtype}
        step = metatrain.make_train_step(optimizer, steps=2, inner_lr=1e-3,
                                         feature_fn=conv4_feature_fn,
                                         transform=augment.OMNIGLOT, **kwargs)
        results[dtype] = step(_fresh(params, optimizer), variables, jnp.asarray(images), batch)
    (s32, m32), (s16, m16) = results[jnp.float32], results[jnp.bfloat16]
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), rel=2e-2)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(s16["params"]))
    chex.assert_trees_all_close(s16["params"], s32["params"], rtol=2e-2, atol=2e-3)


def test_query_counts_are_drawn_per_block_and_reproducibly():
    draws = [metatrain.query_count_index(7, step, 3) for step in range(600)]
    blocks = np.asarray(draws).reshape(-1, query_schedule.QUERY_COUNT_BLOCK)
    assert (blocks == blocks[:, :1]).all()  # one count per block: one shape per call
    assert set(draws) == {0, 1, 2}
    assert draws == [metatrain.query_count_index(7, step, 3) for step in range(600)]
    assert metatrain.query_count_index(7, 5, 1) == 0
    config = _metatrain_config(query_counts="15, 1,5")
    assert metatrain.training_query_counts(config) == [1, 5, 15]
    assert metatrain.training_query_counts(_metatrain_config()) == [3]
    with pytest.raises(ValueError, match="query_counts='1,x'"):
        metatrain.training_query_counts(_metatrain_config(query_counts="1,x"))


def test_meta_training_on_several_query_counts(tmp_path, monkeypatch):
    """query_counts="1,3": episodes of both sizes are trained on; the iterations do not depend
    on steps_per_call (calls that straddle two counts run one iteration at a time), and an
    interrupted run resumes to the same parameters."""
    feats, labels = toy_features()
    seen = []
    original = EpisodeSampler.sample

    def spy(self, step, batch_size, **kwargs):
        seen.append(self.shape.n_query)
        return original(self, step, batch_size, **kwargs)

    monkeypatch.setattr(EpisodeSampler, "sample", spy)

    def run(name, iterations, per_call):
        writer = MetricWriter(tmp_path / name)
        last, _ = metatrain.meta_train(
            _metatrain_config(query_counts="1,3", iterations=iterations, steps_per_call=per_call,
                              checkpoint_every=0),
            source=feats, train_labels=labels, feat_dim=16, val_feats=None, val_episodes=None,
            workdir=str(tmp_path / name / "mt"), writer=writer)
        writer.close()
        return last

    # Two blocks of metatrain.QUERY_COUNT_BLOCK = 10 iterations, which draw 1 then 3 queries
    # (seed 3); calls of 4 iterations straddle the block boundary.
    one = run("one", 20, 1)
    assert set(seen) == {1, 3}
    counts = [1, 3]
    expected = [counts[metatrain.query_count_index(3, s, 2)] for s in range(20)]
    assert seen == expected
    chex.assert_trees_all_close(one, run("four", 20, 4), rtol=1e-4, atol=1e-6)
    run("resumed", 10, 1)
    chex.assert_trees_all_close(one, run("resumed", 20, 1), rtol=1e-6, atol=1e-8)


def test_decay_steps_divide_the_meta_learning_rate_by_ten():
    """decay_steps=(2,): the third update is a tenth of what a constant rate would take."""
    params = {"w": jnp.asarray(1.0)}
    grads = {"w": jnp.asarray(1.0)}

    def third_update(**overrides):
        config = _metatrain_config(momentum=0.0, weight_decay=0.0, lr=0.5, **overrides)
        optimizer = metatrain.make_optimizer(config)
        state = optimizer.init(params)
        for _ in range(3):
            updates, state = optimizer.update(grads, state, params)
        return float(updates["w"])

    assert third_update() == pytest.approx(-0.5)
    assert third_update(decay_steps=(2,)) == pytest.approx(-0.05)


def test_meta_training_on_mixed_query_distributions(tmp_path, monkeypatch):
    """query_distribution="balanced,dirichlet:2": each iteration draws one of the two with a
    seeded draw; Dirichlet sets only at the counts where they fit the classes (here 1 and 3
    queries per class fit, 9 does not and stays balanced); every query set keeps its size."""
    feats, labels = toy_features()
    per_class = int(np.unique(labels, return_counts=True)[1].min())
    assert metatrain.imbalanced_fits(3, 1, per_class)
    assert not metatrain.imbalanced_fits(per_class // 2, 1, per_class)
    seen = []
    original = EpisodeSampler.sample

    def spy(self, step, batch_size, **kwargs):
        episodes = original(self, step, batch_size, **kwargs)
        seen.append((self.shape.n_query, self.query_distribution.name, episodes))
        return episodes

    monkeypatch.setattr(EpisodeSampler, "sample", spy)
    large = per_class // 2
    writer = MetricWriter(tmp_path)
    metatrain.meta_train(
        _metatrain_config(query_counts=f"3,{large}", query_distribution="balanced,dirichlet:2",
                          iterations=60, steps_per_call=1, checkpoint_every=0),
        source=feats, train_labels=labels, feat_dim=16, val_feats=None, val_episodes=None,
        workdir=str(tmp_path / "mt"), writer=writer)
    writer.close()
    assert {(q, d) for q, d, _ in seen} == {(3, "balanced"), (3, "dirichlet:2"),
                                            (large, "balanced")}
    for q, d, episodes in seen:
        assert episodes.query_idx.shape[1] == 5 * q  # the same shape under both
        counts = episodes.query_counts()
        if d == "balanced":
            assert np.all(counts == q)
    assert any(np.any(e.query_counts() != q) for q, d, e in seen if d == "dirichlet:2")
    draws = [metatrain.distribution_index(3, s, 2) for s in range(200)]
    assert 60 < sum(draws) < 140 and draws == [metatrain.distribution_index(3, s, 2)
                                               for s in range(200)]
    with pytest.raises(ValueError, match="query_distribution='balanced,x'"):
        metatrain.training_query_distributions(
            _metatrain_config(query_distribution="balanced,x"))
