"""SimpleShot (metaunlab.methods.simpleshot) on a hand-computed case."""

import jax.numpy as jnp
import numpy as np

from metaunlab.methods import get_method, simpleshot


def test_simpleshot_centres_with_the_base_mean_when_given():
    support = jnp.asarray([[2.0, 1.0], [1.0, 2.0]])
    query = jnp.asarray([[1.6, 1.4]])
    # Support-mean centring: [0.6, 0.4] - [1.5, 1.5] = [0.1, -0.1] -> class 0 ([.5, -.5]).
    assert int(jnp.argmax(simpleshot.simpleshot(support, jnp.asarray([0, 1]), query, 2))) == 0
    # A base mean far away makes all three nearly parallel; the sign flips with it.
    p = simpleshot.simpleshot(support, jnp.asarray([0, 1]), query, 2,
                              base_mean=jnp.asarray([1.6, 1.0]))
    # centred: support [0.4, 0], [-0.6, 1] -> [1, 0], [-.51, .86]; query [0, .4] -> [0, 1]
    assert int(jnp.argmax(p)) == 1
    method = get_method("simpleshot")
    assert method.uses_base_mean
    np.testing.assert_allclose(
        np.asarray(method(support, jnp.asarray([0, 1]), query, 2,
                          base_mean=jnp.asarray([1.6, 1.0]))), np.asarray(p))
