"""phi's class-marginal variant (`synthetic_gradient.init(..., class_marginal=True)`): its
input, that it nests the reference's phi, and its VJP against autodiff. Padding and the SIB head
built on it: tests/test_phi_variants.py; meta-training it: tests/test_metatrain.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import synthetic_gradient as phi
from tests._phi_variants import max_rel, phi_params64


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
        params = phi_params64(3, class_marginal=True)
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
        assert max_rel(out_auto, out_manual) < 1e-12
        grads_auto, grads_manual = vjp_auto(cotangent), vjp_manual(cotangent)
        # The logits' gradient flows through the marginal too, not only the first N inputs.
        assert float(jnp.abs(grads_auto[1]).max()) > 1e-6
        assert max_rel(grads_auto, grads_manual) < 1e-9
