"""The Gram form of the K synthetic steps (`sib.apply_gram`) is the direct form, exactly.

Checked in float64, where the only difference between the two is rounding, on the
published episode shape (5-way, 75 queries, 640-d features), for logits and the whole
meta-gradient, including the gradient-matching loss and remat.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import numerics, sib
from tests._support import perturbed_sib_params

FORMS = {"direct": sib.apply_direct, "gram": sib.apply_gram}


def _episode64(seed, n_shot=1, n_query=15, dim=640):
    rng = np.random.default_rng(seed)
    ys = np.repeat(np.arange(5), n_shot).astype(np.int32)
    yq = np.repeat(np.arange(5), n_query).astype(np.int32)
    centres = rng.normal(size=(5, dim))
    # Non-negative like post-ReLU backbone features.
    fs = np.abs(centres[ys] + rng.normal(size=(len(ys), dim)))
    fq = np.abs(centres[yq] + rng.normal(size=(len(yq), dim)))
    return fs, ys, fq, yq


def _params64(seed, dim=640):
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
def test_gram_form_equals_direct_form_in_float64(steps, lr, n_shot, grad_coeff, remat):
    with jax.enable_x64(True):
        fs, ys, fq, yq = _episode64(steps, n_shot)
        params = _params64(steps)

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


def test_gram_form_float32_matches_within_float32_rounding():
    fs, ys, fq, _ = (np.asarray(a, np.float32) if a.dtype == np.float64 else a
                     for a in _episode64(3))
    params = perturbed_sib_params(3, 5, 640)
    direct = sib.apply_direct(params, fs, ys, fq, steps=3, lr=1e-3)
    gram = sib.apply_gram(params, fs, ys, fq, steps=3, lr=1e-3)
    np.testing.assert_allclose(np.asarray(gram), np.asarray(direct), rtol=1e-5, atol=1e-5)
