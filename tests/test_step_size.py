"""The meta-learned synthetic step size (`sib.init(..., learned_step_size=True)`,
`sib.step_size`): the formula, the reference at its initial values, both step forms, padded
query sets, its meta-gradient against finite differences, and meta-training it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import numerics, sib
from metaunlab.data.errors import DataError
from metaunlab.interop.convert import sib_to_torch
from tests._toy_meta_training import meta_train_toy


def _episodes(seed, n_episodes=2, n_way=5, n_shot=1, n_query=3, dim=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_episodes, n_way, dim))
    ys = np.tile(np.repeat(np.arange(n_way), n_shot), (n_episodes, 1))
    yq = np.tile(np.repeat(np.arange(n_way), n_query), (n_episodes, 1))
    pick = np.arange(n_episodes)[:, None]
    fs = centres[pick, ys] + 0.6 * rng.normal(size=ys.shape + (dim,))
    fq = centres[pick, yq] + 0.6 * rng.normal(size=yq.shape + (dim,))
    return (jnp.asarray(fs, dtype), jnp.asarray(ys, jnp.int32), jnp.asarray(fq, dtype),
            jnp.asarray(yq, jnp.int32))


def _learned(params, log_scale, exponent):
    params = dict(params)
    params["step_size"] = {"log_scale": jnp.asarray(log_scale, jnp.float32),
                           "count_exponent": jnp.asarray(exponent, jnp.float32)}
    return params


def test_the_step_size_formula_and_the_reference_without_it():
    params = sib.init(jax.random.PRNGKey(0), 5, 8)
    assert sib.step_size(params, 1e-3, 5, 75) == 1e-3
    learned = _learned(params, np.log(2.0), 1.0)
    assert float(sib.step_size(learned, 1e-3, 5, 75)) == pytest.approx(2e-3 / 15, rel=1e-6)
    assert float(sib.step_size(_learned(params, 0.0, 0.5), 1e-3, 5, 20)) == pytest.approx(
        1e-3 / 2, rel=1e-6)
    per_episode = sib.step_size(learned, 1e-3, 5, jnp.asarray([5, 75]))
    np.testing.assert_allclose(np.asarray(per_episode), [2e-3, 2e-3 / 15], rtol=1e-6)


def test_at_its_initial_values_the_head_is_the_reference():
    fs, ys, fq, _ = _episodes(1)
    reference = sib.init(jax.random.PRNGKey(3), 5, 8)
    learned = sib.init(jax.random.PRNGKey(3), 5, 8, learned_step_size=True)
    assert set(learned["step_size"]) == {"log_scale", "count_exponent"}
    np.testing.assert_array_equal(np.asarray(sib.apply(learned, fs, ys, fq, steps=3, lr=0.5)),
                                  np.asarray(sib.apply(reference, fs, ys, fq, steps=3, lr=0.5)))


@pytest.mark.parametrize("form", [sib.apply_direct, sib.apply_gram])
def test_a_learned_step_size_is_the_reference_at_that_step_size(form, perturbed_sib_params):
    fs, ys, fq, _ = _episodes(2, n_query=4)
    base = perturbed_sib_params(2, 5, 8)
    learned = _learned(base, 0.7, 0.8)
    lr = float(sib.step_size(learned, 0.3, 5, fq.shape[-2]))
    got = form(learned, fs, ys, fq, steps=3, lr=0.3)
    want = form(base, fs, ys, fq, steps=3, lr=lr)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-6)
    assert float(jnp.abs(got - form(base, fs, ys, fq, steps=3, lr=0.3)).max()) > 1e-4


def test_padded_query_sets_step_by_their_real_query_count(perturbed_sib_params):
    """Episode 2 keeps 2 of its 4 queries per class: its step size is that of 2 per class,
    and its real queries get the logits of the unpadded 2-query episode."""
    fs, ys, fq, _ = _episodes(4, n_query=4)
    learned = _learned(perturbed_sib_params(4, 5, 8), 0.3, 1.0)
    mask = np.ones((2, 20), bool)
    mask[1] = np.tile([True, True, False, False], 5)
    got = sib.apply(learned, fs, ys, fq, steps=3, lr=0.3, query_mask=jnp.asarray(mask))
    alone = sib.apply(learned, fs[1], ys[1], fq[1][mask[1]], steps=3, lr=0.3)
    np.testing.assert_allclose(np.asarray(got[1][mask[1]]), np.asarray(alone), rtol=1e-4,
                               atol=2e-5)
    unmasked = sib.apply(learned, fs[1], ys[1], fq[1], steps=3, lr=0.3)
    assert float(jnp.abs(got[1][mask[1]] - unmasked[mask[1]]).max()) > 1e-3


def test_the_meta_gradient_of_the_step_size_matches_finite_differences(perturbed_sib_params):
    with jax.enable_x64(True):
        fs, ys, fq, yq = _episodes(5, dtype=np.float64)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        _learned(perturbed_sib_params(5, 5, 8), 0.2, 0.4))

        def loss(p):
            return numerics.cross_entropy(sib.apply(p, fs, ys, fq, steps=3, lr=0.3), yq)

        grads = jax.grad(loss)(params)["step_size"]
        eps = 1e-6
        for name in ("log_scale", "count_exponent"):
            def shifted(delta, name=name):
                moved = dict(params)
                moved["step_size"] = dict(params["step_size"])
                moved["step_size"][name] = params["step_size"][name] + delta
                return float(loss(moved))

            numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
            assert abs(numeric) > 1e-6
            assert float(grads[name]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_meta_training_learns_the_step_size(tmp_path):
    last = meta_train_toy(str(tmp_path / "run"), learned_step_size=True)
    assert abs(float(last["step_size"]["log_scale"])) > 1e-6
    assert abs(float(last["step_size"]["count_exponent"])) > 1e-6
    with pytest.raises(DataError, match="learned_step_size"):
        sib_to_torch(last)
