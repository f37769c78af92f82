"""The head's power transform (`sib.init(..., power_transform=True)`,
`episode_features.power_transform_episode`): the formula, the head on transformed features,
the order with centring, both step forms, K = 0 inductive, its meta-gradient against finite
differences, and meta-training it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import episode_features, numerics, sib
from metaunlab.data.errors import DataError
from metaunlab.interop.convert import sib_to_torch
from tests._toy_meta_training import meta_train_toy


def _relu_episodes(seed, n_episodes=2, n_way=5, n_shot=1, n_query=3, dim=8,
                   dtype=np.float32):
    """Non-negative, sparse features (a ReLU backbone's), a few large coordinates each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_episodes, n_way, dim))
    ys = np.tile(np.repeat(np.arange(n_way), n_shot), (n_episodes, 1))
    yq = np.tile(np.repeat(np.arange(n_way), n_query), (n_episodes, 1))
    pick = np.arange(n_episodes)[:, None]

    def draw(labels):
        return np.maximum(centres[pick, labels] + 0.5 * rng.normal(size=labels.shape + (dim,)),
                          0.0) ** 2

    return (jnp.asarray(draw(ys), dtype), jnp.asarray(ys, jnp.int32),
            jnp.asarray(draw(yq), dtype), jnp.asarray(yq, jnp.int32))


def _with_power(params, exponent):
    params = dict(params)
    params["power"] = {"exponent": jnp.asarray(exponent, params["init"]["w"].dtype)}
    return params


def test_the_transform_formula_keeps_signs():
    x = jnp.asarray([[0.0, 0.25, 4.0, -9.0]])
    got = np.asarray(numerics.power_transform(x, 0.5))
    want = np.asarray([[1e-3, np.sqrt(0.25 + 1e-6), np.sqrt(4 + 1e-6), -np.sqrt(9 + 1e-6)]])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_without_the_entry_the_features_are_the_backbones_and_with_it_transformed():
    fs, _, fq, _ = _relu_episodes(0)
    reference = sib.init(jax.random.PRNGKey(0), 5, 8)
    same_s, same_q = episode_features.power_transform_episode(reference, fs, fq)
    assert same_s is fs and same_q is fq
    built = sib.init(jax.random.PRNGKey(0), 5, 8, power_transform=True)
    assert float(built["power"]["exponent"]) == episode_features.POWER_EXPONENT_INIT
    got_s, got_q = episode_features.power_transform_episode(_with_power(reference, 0.3), fs, fq)
    np.testing.assert_allclose(np.asarray(got_s), (np.asarray(fs) + 1e-6) ** 0.3, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_q), (np.asarray(fq) + 1e-6) ** 0.3, rtol=1e-5)


@pytest.mark.parametrize("form", [sib.apply_direct, sib.apply_gram])
def test_the_head_is_the_reference_on_transformed_features(form, perturbed_sib_params):
    fs, ys, fq, _ = _relu_episodes(1, n_query=4)
    base = perturbed_sib_params(1, 5, 8)
    got = form(_with_power(base, 0.4), fs, ys, fq, steps=3, lr=0.3)

    def power(x):
        return (np.asarray(x, np.float64) + 1e-6) ** 0.4

    want = form(base, jnp.asarray(power(fs), jnp.float32), ys,
                jnp.asarray(power(fq), jnp.float32), steps=3, lr=0.3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
    # And it is not the head on the raw features.
    raw = form(base, fs, ys, fq, steps=3, lr=0.3)
    assert float(jnp.abs(got - raw).max()) > 1e-2


def test_the_transform_comes_before_centring(perturbed_sib_params):
    fs, ys, fq, _ = _relu_episodes(2, n_query=4)
    both = _with_power(perturbed_sib_params(2, 5, 8), 0.5)
    both["centering"] = {"strength": jnp.float32(0.8)}
    centred_only = dict(both)
    del centred_only["power"]
    got = sib.apply(both, fs, ys, fq, steps=3, lr=0.3)
    ps, pq = numerics.power_transform(fs, 0.5), numerics.power_transform(fq, 0.5)
    want = sib.apply(centred_only, ps, ys, pq, steps=3, lr=0.3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)


def test_both_step_forms_agree_with_the_transform_and_padding(perturbed_sib_params):
    with jax.enable_x64(True):
        fs, ys, fq, _ = _relu_episodes(3, n_query=4, dtype=np.float64)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        _with_power(perturbed_sib_params(3, 5, 8), 0.6))
        mask = np.ones((2, 20), bool)
        mask[1] = np.tile([True, True, False, False], 5)
        mask = jnp.asarray(mask)
        direct = sib.apply_direct(params, fs, ys, fq, steps=3, lr=0.3, query_mask=mask)
        gram = sib.apply_gram(params, fs, ys, fq, steps=3, lr=0.3, query_mask=mask)
        np.testing.assert_allclose(np.asarray(direct), np.asarray(gram), rtol=1e-10,
                                   atol=1e-10)


def test_at_k0_a_querys_logits_do_not_depend_on_the_other_queries(perturbed_sib_params):
    """Elementwise, so it reads no other image: K = 0 stays inductive."""
    fs, ys, fq, _ = _relu_episodes(4, n_episodes=1, n_query=4)
    params = _with_power(perturbed_sib_params(4, 5, 8), 0.5)
    together = sib.apply(params, fs[0], ys[0], fq[0], steps=0)
    alone = sib.apply(params, fs[0], ys[0], fq[0][:1], steps=0)
    np.testing.assert_allclose(np.asarray(together[:1]), np.asarray(alone), rtol=1e-6)


def test_the_meta_gradient_of_the_exponent_matches_finite_differences(perturbed_sib_params):
    with jax.enable_x64(True):
        fs, ys, fq, yq = _relu_episodes(5, dtype=np.float64)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        _with_power(perturbed_sib_params(5, 5, 8), 0.5))

        def loss(p):
            return numerics.cross_entropy(sib.apply(p, fs, ys, fq, steps=3, lr=0.3), yq)

        grads = jax.grad(loss)(params)
        eps = 1e-6

        def shifted(delta):
            return float(loss(_with_power(params, params["power"]["exponent"] + delta)))

        numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
        assert abs(numeric) > 1e-6
        assert float(grads["power"]["exponent"]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_meta_training_learns_the_exponent_and_export_refuses_it(tmp_path):
    last = meta_train_toy(str(tmp_path / "run"), power_transform=True)
    assert abs(float(last["power"]["exponent"]) - episode_features.POWER_EXPONENT_INIT) > 1e-6
    with pytest.raises(DataError, match="power_transform"):
        sib_to_torch(last)
