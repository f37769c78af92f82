"""Tests of the SIB head: against an independent numpy transcription of the reference maths,
the Gram form of the K synthetic steps against the direct form, and remat.

The Gram form of `sib.apply` (`metaunlab._unrolled`) is the direct form, exactly: checked
in float64, where the only difference between the two is rounding, on the published
episode shape (5-way, 75 queries, 640-d features), for logits and the whole meta-gradient,
including the gradient-matching loss and remat.
"""

import contextlib
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import _unrolled, numerics, sib, synthetic_gradient
from tests._finite_differences import assert_gradient_matches_finite_differences

# `sib.apply` in each form, whatever the number of episodes.
FORMS = {form: functools.partial(sib._apply_form, form=form) for form in ("direct", "gram")}


@contextlib.contextmanager
def _phi_by_autodiff():
    """`sib` traced in this block differentiates phi's Flax module by autodiff (the oracle
    for the hand-written VJP)."""
    manual = synthetic_gradient.apply
    synthetic_gradient.apply = synthetic_gradient.apply_autodiff
    try:
        yield
    finally:
        synthetic_gradient.apply = manual


def _form_loss(p, fs, ys, fq, yq, *, form, steps, lr, grad_coeff=0.0, remat=False):
    """`sib.loss` with the form fixed."""
    logits = FORMS[form](p, fs, ys, fq, steps=steps, lr=lr, remat=remat)
    loss = numerics.cross_entropy(logits, yq)
    if grad_coeff:
        loss = loss + grad_coeff * sib.grad_matching_loss(p, logits, yq)
    return loss, logits


def _episode(rng, n_way=5, n_shot=1, n_query=4, dim=16, dtype=np.float32):
    support_labels = np.repeat(np.arange(n_way), n_shot)
    query_labels = np.repeat(np.arange(n_way), n_query)
    centres = rng.normal(size=(n_way, dim))
    support = centres[support_labels] + 0.5 * rng.normal(size=(len(support_labels), dim))
    query = centres[query_labels] + 0.5 * rng.normal(size=(len(query_labels), dim))
    return (support.astype(dtype), support_labels.astype(np.int32), query.astype(dtype),
            query_labels.astype(np.int32))


# ---- an independent numpy transcription: analytic VJP of the cosine classifier ------------


def _np_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _np_phi(p, z):
    def bn(x, q):
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        return (x - mean) / np.sqrt(var + 1e-5) * q["scale"] + q["bias"]

    h = bn(np.maximum(z @ p["dense1"]["kernel"] + p["dense1"]["bias"], 0), p["bn1"])
    h = bn(np.maximum(h @ p["dense2"]["kernel"] + p["dense2"]["bias"], 0), p["bn2"])
    return h @ p["dense3"]["kernel"] + p["dense3"]["bias"]


def _np_sib(params, fs, ys, fq, steps, lr):
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    n_way = p["grad_net"]["dense1"]["kernel"].shape[0]
    scale, bias = p["classifier"]["scale"], p["classifier"]["bias"]
    fs_hat, fq_hat = _np_normalize(fs), _np_normalize(fq)
    theta = np.stack([fs_hat[ys == c].mean(0) for c in range(n_way)]) * p["init"]["w"]
    for _ in range(steps):
        norms = np.linalg.norm(theta, axis=1, keepdims=True)
        theta_hat = theta / norms
        z = scale * (fq_hat @ theta_hat.T + bias)
        g = _np_phi(p["grad_net"], z)  # (Nq, N)
        # z[q, c] = s * <fq_hat[q], theta_c / |theta_c|>, so
        # dL/dtheta_c = s / |theta_c| * (I - theta_hat_c theta_hat_c^T) sum_q g[q, c] fq_hat[q]
        v = g.T @ fq_hat  # (N, D)
        v = v - (v * theta_hat).sum(1, keepdims=True) * theta_hat
        theta = theta - lr * scale * v / norms
    return scale * (fq_hat @ _np_normalize(theta).T + bias)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("steps", [0, 1, 3, 5])
