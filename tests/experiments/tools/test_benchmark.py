"""The benchmark suite: helpers, the K-step variants, the torch transcription, the CLI.

No timing assertions: only that the numbers exist, are positive and are well-formed.
"""

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.tools import benchmark
from experiments.tools.benchmark import cases, timing, torch_step, variants
from metaunlab import numerics, sib
from metaunlab.train import metatrain, optim


def _episodes(seed=0, batch=2, n_way=5, n_shot=1, n_query=3, dim=16):
    rng = np.random.default_rng(seed)
    ys = np.tile(np.repeat(np.arange(n_way), n_shot), (batch, 1)).astype(np.int32)
    yq = np.tile(np.repeat(np.arange(n_way), n_query), (batch, 1)).astype(np.int32)
    centres = rng.normal(size=(batch, n_way, dim))
    fs = np.take_along_axis(centres, ys[..., None], 1) + 0.5 * rng.normal(size=ys.shape + (dim,))
    fq = np.take_along_axis(centres, yq[..., None], 1) + 0.5 * rng.normal(size=yq.shape + (dim,))
    return fs.astype(np.float32), ys, fq.astype(np.float32), yq


@pytest.mark.parametrize("inner", ["scan", "autodiff"])
def test_k_step_variants_give_the_logits_of_sib_apply(inner, perturbed_sib_params):
    params = perturbed_sib_params(0, 5, 16)
    fs, ys, fq, _ = _episodes()

    @jax.jit  # one compilation for every K (eager dispatch is slow on this CPU)
    def both(params, fs, ys, fq):
        out = []
        for steps in (0, 1, 3):
            out.append((variants.FORMS["direct"](params, fs, ys, fq, steps=steps, lr=0.5),
                        variants.variant_apply(params, fs, ys, fq, steps=steps, lr=0.5,
                                                inner=inner)))
        return out

    for expected, got in both(params, fs, ys, fq):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def one_episode(perturbed_sib_params):
    """(params, episode arrays, SIB loss and meta-gradient with K = 3, lr = 0.5)."""
    params = perturbed_sib_params(0, 5, 16)
    episode = _episodes(batch=1, n_query=4)

    @jax.jit
    def loss_and_grads(p):
        return jax.value_and_grad(lambda q: sib.loss(q, *episode, steps=3, lr=0.5)[0])(p)

    return params, episode, loss_and_grads(params)


@pytest.mark.parametrize("inner", ["scan", "autodiff"])
def test_k_step_variants_give_the_loss_and_meta_gradient_of_sib(one_episode, inner):
    params, episode, (loss, grads) = one_episode

    @jax.jit
    def scanned(p):
        return jax.value_and_grad(
            lambda q: variants.variant_loss(q, *episode, steps=3, lr=0.5, inner=inner)[0])(p)

    loss_s, grads_s = scanned(params)
    np.testing.assert_allclose(float(loss_s), float(loss), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
                 grads_s, grads)


@functools.partial(jax.jit, static_argnums=0)  # one compilation for the three inner forms
def _sib_loss_and_grads(form, params, episodes):
    """`sib`'s loss of `form` (K = 3, lr = 0.5) on the episodes, and its gradient."""
    return jax.value_and_grad(
        lambda p: numerics.cross_entropy(variants.FORMS[form](p, *episodes[:3], steps=3,
                                                              lr=0.5), episodes[3]))(params)


@pytest.mark.parametrize("inner", ["unroll", "phi_autodiff", "vmap"])
@pytest.mark.parametrize("form", ["direct", "gram"])
def test_sib_step_variants_take_the_same_meta_training_step(inner, form, perturbed_sib_params):
    """One `make_sib_step` update on 3 episodes: every variant lands on the same parameters
    as `sib`'s loss of that form differentiated and stepped by hand."""
    params = perturbed_sib_params(0, 5, 16)
    episodes = _episodes(batch=3, n_query=4)
    optimizer = optax.sgd(0.1)
    state = {"step": jnp.int32(0), "params": params, "opt_state": optimizer.init(params)}
    step = variants.make_sib_step(optimizer, steps=3, lr=0.5, inner=inner, form=form,
                                   donate=False)
    new_state, loss = step(state, *episodes)
    want_loss, grads = _sib_loss_and_grads(form, params, episodes)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
    jax.tree.map(lambda got, p, g: np.testing.assert_allclose(got, p - 0.1 * g, rtol=1e-4,
                                                              atol=1e-5),
                 new_state["params"], params, grads)
    assert float(jnp.abs(grads["grad_net"]["dense2"]["kernel"]).max()) > 0


def test_memory_analysis_returns_positive_byte_counts():
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(0))
    compiled, seconds, stats = timing.compile_with_stats(
        f, jax.ShapeDtypeStruct((64, 32), jnp.float32))  # abstract: nothing runs
    assert seconds > 0
    assert stats["argument"] == 64 * 32 * 4 and stats["output"] == 64 * 4
    assert stats["peak"] > 0
    assert stats["peak"] == stats["argument"] + stats["output"] - stats["alias"] + stats["temp"]
    np.testing.assert_allclose(compiled(jnp.ones((64, 32))), np.full(64, 64.0), rtol=1e-6)


def test_sib_step_donation_shows_as_aliased_bytes():
    optimizer = optim.sgd_nesterov(1e-3)
    state = metatrain.init_state(sib.init(jax.random.PRNGKey(0), 5, 8), optimizer, 0)
    fs, ys, fq, yq = _episodes(dim=8)
    alias = {}
    for donate in (True, False):
        step = variants.make_sib_step(optimizer, steps=0, donate=donate)
        _, _, stats = timing.compile_with_stats(step, state, fs, ys, fq, yq)
        assert stats["peak"] > 0
        alias[donate] = stats["alias"]
    assert alias[True] > 0 and alias[False] == 0


