"""Outer optimizer, meta-training step and loop: parity, no recompiles, exact resume."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metaunlab import metatrain, optim, parallel, sib
from metaunlab.backbones import Conv4, init_backbone
from metaunlab.data import augment
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.metrics import MetricWriter, read_metrics


def test_sgd_nesterov_matches_the_torch_update_rule():
    """torch.optim.SGD(nesterov=True, weight_decay): g += wd*p; b = m*b + g; p -= lr*(g + m*b)."""
    lr, momentum, wd = 0.1, 0.9, 5e-4
    opt = optim.sgd_nesterov(lr, momentum=momentum, weight_decay=wd)
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=5), jnp.float32)}
    state = opt.init(params)
    p, buf = np.asarray(params["a"], np.float64), np.zeros(5)
    for _ in range(4):
        g = rng.normal(size=5)
        updates, state = opt.update({"a": jnp.asarray(g, jnp.float32)}, state, params)
        params = {"a": params["a"] + updates["a"]}
        g = g + wd * p
        buf = momentum * buf + g
        p = p - lr * (g + momentum * buf)
    np.testing.assert_allclose(np.asarray(params["a"]), p, rtol=1e-6, atol=1e-7)


def test_warmup_then_step_schedule():
    schedule = optim.warmup_then_step(0.1, 10, {30: 0.1})
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.05)
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(29)) == pytest.approx(0.1)
    assert float(schedule(30)) == pytest.approx(0.01)


def _toy_features(n_classes=12, per_class=20, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class).astype(np.int32)
    feats = (centres[labels] + 0.7 * rng.normal(size=(len(labels), dim))).astype(np.float32)
    return feats, labels


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
    feats, labels = _toy_features()
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


def test_image_step_equals_feature_step_for_a_deterministic_transform():
    """With no augmentation the faithful path (embed inside the step) is the cached path."""
    module = Conv4()
    images = np.random.default_rng(0).integers(0, 255, (60, 12, 12, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10).astype(np.int32)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)), train=False)

    def feature_fn(v, x):
        return module.apply(v, x, train=False)

    transform = augment.OMNIGLOT
    feats = feature_fn(variables, transform.eval(images))
    optimizer = optim.sgd_nesterov(0.05)
    params = sib.init(jax.random.PRNGKey(1), 5, feats.shape[1])
    batch = _episode_batch(labels, 0)
    from_images = metatrain.make_train_step(optimizer, steps=2, inner_lr=1e-3,
                                            feature_fn=feature_fn, transform=transform)
    from_feats = metatrain.make_train_step(optimizer, steps=2, inner_lr=1e-3)
    # The steps donate their state, so each gets its own copy of the parameters.
    def fresh():
        return metatrain.init_state(jax.tree_util.tree_map(jnp.copy, params), optimizer, 0)

    state_a, metrics_a = from_images(fresh(), variables,
                                     jnp.asarray(images), batch)
    state_b, metrics_b = from_feats(fresh(), None, feats, batch)
    assert float(metrics_a["loss"]) == pytest.approx(float(metrics_b["loss"]), rel=1e-5)
    chex.assert_trees_all_close(state_a["params"], state_b["params"], rtol=1e-4, atol=1e-6)


def test_train_step_rejects_half_a_backbone():
    with pytest.raises(ValueError, match="feature_fn and transform"):
        metatrain.make_train_step(optim.sgd_nesterov(0.1), steps=1, inner_lr=1e-3,
                                  transform=augment.OMNIGLOT)


def _run_meta_train(tmp_path, name, iterations):
    feats, labels = _toy_features()
    val_feats, val_labels = _toy_features(n_classes=6, seed=1)
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


def test_pretrain_step_compiles_once_and_learns():
    from metaunlab import pretrain

    module = Conv4()
    backbone = init_backbone(module, 64, (16, 16, 1), seed=0)
    optimizer = optim.sgd_nesterov(0.05)
    state = parallel.replicate(pretrain.init_state(backbone, 4, optimizer, seed=0),
                               parallel.data_mesh())
    step = pretrain.make_train_step(module, augment.OMNIGLOT_SHIFT, optimizer)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 32).astype(np.int32)
    images = (np.eye(4)[labels][:, :, None, None] * 255 * np.ones((1, 1, 16, 4))).reshape(
        32, 16, 16, 1).astype(np.uint8)  # each class lights up its own band of columns
    losses = []
    for _ in range(6):
        state, metrics = step(state, images, labels)
        losses.append(float(metrics["loss"]))
    assert step._cache_size() == 1
    assert losses[-1] < losses[0]


def test_train_step_makes_no_hidden_host_device_transfers():
    """Inside the jitted step everything stays on the device: with the state, the source and
    the episode batch placed explicitly (as meta_train does), a step under a transfer guard
    that forbids every implicit transfer runs, and so does reading nothing back."""
    feats, labels = _toy_features()
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


def test_only_the_writing_process_creates_metric_files(tmp_path, monkeypatch):
    """A non-primary process of a multi-host run leaves the shared work dir untouched (it
    used to create an empty TensorBoard event file beside process 0's)."""
    from metaunlab import metrics

    monkeypatch.setattr(metrics, "is_primary", lambda: False)
    writer = MetricWriter(tmp_path / "w")
    writer.write("metatrain", 1, loss=1.0)
    writer.close()
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
    assert read_metrics(tmp_path / "w") == []


def test_several_iterations_per_call_are_the_same_iterations():
    """steps_per_call = S runs S iterations in one call: the same updates, RNG draws and
    step count as S calls of the one-iteration step (same sampled episodes)."""
    feats, labels = _toy_features()
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
    feats, labels = _toy_features()
    val_feats, val_labels = _toy_features(n_classes=6, seed=1)
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
