"""phi's balanced-assignment variant (`synthetic_gradient.init(..., balanced_assignment=True)`):
the Sinkhorn input, that it nests the reference's phi, its VJP against autodiff, meta-training
and export. Padding and the SIB head built on it (both step forms, finite-difference
meta-gradient): tests/test_phi_variants.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import sib
from metaunlab import synthetic_gradient as phi
from metaunlab.data.errors import DataError
from metaunlab.interop.convert import sib_to_torch
from tests._phi_variants import max_rel, phi_params64
from tests._toy_meta_training import meta_train_toy


def _sinkhorn_numpy(logits, mask, iterations):
    """The balanced assignment written out in probabilities, one episode."""
    plan = np.exp(logits - logits.max(-1, keepdims=True))
    plan /= plan.sum(-1, keepdims=True)
    real = mask.astype(float)[:, None]
    for _ in range(iterations):
        plan = plan * (real.sum() / logits.shape[-1]) / (real * plan).sum(0, keepdims=True)
        plan /= plan.sum(-1, keepdims=True)
    return plan


def test_the_variant_is_told_apart_by_its_parameters():
    reference = phi.init(jax.random.PRNGKey(0), 5)
    variant = phi.init(jax.random.PRNGKey(0), 5, balanced_assignment=True)
    both = phi.init(jax.random.PRNGKey(0), 5, class_marginal=True, balanced_assignment=True)
    assert not phi.reads_balanced_assignment(reference)
    assert phi.reads_balanced_assignment(variant) and not phi.reads_class_marginal(variant)
    assert phi.reads_balanced_assignment(both) and phi.reads_class_marginal(both)
    assert variant["dense1"]["kernel"].shape == (5, 40)
    assert variant["dense1_assignment"] == {"kernel": variant["dense1_assignment"]["kernel"]}
    assert variant["dense1_assignment"]["kernel"].shape == (5, 40)
    assert phi.n_way_of(variant) == phi.n_way_of(both) == 5
    # torch's default initialisation for one layer reading both inputs: +-1/sqrt(2N).
    bound = float(jnp.abs(variant["dense1_assignment"]["kernel"]).max())
    assert 0.8 / np.sqrt(10) < bound <= 1 / np.sqrt(10)


@pytest.mark.parametrize("iterations", [1, 3])
def test_the_input_is_sinkhorn_on_the_real_queries(iterations):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 4)) * 3
    mask = np.array([[True] * 6, [True, True, True, False, False, False]])
    with jax.enable_x64(True):
        out = np.asarray(phi.balanced_assignment(jnp.asarray(logits), jnp.asarray(mask),
                                                 iterations=iterations))
        for e in range(2):
            want = _sinkhorn_numpy(logits[e], mask[e], iterations)
            np.testing.assert_allclose(np.exp(out[e]), want, rtol=1e-12)
            # Padded rows change nothing of the real ones.
            alone = phi.balanced_assignment(jnp.asarray(logits[e][mask[e]]),
                                            iterations=iterations)
            np.testing.assert_allclose(out[e][mask[e]], np.asarray(alone), rtol=1e-12)


def test_at_one_query_per_class_many_iterations_find_the_matching():
    """Query 1 prefers class 0, which query 0 claims more strongly; balancing hands it its
    second choice, class 1, while each query's own softmax gives it class 0."""
    logits = jnp.asarray([[6.0, 0.0, 0.0], [4.0, 3.0, 0.0], [0.0, 0.0, 6.0]])
    plan = np.exp(np.asarray(phi.balanced_assignment(logits, iterations=50)))
    assert np.argmax(np.asarray(logits), -1).tolist() == [0, 0, 2]
    assert np.argmax(plan, -1).tolist() == [0, 1, 2]
    np.testing.assert_allclose(plan.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(plan.sum(0), 1.0, rtol=1e-3)  # every class one query's worth


def test_with_the_assignment_weights_at_zero_it_is_the_reference_phi():
    variant = phi.init(jax.random.PRNGKey(2), 5, balanced_assignment=True)
    zeroed = dict(variant, dense1_assignment={
        "kernel": jnp.zeros_like(variant["dense1_assignment"]["kernel"])})
    reference = {k: v for k, v in zeroed.items() if k != "dense1_assignment"}
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 9, 5)) * 3, jnp.float32)
    np.testing.assert_allclose(np.asarray(phi.apply(zeroed, logits)),
                               np.asarray(phi.apply(reference, logits)), rtol=1e-5, atol=1e-6)
    # And the assignment does matter once its weights are not zero.
    assert float(jnp.abs(phi.apply(variant, logits) - phi.apply(zeroed, logits)).max()) > 1e-3


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("class_marginal", [False, True])
def test_manual_vjp_equals_autodiff_of_the_module_in_float64(masked, class_marginal):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        params = phi_params64(3, class_marginal=class_marginal,
                              balanced_assignment=True)
        logits = jnp.asarray(4.0 * rng.normal(size=(3, 11, 5)))
        mask = jnp.asarray(np.arange(11)[None] < np.array([[11], [7], [4]])) if masked else None
        cotangent = jnp.asarray(rng.normal(size=(3, 11, 5)))
        if masked:
            cotangent = jnp.where(mask[..., None], cotangent, 0.0)

        out_manual, vjp_manual = jax.vjp(lambda p, z: phi.apply(p, z, mask), params, logits)
        out_auto, vjp_auto = jax.vjp(lambda p, z: phi.apply_autodiff(p, z, mask), params,
                                     logits)
        assert max_rel(out_auto, out_manual) < 1e-12
        grads_auto, grads_manual = vjp_auto(cotangent), vjp_manual(cotangent)
        assert float(jnp.abs(grads_auto[0]["dense1_assignment"]["kernel"]).max()) > 1e-6
        assert max_rel(grads_auto, grads_manual) < 1e-9


def test_meta_training_builds_and_moves_the_variant_and_export_refuses_it(tmp_path):
    """metatrain.phi_balanced_assignment=True trains phi with the assignment input, whose
    weights move; the reference ClassifierSIB has no such layer, so export names the flag."""
    last = meta_train_toy(str(tmp_path / "ba"), phi_balanced_assignment=True)
    assert phi.reads_balanced_assignment(last["grad_net"])
    start = sib.init(jax.random.PRNGKey(3), 5, 16, balanced_assignment=True)
    moved = (last["grad_net"]["dense1_assignment"]["kernel"]
             - start["grad_net"]["dense1_assignment"]["kernel"])
    assert float(jnp.abs(moved).max()) > 1e-6
    with pytest.raises(DataError, match="phi_balanced_assignment"):
        sib_to_torch(last)