def test_time_interleaved_counts_calls_and_returns_positive_times():
    counts = [0, 0]

    def make(i):
        def call():
            counts[i] += 1
            return jnp.ones(3) * counts[i]
        return call

    timings = timing.time_interleaved([make(0), make(1)], round_s=0.01, rounds=3,
                                         max_s=10.0)
    assert len(timings) == 2
    for measured, count in zip(timings, counts, strict=True):
        assert 0 < measured.best_s <= measured.median_s
        assert measured.calls >= 3 and count > measured.calls  # plus warm-up and estimation


def test_suites_cover_the_issue_cases():
    full, _ = cases.suite("full")
    grid = {(c.batch, c.k, c.shot) for c in full if c.name == "sib_step"
            and c.inner == "unroll" and c.donate and c.form == "direct"}
    assert {(b, k, s) for b in (1, 8, 32, 128) for k in (0, 3, 5) for s in (1, 5)} <= grid
    for mode in ("full", "quick"):
        suite, _ = cases.suite(mode)
        names = {c.name for c in suite}
        assert {"sib_step", "cached_step", "eval", "full_step", "memory_target"} <= names
        assert any(c.inner == "scan" for c in suite) and any(not c.donate for c in suite)
        assert any(c.inner == "autodiff" for c in suite)
        assert any(c.inner == "vmap" and c.form == "gram" for c in suite)
        assert any(c.name == "sib_step" and c.form == "gram" for c in suite)
        assert any(c.name == "cached_step" and c.per_call > 1 for c in suite)
        assert any(c.name == "memory_target" and c.backbone == "wrn28_10" and c.batch == 8
                   and c.k == 5 and c.dataset == "miniimagenet" for c in suite)
    full_steps = {(c.backbone, c.dataset) for c in full if c.name == "full_step"}
    assert full_steps == {("conv4", "miniimagenet"), ("wrn28_10", "miniimagenet"),
                          ("wrn28_10", "cifar_fs")}
    with pytest.raises(ValueError):
        cases.suite("nope")


def test_speedup_is_relative_to_the_quoted_reference():
    case = cases.Case("sib_step", 4, 3, 1)
    prepared = cases.Prepared(case, None, 4, 1.0, {"peak": 10}, "cpu")
    record = benchmark.make_record(prepared, timing.Timing(0.01, 0.008, 5))
    assert record["episodes_per_s"] == pytest.approx(400.0)
    assert record["speedup_vs_reference"] == pytest.approx(400.0 * cases.REFERENCE_SIB_STEP_S)
    other = benchmark.make_record(
        cases.Prepared(cases.Case("sib_step", 4, 5, 1), None, 4, 1.0, {}, "cpu"),
        timing.Timing(0.01, 0.01, 1))
    assert other["speedup_vs_reference"] is None  # no reference figure for K = 5


def test_torch_path_skips_cleanly_without_torch(monkeypatch, perturbed_sib_params):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    case = cases.Case("torch_sib_step", 1, 3, 1, inner="eager")
    assert torch_step.prepare_torch_sib_step(case, cases.suite("smoke")[1]) is None
    with pytest.raises(ImportError):
        torch_step.make_torch_sib_step(perturbed_sib_params(0, 5, 16), steps=1)


def test_torch_transcription_matches_the_jax_step(one_episode):
    torch = pytest.importorskip("torch")
    params, episode, (loss, grads) = one_episode
    step, tensors = torch_step.make_torch_sib_step(params, steps=3, lr=0.5)
    fs, ys, fq, yq = (torch.from_numpy(np.asarray(a[0])) for a in episode)
    torch_loss = step(fs, ys.long(), fq, yq.long())
    np.testing.assert_allclose(float(torch_loss), float(loss), rtol=1e-5)
    np.testing.assert_allclose(tensors["w"].grad.numpy(), grads["init"]["w"], rtol=1e-3,
                               atol=1e-5)
    np.testing.assert_allclose(tensors["phi"][0].weight.grad.numpy(),
                               np.asarray(grads["grad_net"]["dense1"]["kernel"]).T, rtol=1e-3,
                               atol=1e-5)


@pytest.mark.slow  # CI runs it: make test-e2e
def test_cli_smoke_writes_well_formed_json(tmp_path, run_script):
    out = tmp_path / "bench.json"
    result = run_script("experiments.benchmark", "--smoke", f"--json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "episodes/s" in result.stdout  # the table
    records = json.loads(out.read_text())
    smoke, _ = cases.suite("smoke")
    assert [r["name"] for r in records] == [c.name for c in smoke]
    for r in records:
        for key in ("name", "backbone", "batch", "k", "way", "shot", "episodes_per_s",
                    "peak_bytes", "compile_s"):
            assert key in r, (key, r)
        assert r["peak_bytes"] > 0 and r["compile_s"] > 0
        if r["name"] == "memory_target":
            assert r["episodes_per_s"] is None and r["fits_target"] is True
        else:
            assert r["episodes_per_s"] > 0 and r["best_episodes_per_s"] > 0
            assert r["step_ms"] > 0 and r["timed_calls"] > 0
    assert {(r["inner"], r["donate"], r["form"]) for r in records
            if r["name"] == "sib_step"} == {("unroll", True, "direct"), ("scan", False, "direct"),
                                             ("unroll", True, "gram"),
                                             ("autodiff", True, "direct"),
                                             ("vmap", True, "gram")}
    cached = next(r for r in records if r["name"] == "cached_step")
    # Two iterations of B = 2 episodes per call: 4 episodes per timed call.
    assert (cached["per_call"], cached["episodes_per_call"]) == (2, 4)
