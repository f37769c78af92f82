"""phi's class-marginal variant (`synthetic_gradient.init(..., class_marginal=True)`): its
input, that it nests the reference's phi, its VJP against autodiff, and the SIB head built on
it (both step forms, finite-difference meta-gradient, meta-training config)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import numerics, sib
from metaunlab import synthetic_gradient as phi
from tests._finite_differences import assert_gradient_matches_finite_differences


def _max_rel(a, b):
    return max(float(jnp.abs(x - y).max() / (jnp.abs(x).max() + 1e-300))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


def _variant_params64(seed, n_way=5):
    params = phi.init(jax.random.PRNGKey(seed), n_way, class_marginal=True)
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    for bn in ("bn1", "bn2"):  # away from 1 and 0, so no term hides
        width = params[bn]["scale"].shape[0]
        params[bn] = {"scale": jnp.asarray(1 + 0.2 * rng.normal(size=width)),
                      "bias": jnp.asarray(0.1 * rng.normal(size=width))}
    return params


def test_the_variant_is_told_apart_by_its_parameters():
    reference = phi.init(jax.random.PRNGKey(0), 5)
    variant = phi.init(jax.random.PRNGKey(0), 5, class_marginal=True)
    assert not phi.reads_class_marginal(reference)
    assert phi.reads_class_marginal(variant)
    assert variant["dense1"]["kernel"].shape == (10, 40)
    assert phi.n_way_of(reference) == phi.n_way_of(variant) == 5


def test_the_input_is_the_log_of_the_mean_query_softmax_over_real_queries():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 4)) * 3
    mask = np.array([[True] * 6, [True, True, True, False, False, False]])
    out = np.asarray(phi.with_class_marginal(jnp.asarray(logits), jnp.asarray(mask)))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for e in range(2):
        want = np.log(probs[e][mask[e]].mean(0))
        np.testing.assert_allclose(out[e, :, :4], logits[e], rtol=1e-6)
        np.testing.assert_allclose(out[e, :, 4:], np.broadcast_to(want, (6, 4)), rtol=1e-5)
    unmasked = np.asarray(phi.with_class_marginal(jnp.asarray(logits[:1])))
    np.testing.assert_allclose(unmasked, out[:1], rtol=1e-6)


def test_padded_queries_do_not_change_the_real_queries_phi():
    params = phi.init(jax.random.PRNGKey(1), 5, class_marginal=True)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, 5)).astype(np.float32) * 3
    mask = jnp.asarray(np.arange(8) < 5)
    other = logits.copy()
    other[5:] = rng.normal(size=(3, 5)) * 10
    a = phi.apply(params, jnp.asarray(logits), mask)[:5]
    b = phi.apply(params, jnp.asarray(other), mask)[:5]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    alone = phi.apply(params, jnp.asarray(logits[:5]))
    np.testing.assert_allclose(np.asarray(a), np.asarray(alone), rtol=1e-5, atol=1e-6)


def test_with_the_marginal_weights_at_zero_it_is_the_reference_phi():
    variant = phi.init(jax.random.PRNGKey(2), 5, class_marginal=True)
    variant["dense1"]["kernel"] = variant["dense1"]["kernel"].at[5:].set(0.0)
    reference = jax.tree_util.tree_map(lambda a: a, variant)
    reference["dense1"] = {"kernel": variant["dense1"]["kernel"][:5],
                           "bias": variant["dense1"]["bias"]}
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 9, 5)) * 3, jnp.float32)
    np.testing.assert_allclose(np.asarray(phi.apply(variant, logits)),
                               np.asarray(phi.apply(reference, logits)), rtol=1e-5, atol=1e-6)
    # And the marginal does matter once its weights are not zero.
    full = phi.init(jax.random.PRNGKey(2), 5, class_marginal=True)
    assert float(jnp.abs(phi.apply(full, logits) - phi.apply(variant, logits)).max()) > 1e-3


@pytest.mark.parametrize("masked", [False, True])
def test_manual_vjp_equals_autodiff_of_the_module_in_float64(masked):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        params = _variant_params64(3)
        logits = jnp.asarray(4.0 * rng.normal(size=(3, 11, 5)))
        mask = jnp.asarray(np.arange(11)[None] < np.array([[11], [7], [4]])) if masked else None
        cotangent = jnp.asarray(rng.normal(size=(3, 11, 5)))
        if masked:
            cotangent = jnp.where(mask[..., None], cotangent, 0.0)

        def manual(p, z):
            return phi.apply(p, z, mask)

        def auto(p, z):
            return phi.apply_autodiff(p, z, mask)

        out_manual, vjp_manual = jax.vjp(manual, params, logits)
        out_auto, vjp_auto = jax.vjp(auto, params, logits)
        assert _max_rel(out_auto, out_manual) < 1e-12
        grads_auto, grads_manual = vjp_auto(cotangent), vjp_manual(cotangent)
        # The logits' gradient flows through the marginal too, not only the first N inputs.
        assert float(jnp.abs(grads_auto[1]).max()) > 1e-6
        assert _max_rel(grads_auto, grads_manual) < 1e-9


def _episode64(seed, n_way=5, n_shot=1, n_query=4, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_way, dim))
    ys = np.repeat(np.arange(n_way), n_shot)
    yq = np.repeat(np.arange(n_way), n_query)
    fs = centres[ys] + 0.5 * rng.normal(size=(ys.size, dim))
    fq = centres[yq] + 0.5 * rng.normal(size=(yq.size, dim))
    return (jnp.asarray(fs), jnp.asarray(ys, jnp.int32), jnp.asarray(fq),
            jnp.asarray(yq, jnp.int32))


def _sib_params64(seed, dim=8):
    params = sib.init(jax.random.PRNGKey(seed), 5, dim, class_marginal=True)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    params["grad_net"] = _variant_params64(seed)
    params["classifier"] = {"scale": jnp.float64(7.0), "bias": jnp.float64(0.2)}
    return params


def test_sib_on_the_variant_gram_form_equals_direct_form_in_float64():
    with jax.enable_x64(True):
        batch = [jnp.stack(parts) for parts in zip(_episode64(4), _episode64(14), strict=True)]
        params = _sib_params64(4)

        def loss(p, form):
            logits = form(p, batch[0], batch[1], batch[2], steps=3, lr=0.5)
            return numerics.cross_entropy(logits, batch[3]), logits

        (direct_loss, direct), direct_grads = jax.value_and_grad(
            lambda p: loss(p, sib.apply_direct), has_aux=True)(params)
        (gram_loss, gram), gram_grads = jax.value_and_grad(
            lambda p: loss(p, sib.apply_gram), has_aux=True)(params)
        k0 = sib.apply(params, *batch[:3], steps=0)
        assert float(jnp.abs(direct - k0).max()) > 1e-6  # the steps moved theta
        assert _max_rel(direct, gram) < 1e-12
        assert float(gram_loss) == pytest.approx(float(direct_loss), rel=1e-12)
        assert _max_rel(direct_grads, gram_grads) < 1e-9


def test_sib_meta_gradient_on_the_variant_matches_finite_differences():
    with jax.enable_x64(True):
        fs, ys, fq, yq = _episode64(5, n_query=3)
        params = _sib_params64(5)

        def loss(p):
            return numerics.cross_entropy(sib.apply(p, fs, ys, fq, steps=3, lr=0.3), yq)

        grads = assert_gradient_matches_finite_differences(loss, params,
                                                           np.random.default_rng(5))
        # The marginal's half of phi's first layer receives meta-gradient.
        assert float(jnp.abs(grads["grad_net"]["dense1"]["kernel"][5:]).max()) > 1e-8