@pytest.mark.parametrize("n_shot", [1, 5])
def test_apply_matches_numpy_transcription(steps, n_shot, form, perturbed_sib_params):
    rng = np.random.default_rng(steps * 10 + n_shot)
    fs, ys, fq, _ = _episode(rng, n_shot=n_shot, n_query=6)
    params = perturbed_sib_params(1, 5, fs.shape[1])
    # A large step size makes the synthetic steps move theta visibly, so the check has teeth.
    got = FORMS[form](params, fs, ys, fq, steps=steps, lr=0.5)
    want = _np_sib(params, fs, ys, fq.astype(np.float64), steps, 0.5)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def test_steps_change_the_logits(perturbed_sib_params):
    fs, ys, fq, _ = _episode(np.random.default_rng(0))
    params = perturbed_sib_params(0, 5, fs.shape[1])
    k0 = sib.apply(params, fs, ys, fq, steps=0, lr=0.5)
    k3 = sib.apply(params, fs, ys, fq, steps=3, lr=0.5)
    assert float(jnp.abs(k0 - k3).max()) > 1e-3


def test_init_matches_reference_defaults():
    params = sib.init(jax.random.PRNGKey(0), n_way=5, feat_dim=32)
    chex.assert_trees_all_equal(params["init"]["w"], jnp.ones(32))
    assert float(params["classifier"]["scale"]) == 10.0
    assert float(params["classifier"]["bias"]) == 0.0
    shapes = jax.tree_util.tree_map(jnp.shape, params["grad_net"])
    assert shapes["dense1"] == {"kernel": (5, 40), "bias": (40,)}
    assert shapes["dense2"] == {"kernel": (40, 40), "bias": (40,)}
    assert shapes["dense3"] == {"kernel": (40, 5), "bias": (5,)}
    # torch nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    kernel = np.asarray(params["grad_net"]["dense2"]["kernel"])
    assert np.abs(kernel).max() <= 1 / np.sqrt(40)
    assert np.abs(kernel).max() > 0.9 / np.sqrt(40)
    assert sib.n_way_of(params) == 5


def test_meta_gradient_matches_finite_differences(perturbed_sib_params):
    """The meta-gradient through K = 3 unrolled second-order steps of the direct form, in
    float64. The Gram form's equals it (test_gram_form_equals_direct_form_in_float64), and
    tests/test_head.py checks it against finite differences too, for every composition."""
    steps, form = 3, "direct"
    with jax.enable_x64(True):
        rng = np.random.default_rng(steps)
        fs, ys, fq, yq = _episode(rng, n_query=3, dim=8, dtype=np.float64)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        perturbed_sib_params(2, 5, 8))

        def loss(p):
            # grad_coeff stays 0: the matching loss holds its target fixed (stop_gradient, as
            # the reference detaches it), which finite differences cannot hold fixed.
            return _form_loss(p, fs, ys, fq, yq, steps=steps, lr=0.3, form=form)[0]

        assert_gradient_matches_finite_differences(loss, params, rng)


def _autodiff_step(params, theta, query_feats, lr):
    """The synthetic step as the reference takes it: the VJP by automatic differentiation."""
    logits, vjp = jax.vjp(
        lambda t: numerics.cosine_logits(params["classifier"], t, query_feats), theta)
    (grad_theta,) = vjp(synthetic_gradient.apply_autodiff(params["grad_net"], logits))
    return theta - lr * grad_theta


