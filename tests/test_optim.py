"""The outer optimizer and its schedule: the torch update rule, by hand and against torch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaunlab.train import optim


def test_sgd_nesterov_matches_the_torch_update_rule():
    """torch.optim.SGD(nesterov=True, weight_decay): g += wd*p; b = m*b + g; p -= lr*(g + m*b)."""
    lr, momentum, wd = 0.1, 0.9, 5e-4
    opt = optim.sgd_nesterov(lr, momentum=momentum, weight_decay=wd)
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=5), jnp.float32)}
    state = opt.init(params)
    p, buf = np.asarray(params["a"], np.float64), np.zeros(5)
    for _ in range(4):
        g = rng.normal(size=5)
        updates, state = opt.update({"a": jnp.asarray(g, jnp.float32)}, state, params)
        params = {"a": params["a"] + updates["a"]}
        g = g + wd * p
        buf = momentum * buf + g
        p = p - lr * (g + momentum * buf)
    np.testing.assert_allclose(np.asarray(params["a"]), p, rtol=1e-6, atol=1e-7)


def test_warmup_then_step_schedule():
    schedule = optim.warmup_then_step(0.1, 10, {30: 0.1})
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.05)
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(29)) == pytest.approx(0.1)
    assert float(schedule(30)) == pytest.approx(0.01)


def test_sgd_nesterov_step_matches_torch(torch):
    lr, momentum, wd = 0.05, 0.9, 5e-4
    rng = np.random.default_rng(3)
    params = {"a": rng.normal(size=(4, 3)).astype(np.float32),
              "b": rng.normal(size=(3,)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
             for _ in range(2)]

    tensors = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    opt = torch.optim.SGD(list(tensors.values()), lr=lr, momentum=momentum, weight_decay=wd,
                          nesterov=True)
    tx = optim.sgd_nesterov(lr, momentum=momentum, weight_decay=wd)
    jparams = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(jparams)
    for step, g in enumerate(grads):  # the first step fills the momentum buffer
        for k, t in tensors.items():
            t.grad = torch.from_numpy(g[k])
        opt.step()
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, jparams)
        jparams = optax.apply_updates(jparams, updates)
        trace = optax.tree_utils.tree_get(state, "trace")
        for k, t in tensors.items():
            buf = opt.state[t]["momentum_buffer"].numpy()
            assert np.abs(buf).max() > 0.1  # a non-trivial momentum buffer
            err_p = np.max(np.abs(np.asarray(jparams[k]) - t.detach().numpy()))
            err_b = np.max(np.abs(np.asarray(trace[k]) - buf))
            print(f"parity sgd_nesterov step {step} {k}: max abs error params {err_p:.1e}, "
                  f"momentum {err_b:.1e}")
            assert err_p <= 1e-6 and err_b <= 1e-6
