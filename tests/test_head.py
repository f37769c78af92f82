"""Conformance of every head composition (`metaunlab.head.Head`), and what each part does.

Each composition is checked for the same properties the reference head has: a batch of
padded episodes (the Gram form) equals one unpadded call per episode (the direct form) in
float64, the meta-gradient of every parameter matches finite differences, K = 0 reads the
queries exactly where the description says so, and one meta-training step moves every
parameter. The part tests check each formula against numpy.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaunlab import numerics, sib
from metaunlab.data.errors import DataError
from metaunlab.errors import ConfigError
from metaunlab.head import Head, parts
from metaunlab.interop.convert import sib_to_torch
from metaunlab.methods.sib_head import sib_method
from metaunlab.synthetic_gradient import balanced_assignment
from metaunlab.train import metatrain
from tests._finite_differences import assert_gradient_matches_finite_differences
from tests._toy_meta_training import meta_train_toy, toy_features

N_WAY, DIM = 5, 8
COMPOSITIONS = {  # name: (transforms, readout, phi)
    "reference": ((), None, "per_way"),
    "power": (("power",), None, "per_way"),
    "centering": (("centering",), None, "per_way"),
    "power+centering": (("power", "centering"), None, "per_way"),
    "readout": ((), "balanced", "per_way"),
    "all": (("power", "centering"), "balanced", "per_way"),
    "equivariant phi": ((), None, "equivariant"),
}
# Part parameters away from their initial values, so that no term hides behind a 1 or a 0.
PART_VALUES = {"power": {"exponent": 0.7}, "centering": {"strength": 0.6},
               "readout": {"log_temperature": 0.4}}


def _head(name: str) -> Head:
    return Head(N_WAY, DIM, *COMPOSITIONS[name])


def _params(head: Head, perturbed_sib_params, dtype=jnp.float32):
    params = perturbed_sib_params(1, N_WAY, DIM)
    fresh = head.init(jax.random.PRNGKey(1))
    for key in fresh:
        if key in PART_VALUES:
            params[key] = {k: jnp.asarray(v) for k, v in PART_VALUES[key].items()}
    if head.any_ways:  # BatchNorm scales and biases away from 1 and 0 too
        leaves, tree = jax.tree_util.tree_flatten(fresh["grad_net"])
        noise = np.random.default_rng(1)
        params["grad_net"] = jax.tree_util.tree_unflatten(
            tree, [leaf + 0.3 * noise.normal(size=leaf.shape) for leaf in leaves])
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)


def _episodes(seed, query_counts, n_shot=1, dtype=np.float64):
    """Episodes of ReLU-like (non-negative) features crowded around one direction, query
    sets of `query_counts[e]` per class padded to the largest: (fs, ys, fq, yq, mask)."""
    rng = np.random.default_rng(seed)
    common = 2.0 * np.abs(rng.normal(size=DIM))
    n_query = max(query_counts)
    fs, ys, fq, yq, mask = [], [], [], [], []
    for count in query_counts:
        centres = common + np.abs(rng.normal(size=(N_WAY, DIM)))
        s_labels = np.repeat(np.arange(N_WAY), n_shot)
        q_labels = np.repeat(np.arange(N_WAY), n_query)
        fs.append(centres[s_labels] + 0.3 * np.abs(rng.normal(size=(len(s_labels), DIM))))
        fq.append(centres[q_labels] + 0.3 * np.abs(rng.normal(size=(len(q_labels), DIM))))
        ys.append(s_labels)
        yq.append(q_labels)
        mask.append(np.tile(np.arange(n_query) < count, N_WAY))
    return (jnp.asarray(np.stack(fs), dtype), jnp.asarray(np.stack(ys), jnp.int32),
            jnp.asarray(np.stack(fq), dtype), jnp.asarray(np.stack(yq), jnp.int32),
            jnp.asarray(np.stack(mask)))


# ---- conformance, over every composition ------------------------------------------------------


@pytest.mark.parametrize("name", COMPOSITIONS)
def test_a_padded_batch_equals_one_unpadded_call_per_episode_in_float64(name,
                                                                        perturbed_sib_params):
    head = _head(name)
    with jax.enable_x64(True):
        params = _params(head, perturbed_sib_params, jnp.float64)
        fs, ys, fq, _, mask = _episodes(0, (3, 1, 2))
        for steps in (0, 3):
            batch = head.apply(params, fs, ys, fq, steps=steps, lr=0.3, query_mask=mask)
            for e in range(len(fs)):
                real = np.asarray(mask[e])
                alone = head.apply(params, fs[e], ys[e], fq[e][real], steps=steps, lr=0.3)
                np.testing.assert_allclose(np.asarray(batch[e])[real], np.asarray(alone),
                                           rtol=1e-10, atol=1e-10, err_msg=f"K={steps}")
            assert np.all(np.isfinite(np.asarray(batch)))


@pytest.mark.parametrize("name", COMPOSITIONS)
def test_the_meta_gradient_matches_finite_differences(name, perturbed_sib_params):
    head = _head(name)
    with jax.enable_x64(True):
        params = _params(head, perturbed_sib_params, jnp.float64)
        fs, ys, fq, yq, _ = _episodes(1, (2, 2))

        def loss(p):
            return head.loss(p, fs, ys, fq, yq, steps=2, lr=0.3)[0]

        grads = assert_gradient_matches_finite_differences(loss, params,
                                                           np.random.default_rng(0),
                                                           per_leaf=2)
    for key in PART_VALUES:
        if key in params:  # every part receives a gradient
            assert all(float(jnp.abs(g).max()) > 1e-8
                       for g in jax.tree_util.tree_leaves(grads[key])), key


@pytest.mark.parametrize("name", COMPOSITIONS)
def test_k0_reads_the_queries_exactly_where_the_description_says(name, perturbed_sib_params):
    """The matched K = 0 control (the head with its readout, no step) changes a query's
    logits when another query changes iff `k0_reads_queries`; the method says so too."""
    head = _head(name)
    params = _params(head, perturbed_sib_params)
    fs, ys, fq, _, _ = _episodes(2, (2,), dtype=np.float32)
    moved = fq.at[0, 0].add(3.0)
    k0 = sib_method(params, 0, 0.3, readout=True if head.readout else None, head=head)
    before, after = k0(fs, ys, fq, N_WAY), k0(fs, ys, moved, N_WAY)
    others_changed = not np.allclose(np.asarray(before)[0, 1:], np.asarray(after)[0, 1:],
                                     rtol=0, atol=1e-7)
    assert others_changed == head.k0_reads_queries
    assert k0.is_transductive == (head.readout is not None)
    assert sib_method(params, 3, 0.3, head=head).is_transductive


@pytest.mark.parametrize("name", COMPOSITIONS)
def test_one_meta_training_step_moves_every_parameter(name, perturbed_sib_params):
    head = _head(name)
    params = _params(head, perturbed_sib_params)
    fs, ys, fq, yq, _ = _episodes(3, (2, 2, 2, 2), dtype=np.float32)
    optimizer = optax.sgd(0.1)
    step = metatrain.make_train_step(optimizer, steps=3, inner_lr=0.3, head=head)
    before = [np.array(leaf) for leaf in jax.tree_util.tree_leaves(params)]  # the step donates
    state = metatrain.init_state(params, optimizer, seed=0)
    source = jnp.concatenate([fs.reshape(-1, DIM), fq.reshape(-1, DIM)])
    n_support = fs.shape[0] * fs.shape[1]
    episodes = {"support_idx": jnp.arange(n_support, dtype=jnp.int32).reshape(ys.shape),
                "support_labels": ys, "query_labels": yq,
                "query_idx": (n_support + jnp.arange(yq.size, dtype=jnp.int32)).reshape(yq.shape)}
    new_state, metrics = step(state, None, source, episodes)
    assert np.isfinite(float(metrics["loss"]))
    after = jax.tree_util.tree_leaves_with_path(new_state["params"])
    for old, (path, new) in zip(before, after, strict=True):
        assert not np.array_equal(old, np.asarray(new)), jax.tree_util.keystr(path)
    if head != Head(N_WAY, DIM):  # only the reference architecture converts
        with pytest.raises(DataError, match="reference ClassifierSIB"):
            sib_to_torch(new_state["params"])


# ---- the description --------------------------------------------------------------------------


def test_meta_training_saves_the_description_its_parameters_are_of(tmp_path):
    last = meta_train_toy(str(tmp_path / "run"), shared_offset=2.0, center_features=True,
                          power_transform=True, balanced_readout=True)
    saved = Head.load(str(tmp_path / "run" / "mt"))
    assert saved == Head(N_WAY, toy_features()[0].shape[1], ("power", "centering"), "balanced")
    saved.check(last)
    assert saved.describe().startswith("with a power transform of the features, features "
                                       "centred")


def test_the_description_refuses_unknown_parts_and_parameters_of_another_head(tmp_path):
    with pytest.raises(ConfigError, match="each at most once"):
        Head(5, 8, ("centering", "centering"))
    with pytest.raises(ConfigError, match="from \\['centering', 'power'\\]"):
        Head(5, 8, ("whitening",))
    with pytest.raises(ConfigError, match="use None or one of"):
        Head(5, 8, readout="argmax")
    read_out = Head(5, 8, readout="balanced")
    with pytest.raises(ConfigError, match="pass the Head they were trained with"):
        sib_method(read_out.init(jax.random.PRNGKey(0)), 3)  # the reference head's method
    with pytest.raises(ConfigError, match="needs a head with a readout"):
        Head(5, 8).apply(sib.init(jax.random.PRNGKey(0), 5, 8), jnp.ones((5, 8)),
                         jnp.arange(5), jnp.ones((5, 8)), readout=True)
    with pytest.raises(ConfigError, match="holds no SIB head description"):
        Head.load(str(tmp_path))
    (tmp_path / "head.json").write_text(json.dumps({"n_way": 5}))
    with pytest.raises(ConfigError, match="is not a head description"):
        Head.load(str(tmp_path))
    read_out.save(str(tmp_path))
    assert Head.load(str(tmp_path)) == read_out


# ---- what each part computes ----------------------------------------------------------------


def test_the_power_transform_keeps_signs_and_reads_no_other_image():
    transform = parts.power_transform()
    x = jnp.asarray([[-4.0, 0.0, 9.0]])
    got, _ = transform.apply({"exponent": jnp.asarray(0.5)}, x, x)
    # (|x| + 1e-6) ** exponent: 0 maps to 1e-3.
    np.testing.assert_allclose(np.asarray(got), [[-2.0, 1e-3, 3.0]], rtol=1e-4)
    assert float(transform.init()["exponent"]) == parts.POWER_EXPONENT_INIT
    assert not transform.reads_queries


def test_centring_subtracts_the_mean_of_the_real_normalised_images():
    transform = parts.centering()
    fs, _, fq, _, mask = _episodes(4, (1, 2), dtype=np.float32)
    got_s, got_q = transform.apply({"strength": jnp.asarray(0.7)}, fs, fq, mask)
    for e in range(len(fs)):
        s = np.asarray(numerics.l2_normalize(fs[e]))
        q = np.asarray(numerics.l2_normalize(fq[e]))
        mean = np.concatenate([s, q[np.asarray(mask[e])]]).mean(0)
        np.testing.assert_allclose(np.asarray(got_s[e]), s - 0.7 * mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(got_q[e]), q - 0.7 * mean, rtol=1e-5, atol=1e-6)
    # What it is for: features crowded around one direction spread out (at its initial
    # strength, 1).
    crowded = np.asarray(numerics.l2_normalize(fs[0]))
    centred, _ = transform.apply(transform.init(), fs, fq, mask)
    spread = np.asarray(numerics.l2_normalize(centred[0]))
    assert np.mean(spread @ spread.T) < np.mean(crowded @ crowded.T) - 0.5


def test_the_readout_is_the_balanced_assignment_at_the_learned_temperature():
    readout = parts.balanced_readout()
    logits = jnp.asarray(np.random.default_rng(5).normal(size=(2, 6, 3)), jnp.float32)
    mask = jnp.asarray([[True] * 6, [True] * 4 + [False] * 2])
    got = readout.apply({"log_temperature": jnp.asarray(0.3)}, logits, mask)
    want = balanced_assignment(np.exp(0.3) * logits, mask,
                               iterations=parts.READOUT_ITERATIONS)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


def test_transforms_apply_in_the_order_the_description_gives(perturbed_sib_params):
    fs, ys, fq, _, _ = _episodes(6, (2,), dtype=np.float32)
    first_power = Head(N_WAY, DIM, ("power", "centering"))
    first_centre = Head(N_WAY, DIM, ("centering", "power"))
    params = _params(first_power, perturbed_sib_params)
    a = first_power.apply(params, fs, ys, fq, steps=0)
    b = first_centre.apply(params, fs, ys, fq, steps=0)
    assert not np.allclose(np.asarray(a), np.asarray(b))
    power, centre = parts.power_transform(), parts.centering()
    s, q = power.apply(params["power"], fs, fq)
    s, q = centre.apply(params["centering"], s, q)
    np.testing.assert_allclose(np.asarray(a), np.asarray(sib.apply(params, s, ys, q, steps=0)),
                               rtol=1e-6)


def test_compare_and_evaluation_keep_the_readout_in_the_matched_k0():
    from experiments.tools.compare import sib_methods
    from metaunlab import evaluation
    from metaunlab.data.episodes import EpisodeSampler, EpisodeShape

    feats, labels = toy_features()
    plain = Head(5, feats.shape[1])
    plain_params = plain.init(jax.random.PRNGKey(6))
    assert [m.name for m in sib_methods(plain, plain_params, 1e-3, (0, 3))] == [
        "sib_k0", "sib_k3"]
    read_out = Head(5, feats.shape[1], readout="balanced")
    params = read_out.init(jax.random.PRNGKey(6))
    params["readout"]["log_temperature"] = jnp.asarray(1.5, jnp.float32)
    methods = sib_methods(read_out, params, 1e-3, (0, 3))
    assert [m.name for m in methods] == ["sib_k0", "sib_k0_readout", "sib_k3"]
    assert [m.is_transductive for m in methods] == [False, True, True]
    eps = EpisodeSampler(labels, EpisodeShape(5, 1, 3), seed=2).sample(0, 20)
    results = evaluation.evaluate_sib(read_out, params, feats, eps, steps=3, lr=0.05)
    with_readout = evaluation.evaluate(
        sib_method(params, 0, 0.05, readout=True, head=read_out), feats, eps)
    without = evaluation.evaluate(
        sib_method(params, 0, 0.05, readout=False, head=read_out), feats, eps)
    assert results["k0"]["accuracy"] == pytest.approx(with_readout.accuracy)
    assert not np.array_equal(with_readout.accuracies, without.accuracies)
    assert results["k0"]["transductive"] is True