@pytest.mark.parametrize("steps,lr", [(3, 1e-3), (5, 0.5)])
def test_closed_form_step_equals_the_autodiff_vjp_in_float64(steps, lr, perturbed_sib_params):
    """`_unrolled.synthetic_step` writes the VJP out; autodiff must agree, meta-gradient
    included."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(steps)
        fs, ys, fq, yq = _episode(rng, n_query=15, dim=64, dtype=np.float64)
        fq = np.abs(fq)  # non-negative like post-ReLU features
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        perturbed_sib_params(steps, 5, 64))

        def loss(p, step):
            theta = sib.init_theta(p["init"], fs, ys, 5)
            for _ in range(steps):
                theta = step(p, theta)
            logits = numerics.cosine_logits(p["classifier"], theta, fq)
            return numerics.cross_entropy(logits, yq), theta

        def closed(p, t):
            return _unrolled.synthetic_step(p, t, numerics.l2_normalize(fq), lr=lr)

        def autodiff(p, t):
            return _autodiff_step(p, t, fq, lr)

        (closed_loss, closed_theta), closed_grads = jax.value_and_grad(
            lambda p: loss(p, closed), has_aux=True)(params)
        (auto_loss, auto_theta), auto_grads = jax.value_and_grad(
            lambda p: loss(p, autodiff), has_aux=True)(params)
        theta0 = sib.init_theta(params["init"], fs, ys, 5)
        assert float(jnp.abs(auto_theta - theta0).max()) > 1e-6 * float(jnp.abs(theta0).max())
        np.testing.assert_allclose(closed_theta, auto_theta, rtol=1e-12, atol=1e-15)
        assert float(closed_loss) == pytest.approx(float(auto_loss), rel=1e-12)
        for got, want in zip(jax.tree_util.tree_leaves(closed_grads),
                             jax.tree_util.tree_leaves(auto_grads), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * float(
                jnp.abs(want).max()))


def test_meta_gradient_reaches_the_synthetic_gradient_network():
    fs, ys, fq, yq = _episode(np.random.default_rng(3))
    params = sib.init(jax.random.PRNGKey(0), 5, fs.shape[1])

    def meta_gradient(steps):
        return jax.jit(jax.grad(lambda p: sib.loss(p, fs, ys, fq, yq, steps=steps,
                                                   lr=1e-3)[0]))(params)

    grads = meta_gradient(3)
    assert float(jnp.abs(grads["grad_net"]["dense1"]["kernel"]).max()) > 0
    grads0 = meta_gradient(0)
    # With K = 0 phi is never used, so it must get exactly zero gradient.
    assert float(jnp.abs(grads0["grad_net"]["dense1"]["kernel"]).max()) == 0


# Both forms, each with and without the grad-matching term and remat, on 1 and 3 episodes.
@pytest.mark.parametrize("form,grad_coeff,remat,n_episodes", [
    ("direct", 0.0, False, 3), ("direct", 1.0, True, 1), ("gram", 1.0, False, 3),
    ("gram", 0.0, True, 1)])
def test_leading_episode_axis_equals_vmap_and_phis_vjp_equals_autodiff_in_float64(
        form, grad_coeff, remat, n_episodes, perturbed_sib_params):
    """Both forms take the episode axis as a leading axis of every array, not by vmap (one
    episode without it); loss, logits and meta-gradient must be vmap's, and phi's
    hand-written VJP must give autodiff's meta-gradient."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        episodes = [_episode(rng, n_query=6, dim=32, dtype=np.float64)
                    for _ in range(n_episodes)]
        fs, ys, fq, yq = (np.stack(parts) for parts in zip(*episodes, strict=True))
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        perturbed_sib_params(8, 5, 32))
        kwargs = dict(steps=3, lr=0.5, grad_coeff=grad_coeff, remat=remat, form=form)

        def batched(p):
            return _form_loss(p, fs, ys, fq, yq, **kwargs)

        def vmapped(p):
            with _phi_by_autodiff():
                losses, logits = jax.vmap(lambda *e: _form_loss(p, *e, **kwargs))(fs, ys, fq, yq)
            return losses.mean(), logits

        def batched_autodiff(p):
            with _phi_by_autodiff():
                return batched(p)

        # Compiled whole, as training runs it (faster than op by op).
        (loss, logits), grads = jax.jit(jax.value_and_grad(batched, has_aux=True))(params)
        (want_loss, want_logits), want_grads = jax.jit(
            jax.value_and_grad(vmapped, has_aux=True))(params)
        (auto_loss, _), auto_grads = jax.jit(
            jax.value_and_grad(batched_autodiff, has_aux=True))(params)
        assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
        assert float(auto_loss) == pytest.approx(float(want_loss), rel=1e-12)
        assert logits.shape == want_logits.shape == (n_episodes, 30, 5)
        np.testing.assert_allclose(logits, want_logits, rtol=1e-12, atol=1e-12)
        for got, auto, want in zip(jax.tree_util.tree_leaves(grads),
                                   jax.tree_util.tree_leaves(auto_grads),
                                   jax.tree_util.tree_leaves(want_grads), strict=True):
            assert float(jnp.abs(want).max()) > 0
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * float(
                jnp.abs(want).max()))
            np.testing.assert_allclose(auto, want, rtol=1e-9, atol=1e-12 * float(
                jnp.abs(want).max()))


