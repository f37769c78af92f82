"""A trained SIB head as a Method (metaunlab.methods.sib_head)."""

import jax
import numpy as np
import pytest

from metaunlab import sib
from metaunlab.methods import sib_method
from metaunlab.methods.base import Method


def test_sib_method_wraps_a_head_and_checks_n_way(separated, sib_params):
    support, ys, query, _ = separated
    params = sib_params
    k0, k3 = sib_method(params, 0), sib_method(params, 3, lr=1e-3)
    assert isinstance(k3, Method) and (k0.name, k3.name) == ("sib_k0", "sib_k3")
    assert not k0.is_transductive and k3.is_transductive
    probs = np.asarray(k3.batched(5)(support, ys, query))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    want = jax.nn.softmax(jax.jit(sib.apply, static_argnames="steps")(
        params, support, ys, query, steps=3, lr=1e-3))
    np.testing.assert_allclose(probs, np.asarray(want), atol=1e-5)
    with pytest.raises(ValueError, match="5-way"):
        k3(support[0], ys[0] % 4, query[0], 4)
