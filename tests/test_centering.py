"""Episode centring (`sib.init(..., centering=True)`, `sib.center_episode`): the formula,
the reference without it and at strength 0, both step forms, padded query sets, its
meta-gradient against finite differences, and meta-training it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import numerics, sib
from metaunlab.data.errors import DataError
from metaunlab.interop.convert import sib_to_torch
from tests._toy_meta_training import meta_train_toy


def _crowded_episodes(seed, n_episodes=2, n_way=5, n_shot=1, n_query=3, dim=8,
                      dtype=np.float32):
    """Episodes whose features all lie near one common direction, as a new alphabet's do."""
    rng = np.random.default_rng(seed)
    common = 3.0 * rng.normal(size=dim)
    centres = common + rng.normal(size=(n_episodes, n_way, dim))
    ys = np.tile(np.repeat(np.arange(n_way), n_shot), (n_episodes, 1))
    yq = np.tile(np.repeat(np.arange(n_way), n_query), (n_episodes, 1))
    pick = np.arange(n_episodes)[:, None]
    fs = centres[pick, ys] + 0.6 * rng.normal(size=ys.shape + (dim,))
    fq = centres[pick, yq] + 0.6 * rng.normal(size=yq.shape + (dim,))
    return (jnp.asarray(fs, dtype), jnp.asarray(ys, jnp.int32), jnp.asarray(fq, dtype),
            jnp.asarray(yq, jnp.int32))


def _centred(params, strength):
    params = dict(params)
    params["centering"] = {"strength": jnp.asarray(strength, jnp.float32)}
    return params


def _normalised(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_the_centring_formula_and_the_reference_without_it():
    fs, _, fq, _ = _crowded_episodes(0)
    reference = sib.init(jax.random.PRNGKey(0), 5, 8)
    same_s, same_q = sib.center_episode(reference, fs, fq)
    assert same_s is fs and same_q is fq
    centred = sib.init(jax.random.PRNGKey(0), 5, 8, centering=True)
    assert float(centred["centering"]["strength"]) == 1.0
    got_s, got_q = sib.center_episode(_centred(reference, 0.7), fs, fq)
    s, q = _normalised(np.asarray(fs)), _normalised(np.asarray(fq))
    mean = np.concatenate([s, q], axis=1).mean(axis=1, keepdims=True)  # per episode
    np.testing.assert_allclose(np.asarray(got_s), s - 0.7 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_q), q - 0.7 * mean, rtol=1e-5, atol=1e-6)
    # The point of it: crowded features spread out (cosines between classes fall).
    crowded = np.mean(s[0] @ s[0].T)
    spread = _normalised(np.asarray(got_s[0]))
    assert np.mean(spread @ spread.T) < crowded - 0.3


def test_a_masked_query_set_centres_on_its_real_queries():
    fs, _, fq, _ = _crowded_episodes(1, n_query=4)
    params = _centred(sib.init(jax.random.PRNGKey(1), 5, 8), 1.0)
    mask = np.tile([True, False, True, False], 5)
    _, got_q = sib.center_episode(params, fs[0], fq[0], jnp.asarray(mask))
    _, want_q = sib.center_episode(params, fs[0], fq[0][mask])
    np.testing.assert_allclose(np.asarray(got_q)[mask], np.asarray(want_q), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("form", [sib.apply_direct, sib.apply_gram])
def test_at_strength_zero_the_head_is_the_reference(form, perturbed_sib_params):
    """The head is a cosine classifier, so normalised features give the reference's
    logits: strength 0 changes nothing, the initial strength 1 does."""
    fs, ys, fq, _ = _crowded_episodes(2, n_query=4)
    base = perturbed_sib_params(2, 5, 8)
    got = form(_centred(base, 0.0), fs, ys, fq, steps=3, lr=0.3)
    want = form(base, fs, ys, fq, steps=3, lr=0.3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
    moved = form(_centred(base, 1.0), fs, ys, fq, steps=3, lr=0.3)
    assert float(jnp.abs(moved - want).max()) > 1e-2


def test_both_step_forms_agree_with_centring_and_padding(perturbed_sib_params):
    with jax.enable_x64(True):
        fs, ys, fq, _ = _crowded_episodes(3, n_query=4, dtype=np.float64)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        _centred(perturbed_sib_params(3, 5, 8), 0.8))
        mask = np.ones((2, 20), bool)
        mask[1] = np.tile([True, True, False, False], 5)
        mask = jnp.asarray(mask)
        direct = sib.apply_direct(params, fs, ys, fq, steps=3, lr=0.3, query_mask=mask)
        gram = sib.apply_gram(params, fs, ys, fq, steps=3, lr=0.3, query_mask=mask)
        np.testing.assert_allclose(np.asarray(direct), np.asarray(gram), rtol=1e-10,
                                   atol=1e-10)


def test_padded_query_sets_get_the_logits_of_their_real_queries(perturbed_sib_params):
    fs, ys, fq, _ = _crowded_episodes(4, n_query=4)
    params = _centred(perturbed_sib_params(4, 5, 8), 1.0)
    mask = np.ones((2, 20), bool)
    mask[1] = np.tile([True, True, False, False], 5)
    got = sib.apply(params, fs, ys, fq, steps=3, lr=0.3, query_mask=jnp.asarray(mask))
    alone = sib.apply(params, fs[1], ys[1], fq[1][mask[1]], steps=3, lr=0.3)
    np.testing.assert_allclose(np.asarray(got[1][mask[1]]), np.asarray(alone), rtol=1e-4,
                               atol=2e-5)


def test_the_meta_gradient_of_the_strength_matches_finite_differences(perturbed_sib_params):
    with jax.enable_x64(True):
        fs, ys, fq, yq = _crowded_episodes(5, dtype=np.float64)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        _centred(perturbed_sib_params(5, 5, 8), 0.6))

        def loss(p):
            return numerics.cross_entropy(sib.apply(p, fs, ys, fq, steps=3, lr=0.3), yq)

        grads = jax.grad(loss)(params)
        eps = 1e-6

        def shifted(delta):
            moved = dict(params)
            moved["centering"] = {"strength": params["centering"]["strength"] + delta}
            return float(loss(moved))

        numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
        assert abs(numeric) > 1e-6
        assert float(grads["centering"]["strength"]) == pytest.approx(numeric, rel=1e-5,
                                                                      abs=1e-9)
        # The rest of the head still gets its gradient through the centred features.
        w = grads["init"]["w"]
        assert float(jnp.abs(w).max()) > 1e-8


def test_meta_training_learns_the_strength(tmp_path):
    last = meta_train_toy(str(tmp_path / "run"), shared_offset=2.0, center_features=True)
    assert abs(float(last["centering"]["strength"]) - 1.0) > 1e-6
    with pytest.raises(DataError, match="center_features"):
        sib_to_torch(last)