@pytest.mark.parametrize("lead,steps,want", [
    ((), 3, "direct"), ((1,), 3, "direct"), ((4,), 3, "gram"), ((2, 3), 3, "gram"),
    ((4,), 0, "direct")])
def test_apply_and_loss_take_the_gram_form_for_batches_of_episodes(lead, steps, want,
                                                                   perturbed_sib_params):
    """`sib.apply` is the Gram form for two or more episodes and K > 0, else the direct form,
    bit for bit, and `sib.loss` is the cross-entropy of its logits."""
    rng = np.random.default_rng(9)
    count = int(np.prod(lead, dtype=int))
    episodes = [_episode(rng) for _ in range(count)]
    fs, ys, fq, yq = (np.stack(parts).reshape(lead + parts[0].shape)
                      for parts in zip(*episodes, strict=True))
    params = perturbed_sib_params(9, 5, fs.shape[-1])
    got = sib.apply(params, fs, ys, fq, steps=steps, lr=0.5)
    chosen = FORMS[want](params, fs, ys, fq, steps=steps, lr=0.5)
    assert got.shape == lead + (20, 5)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(chosen))
    loss, logits = sib.loss(params, fs, ys, fq, yq, steps=steps, lr=0.5)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(got))
    assert float(loss) == float(numerics.cross_entropy(got, yq))


def test_grad_matching_loss_target_is_the_true_logit_gradient(perturbed_sib_params):
    params = perturbed_sib_params(6, 5, 16)
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(10, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=10)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    true_grad = (probs - np.eye(5)[labels]) / 10
    phi = np.asarray(synthetic_gradient.apply(params["grad_net"], jnp.asarray(logits)))
    want = np.mean((phi - true_grad) ** 2)
    got = sib.grad_matching_loss(params, jnp.asarray(logits), jnp.asarray(labels))
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_apply_on_a_batch_compiles_once_per_shape():
    episodes = [_episode(np.random.default_rng(i)) for i in range(2)]
    fs, ys, fq, _ = (np.stack(p) for p in zip(*episodes, strict=True))
    params = sib.init(jax.random.PRNGKey(0), 5, fs.shape[-1])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(p, a, b, c):
        return sib.apply(p, a, b, c, steps=3, lr=1e-3)

    for _ in range(3):
        run(params, fs, ys, fq + np.float32(0.1))


# ---- the Gram form equals the direct form ---------------------------------------------------


def _episode64(seed, n_shot=1, n_query=15, dim=640):
    rng = np.random.default_rng(seed)
    ys = np.repeat(np.arange(5), n_shot).astype(np.int32)
    yq = np.repeat(np.arange(5), n_query).astype(np.int32)
    centres = rng.normal(size=(5, dim))
    # Non-negative like post-ReLU backbone features.
    fs = np.abs(centres[ys] + rng.normal(size=(len(ys), dim)))
    fq = np.abs(centres[yq] + rng.normal(size=(len(yq), dim)))
    return fs, ys, fq, yq


