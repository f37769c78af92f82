"""The balanced readout (`sib.init(..., balanced_readout=True)`, `sib.balanced_readout`): the
assignment it computes, K = 0 left inductive, the reference without it, both step forms,
padded query sets, its meta-gradient against finite differences, the method wrapper, and
meta-training it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import numerics, sib, sib_method
from metaunlab import synthetic_gradient as phi
from metaunlab.data.errors import DataError
from metaunlab.interop.convert import sib_to_torch
from tests._phi_variants import episode64, sib_params64
from tests._toy_meta_training import meta_train_toy


def _with_readout(params, log_temperature=0.3):
    params = dict(params)
    params["readout"] = {"log_temperature": jnp.asarray(log_temperature,
                                                        params["init"]["w"].dtype)}
    return params


def _batch(*episodes):
    return tuple(jnp.stack(parts) for parts in zip(*episodes, strict=True))


def test_the_readout_is_the_balanced_assignment_of_the_heads_logits():
    """At K > 0 the logits are the log of the Sinkhorn plan of the reference logits at the
    learned temperature: each query's probabilities sum to 1, each class takes close to an
    equal share of the queries, and the argmax is that of the plan, not of the logits."""
    with jax.enable_x64(True):
        fs, ys, fq, _ = episode64(0, n_query=3)
        base = sib_params64(0)
        params = _with_readout(base, 0.3)
        got = sib.apply(params, fs, ys, fq, steps=3, lr=0.3)
        reference = sib.apply(base, fs, ys, fq, steps=3, lr=0.3)
        want = phi.balanced_assignment(np.exp(0.3) * reference,
                                       iterations=sib.READOUT_ITERATIONS)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
        plan = np.exp(np.asarray(got))
        np.testing.assert_allclose(plan.sum(axis=1), 1.0, atol=1e-12)
        # 15 queries, 5 classes: 3 queries' worth per class, as far as 10 iterations get,
        # and closer to it than the queries' own softmax.
        np.testing.assert_allclose(plan.sum(axis=0), 3.0, atol=0.25)
        softmax_share = np.asarray(jax.nn.softmax(reference, axis=-1)).sum(axis=0)
        assert np.abs(softmax_share - 3.0).max() > np.abs(plan.sum(axis=0) - 3.0).max()


def test_k0_stays_inductive_and_the_reference_has_no_readout():
    fs, ys, fq, _ = episode64(1)
    fs, fq = fs.astype(jnp.float32), fq.astype(jnp.float32)
    base = sib.init(jax.random.PRNGKey(1), 5, 8)
    assert "readout" not in base
    params = sib.init(jax.random.PRNGKey(1), 5, 8, balanced_readout=True)
    assert float(params["readout"]["log_temperature"]) == 0.0
    np.testing.assert_array_equal(np.asarray(sib.apply(params, fs, ys, fq, steps=0)),
                                  np.asarray(sib.apply(base, fs, ys, fq, steps=0)))
    forced = sib.apply(params, fs, ys, fq, steps=0, readout=True)
    assert float(jnp.abs(forced - sib.apply(base, fs, ys, fq, steps=0)).max()) > 1e-3
    unread = sib.apply(params, fs, ys, fq, steps=3, readout=False)
    np.testing.assert_array_equal(np.asarray(unread),
                                  np.asarray(sib.apply(base, fs, ys, fq, steps=3)))
    with pytest.raises(ValueError, match="readout"):
        sib.apply(base, fs, ys, fq, steps=3, readout=True)


def test_both_step_forms_and_padded_query_sets_agree_with_the_readout():
    """A batch of two takes the Gram form, one episode the direct form; the padded episode's
    real queries get the plan of the unpadded one (padded rows take no share)."""
    with jax.enable_x64(True):
        params = _with_readout(sib_params64(2), -0.2)
        fs, ys, fq, _ = _batch(episode64(2, n_query=4), episode64(3, n_query=4))
        mask = np.ones((2, 20), bool)
        mask[1] = np.tile([True, True, False, False], 5)
        batched = sib.apply(params, fs, ys, fq, steps=3, lr=0.3, query_mask=jnp.asarray(mask))
        first = sib.apply(params, fs[0], ys[0], fq[0], steps=3, lr=0.3)
        second = sib.apply(params, fs[1], ys[1], fq[1][mask[1]], steps=3, lr=0.3)
        np.testing.assert_allclose(np.asarray(batched[0]), np.asarray(first), rtol=1e-10,
                                   atol=1e-10)
        np.testing.assert_allclose(np.asarray(batched[1][mask[1]]), np.asarray(second),
                                   rtol=1e-10, atol=1e-10)


def test_the_meta_gradient_through_the_readout_matches_finite_differences():
    with jax.enable_x64(True):
        fs, ys, fq, yq = episode64(4, n_query=3)
        params = _with_readout(sib_params64(4), 0.4)

        def loss(p):
            return numerics.cross_entropy(sib.apply(p, fs, ys, fq, steps=3, lr=0.3), yq)

        grads = jax.grad(loss)(params)
        eps = 1e-6
        for path, get, put in (
                ("temperature", lambda p: p["readout"]["log_temperature"],
                 lambda p, v: {**p, "readout": {"log_temperature": v}}),
                ("classifier scale", lambda p: p["classifier"]["scale"],
                 lambda p, v: {**p, "classifier": {**p["classifier"], "scale": v}})):
            value = get(params)
            numeric = (float(loss(put(params, value + eps)))
                       - float(loss(put(params, value - eps)))) / (2 * eps)
            assert abs(numeric) > 1e-6, path
            assert float(get(grads)) == pytest.approx(numeric, rel=1e-5, abs=1e-9), path


def test_the_method_reads_out_at_k_above_0_only():
    params = sib.init(jax.random.PRNGKey(5), 5, 8, balanced_readout=True)
    assert not sib_method(params, 0).is_transductive
    assert sib_method(params, 0, readout=True).is_transductive
    assert sib_method(params, 3).is_transductive
    fs, ys, fq, _ = episode64(5)
    fs, fq = fs.astype(jnp.float32), fq.astype(jnp.float32)
    probs = sib_method(params, 3, lr=0.3)(fs, ys, fq, 5)
    want = jnp.exp(sib.apply(params, fs, ys, fq, steps=3, lr=0.3))
    np.testing.assert_allclose(np.asarray(probs), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_meta_training_learns_the_temperature(tmp_path):
    last = meta_train_toy(str(tmp_path / "run"), balanced_readout=True)
    assert abs(float(last["readout"]["log_temperature"])) > 1e-6
    with pytest.raises(DataError, match="balanced_readout"):
        sib_to_torch(last)


def test_compare_shows_k0_read_out_beside_k0_for_a_head_with_the_readout():
    from experiments.tools.compare import sib_methods

    plain = sib.init(jax.random.PRNGKey(6), 5, 8)
    assert [m.name for m in sib_methods(plain, 1e-3, (0, 3))] == ["sib_k0", "sib_k3"]
    read_out = sib.init(jax.random.PRNGKey(6), 5, 8, balanced_readout=True)
    methods = sib_methods(read_out, 1e-3, (0, 3))
    assert [m.name for m in methods] == ["sib_k0", "sib_k0_readout", "sib_k3"]
    assert [m.is_transductive for m in methods] == [False, True, True]


def test_a_readout_heads_matched_k0_keeps_the_readout():
    """evaluate_sib's K = 0 control of a head with the readout is K = 0 read out the same way
    (transductive, so marked), and SIB's paired difference is taken from it."""
    from metaunlab import evaluation
    from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
    from metaunlab.methods.sib_head import sib_method
    from tests._toy_meta_training import toy_features

    feats, labels = toy_features()
    params = sib.init(jax.random.PRNGKey(6), 5, feats.shape[1], balanced_readout=True)
    params["readout"]["log_temperature"] = jnp.asarray(1.5, jnp.float32)
    eps = EpisodeSampler(labels, EpisodeShape(5, 1, 3), seed=2).sample(0, 20)
    methods = evaluation.evaluate_sib(params, feats, eps, steps=3, lr=0.05)
    read_out = evaluation.evaluate(sib_method(params, 0, 0.05, readout=True), feats, eps)
    plain = evaluation.evaluate(sib_method(params, 0, 0.05, readout=False), feats, eps)
    assert methods["k0"]["accuracy"] == pytest.approx(read_out.accuracy)
    assert not np.array_equal(read_out.accuracies, plain.accuracies)
    assert methods["k0"]["transductive"] is True
