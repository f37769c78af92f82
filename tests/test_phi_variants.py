"""Each of phi's optional inputs (the class marginal, the balanced assignment): padded queries
change nothing, and the SIB head on it has both step forms agree and a meta-gradient that
matches finite differences, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import numerics, sib
from metaunlab import synthetic_gradient as phi
from tests._finite_differences import assert_gradient_matches_finite_differences
from tests._phi_variants import episode64, max_rel, sib_params64

# Each variant, and the block of phi's first layer that reads its extra input.
VARIANTS = {
    "class_marginal": lambda grad_net: grad_net["dense1"]["kernel"][5:],
    "balanced_assignment": lambda grad_net: grad_net["dense1_assignment"]["kernel"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_padded_queries_do_not_change_the_real_queries_phi(variant):
    params = phi.init(jax.random.PRNGKey(1), 5, **{variant: True})
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


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sib_on_the_variant_gram_form_equals_direct_form_in_float64(variant):
    with jax.enable_x64(True):
        batch = [jnp.stack(parts) for parts in zip(episode64(4), episode64(14), strict=True)]
        params = sib_params64(4, **{variant: True})

        def loss(p, form):
            logits = form(p, batch[0], batch[1], batch[2], steps=3, lr=0.5)
            return numerics.cross_entropy(logits, batch[3]), logits

        (direct_loss, direct), direct_grads = jax.value_and_grad(
            lambda p: loss(p, sib.apply_direct), has_aux=True)(params)
        (gram_loss, gram), gram_grads = jax.value_and_grad(
            lambda p: loss(p, sib.apply_gram), has_aux=True)(params)
        k0 = sib.apply(params, *batch[:3], steps=0)
        assert float(jnp.abs(direct - k0).max()) > 1e-6  # the steps moved theta
        assert max_rel(direct, gram) < 1e-12
        assert float(gram_loss) == pytest.approx(float(direct_loss), rel=1e-12)
        assert max_rel(direct_grads, gram_grads) < 1e-9


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sib_meta_gradient_on_the_variant_matches_finite_differences(variant):
    with jax.enable_x64(True):
        fs, ys, fq, yq = episode64(5, n_query=3)
        params = sib_params64(5, **{variant: True})

        def loss(p):
            return numerics.cross_entropy(sib.apply(p, fs, ys, fq, steps=3, lr=0.3), yq)

        grads = assert_gradient_matches_finite_differences(loss, params,
                                                           np.random.default_rng(5))
        # The extra input's block of the first layer receives meta-gradient.
        assert float(jnp.abs(VARIANTS[variant](grads["grad_net"])).max()) > 1e-8
