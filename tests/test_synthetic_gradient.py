"""phi's hand-written VJP (`synthetic_gradient.apply`) against autodiff of its Flax module.

In float64, where the two differ only by rounding, for one episode and for leading episode
axes, with parameters away from their init values and ReLU units both on and off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import synthetic_gradient as phi


def _params64(perturbed_sib_params, seed, n_way=5):
    params = perturbed_sib_params(seed, n_way, 8)["grad_net"]
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)


def _max_rel(a, b):
    return max(float(jnp.abs(x - y).max() / (jnp.abs(x).max() + 1e-300))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


@pytest.mark.parametrize("lead,masked", [((), False), ((2, 3), True)])
def test_manual_vjp_equals_autodiff_of_the_module_in_float64(lead, masked,
                                                             perturbed_sib_params):
    """One episode, and a (2, 3) grid of padded episodes (4 to 15 real queries) whose
    BatchNorm statistics are their real queries'."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(len(lead))
        params = _params64(perturbed_sib_params, len(lead))
        logits = jnp.asarray(4.0 * rng.normal(size=lead + (15, 5)))
        cotangent = jnp.asarray(rng.normal(size=lead + (15, 5)))
        mask = None
        if masked:
            real = np.array([[4, 15, 9], [12, 6, 15]])
            mask = jnp.asarray(np.arange(15) < real[..., None])
        hidden = logits @ params["dense1"]["kernel"] + params["dense1"]["bias"]
        assert 0.1 < float((hidden > 0).mean()) < 0.9  # both sides of every ReLU are used

        def value_and_vjp(apply):
            """apply's output and VJP, compiled whole (faster than op by op)."""
            def run(p, z, c):
                out, vjp = jax.vjp(lambda p, z: apply(p, z, mask), p, z)
                return out, vjp(c)
            return jax.jit(run)

        out_manual, grads_manual = value_and_vjp(phi.apply)(params, logits, cotangent)
        out_auto, grads_auto = value_and_vjp(phi.apply_autodiff)(params, logits, cotangent)
        assert _max_rel(out_auto, out_manual) < 1e-13
        for leaf in jax.tree_util.tree_leaves(grads_auto):
            assert float(jnp.abs(leaf).max()) > 1e-6  # every gradient is really exercised
        assert _max_rel(grads_auto, grads_manual) < 1e-12
        if masked:  # the real rows of an episode: as that episode alone, unpadded
            np.testing.assert_allclose(out_manual[0, 0, :4], phi.apply(params, logits[0, 0, :4]),
                                       atol=1e-12)


def test_each_episode_is_normalised_with_its_own_queries(perturbed_sib_params):
    """Leading axes are episodes: the batched output is the per-episode output, stacked."""
    params32 = perturbed_sib_params(7, 5, 8)["grad_net"]
    rng = np.random.default_rng(7)
    logits = jnp.asarray(rng.normal(size=(4, 10, 5)), jnp.float32)
    batched = phi.apply(params32, logits)
    for b in range(4):
        np.testing.assert_allclose(np.asarray(batched[b]),
                                   np.asarray(phi.apply(params32, logits[b])),
                                   rtol=1e-5, atol=1e-6)
    # And one episode's output depends on its own companions only.
    changed = logits.at[1].multiply(3.0)
    np.testing.assert_array_equal(np.asarray(phi.apply(params32, changed)[0]),
                                  np.asarray(batched[0]))


def test_synthetic_gradient_batchnorm_uses_the_query_statistics(perturbed_sib_params):
    """Transduction: phi's output for one query depends on the other queries, at any time."""
    params = perturbed_sib_params(5, 5, 16)
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.normal(size=(10, 5)), jnp.float32)
    full = phi.apply(params["grad_net"], logits)
    # Same first five queries, different companions: their synthetic gradients change.
    other = logits.at[5:].set(logits[5:] * 3 + 1)
    changed = phi.apply(params["grad_net"], other)
    assert float(jnp.abs(changed[:5] - full[:5]).max()) > 1e-3
    # And the first hidden layer is normalised with exactly this batch's mean and variance.
    hidden = np.maximum(np.asarray(logits) @ np.asarray(params["grad_net"]["dense1"]["kernel"])
                        + np.asarray(params["grad_net"]["dense1"]["bias"]), 0)
    unit = {"params": {"scale": jnp.ones(40), "bias": jnp.zeros(40)}}
    out = phi.QueryBatchNorm().apply(unit, jnp.asarray(hidden))
    np.testing.assert_allclose(np.asarray(out), (hidden - hidden.mean(0))
                               / np.sqrt(hidden.var(0) + 1e-5), rtol=1e-4, atol=1e-4)
