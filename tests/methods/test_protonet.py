"""The cosine prototype classifier (metaunlab.methods.protonet)."""

import jax
import numpy as np

from metaunlab import sib


def test_protonet_cosine_is_sib_with_zero_steps_at_init(separated, sib_params, batched):
    support, ys, query, _ = separated
    params = sib_params
    want = jax.nn.softmax(sib.apply(params, support, ys, query, steps=0), -1)
    got = batched("protonet_cosine", 5)(support, ys, query)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
