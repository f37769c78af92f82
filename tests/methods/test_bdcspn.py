"""BD-CSPN (metaunlab.methods.bdcspn): the query shift and the rectified prototypes by hand."""

import jax.numpy as jnp
import numpy as np

from metaunlab.methods import bdcspn


def test_bd_cspn_shift_is_the_mean_difference():
    support = jnp.asarray([[1.0, 0.0], [3.0, 0.0]])
    query = jnp.asarray([[0.0, 1.0], [0.0, 3.0], [0.0, 2.0]])
    np.testing.assert_allclose(np.asarray(bdcspn.query_shift(support, query)), [2.0, -2.0])
    shifted = query + bdcspn.query_shift(support, query)
    np.testing.assert_allclose(np.asarray(shifted.mean(0)), np.asarray(support.mean(0)),
                               atol=1e-6)


def test_bd_cspn_rectified_prototype_by_hand():
    support = jnp.asarray([[1.0, 0.0], [0.0, 1.0]])
    query = jnp.asarray([[0.6, 0.8]])  # cos 0.6 to class 0, 0.8 to class 1 -> class 1
    protos = np.asarray(bdcspn.rectified_prototypes(support, jnp.asarray([0, 1]), query, 2,
                                                    eps=10.0))
    w_support, w_query = np.exp(10 * 1.0), np.exp(10 * 0.8)
    want = (w_support * np.array([0.0, 1.0]) + w_query * np.array([0.6, 0.8])) / (
        w_support + w_query)
    np.testing.assert_allclose(protos[1], want, rtol=1e-5)
    np.testing.assert_allclose(protos[0], [1.0, 0.0], rtol=1e-6)  # no query joined class 0
    top0 = bdcspn.rectified_prototypes(support, jnp.asarray([0, 1]), query, 2, top_z=0)
    np.testing.assert_allclose(np.asarray(top0), np.asarray(support), rtol=1e-6)