def _params64(perturbed_sib_params, seed, dim=640):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                  perturbed_sib_params(seed, 5, dim))


def _max_rel(a, b):
    return max(float(jnp.abs(x - y).max() / (jnp.abs(x).max() + 1e-300))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


@pytest.mark.parametrize("steps,lr,n_shot,grad_coeff,remat", [
    (3, 1e-3, 1, 0.0, False),  # the published configuration
    (5, 0.5, 5, 0.0, False),   # big steps: theta moves far from theta0
    (3, 0.5, 1, 1.0, True),    # gradient-matching loss and remat
    (1, 1e-3, 1, 0.0, False),
])
def test_gram_form_equals_direct_form_in_float64(steps, lr, n_shot, grad_coeff, remat,
                                                 perturbed_sib_params):
    with jax.enable_x64(True):
        fs, ys, fq, yq = _episode64(steps, n_shot)
        params = _params64(perturbed_sib_params, steps)

        def loss(p, form):
            logits = FORMS[form](p, fs, ys, fq, steps=steps, lr=lr, remat=remat)
            value = numerics.cross_entropy(logits, yq)
            return value + grad_coeff * sib.grad_matching_loss(p, logits, yq), logits

        (direct_loss, direct_logits), direct_grads = jax.value_and_grad(
            functools.partial(loss, form="direct"), has_aux=True)(params)
        (gram_loss, gram_logits), gram_grads = jax.value_and_grad(
            functools.partial(loss, form="gram"), has_aux=True)(params)
        # The steps really moved theta (else both forms would trivially agree on K = 0).
        k0 = sib.apply(params, fs, ys, fq, steps=0, lr=lr)
        assert float(jnp.abs(direct_logits - k0).max()) > 1e-6
        assert _max_rel(direct_logits, gram_logits) < 1e-12
        assert float(gram_loss) == pytest.approx(float(direct_loss), rel=1e-12)
        assert _max_rel(direct_grads, gram_grads) < 1e-9


def test_gram_form_float32_matches_within_float32_rounding(perturbed_sib_params):
    fs, ys, fq, _ = (np.asarray(a, np.float32) if a.dtype == np.float64 else a
                     for a in _episode64(3))
    params = perturbed_sib_params(3, 5, 640)
    direct = FORMS["direct"](params, fs, ys, fq, steps=3, lr=1e-3)
    gram = FORMS["gram"](params, fs, ys, fq, steps=3, lr=1e-3)
    np.testing.assert_allclose(np.asarray(gram), np.asarray(direct), rtol=1e-5, atol=1e-5)


# ---- memory: remat changes memory, not maths ----------------------------------------------


def test_sib_remat_gives_the_same_loss_and_meta_gradient(perturbed_sib_params):
    rng = np.random.default_rng(0)
    fs = jnp.asarray(rng.normal(size=(2, 5, 12)), jnp.float32)
    fq = jnp.asarray(rng.normal(size=(2, 15, 12)), jnp.float32)
    ys = jnp.tile(jnp.arange(5), (2, 1))
    yq = jnp.tile(jnp.repeat(jnp.arange(5), 3), (2, 1))
    params = perturbed_sib_params(0, 5, 12)

    def loss_and_grad(remat):
        def loss(p):
            return sib.loss(p, fs, ys, fq, yq, steps=4, lr=0.5, grad_coeff=0.1,
                            remat=remat)[0]

        return jax.jit(jax.value_and_grad(loss))(params)

    plain, rematted = loss_and_grad(False), loss_and_grad(True)
    # The same maths; XLA fuses the recomputation differently, so the last bits may differ.
    chex.assert_trees_all_close(plain, rematted, rtol=1e-4, atol=1e-6)
    # lr=0.5 makes the K steps matter, so a remat that skipped them would show.
    assert float(plain[0]) != pytest.approx(float(sib.loss(
        params, fs, ys, fq, yq, steps=0, lr=0.5)[0]), rel=1e-3)
