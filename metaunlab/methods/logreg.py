"""Multinomial logistic regression fitted on the support set (inductive).

The linear-classifier baseline on frozen, L2-normalised features used e.g. by Tian et al.,
"Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need?", ECCV 2020
(which fits scikit-learn's LogisticRegression). Here it is fitted in JAX by full-batch
gradient descent, so it is jit- and vmap-able:

    minimise  mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C Ns)        (b not penalised)

which is scikit-learn's objective `||W||^2 / 2 + C sum_i CE` divided by C * Ns.

Defaults: C = 1 (scikit-learn's default), W = 0 and b = 0 at the start, 300 steps with step
size 1 / L, where L = 1 + 1 / (C Ns) bounds the curvature (the softmax cross-entropy
Hessian w.r.t. the logits has eigenvalues <= 1/2 and ||[x, 1]||^2 = 2 for unit-norm x).
The objective is strongly convex, so 300 steps land very close to scikit-learn's L-BFGS
solution; the two are not compared numerically in this repository.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaunlab.methods.base import Method, register
from metaunlab.numerics import l2_normalize


def logistic_regression(support_feats: jax.Array, support_labels: jax.Array,
                        query_feats: jax.Array, n_way: int, *, c: float = 1.0,
                        steps: int = 300) -> jax.Array:
    """Query probabilities of a logistic regression fitted on one episode's support set.

    Args:
      support_feats: (Ns, D) support features.
      support_labels: (Ns,) int labels in [0, n_way).
      query_feats: (Nq, D) query features.
      n_way: the number of classes N (static).
      c: scikit-learn's C, the inverse strength of the L2 penalty on W.
      steps: gradient-descent steps (static).

    Returns:
      (Nq, N) query probabilities softmax(W x + b) on the L2-normalised queries.

    References:
      Tian, Wang, Krishnan, Tenenbaum & Isola. Rethinking Few-Shot Image Classification: a
      Good Embedding Is All You Need? ECCV 2020. https://arxiv.org/abs/2003.11539
    """
    x = l2_normalize(support_feats)
    targets = jax.nn.one_hot(support_labels, n_way, dtype=x.dtype)
    penalty = 1.0 / (c * x.shape[0])
    lr = 1.0 / (1.0 + penalty)

    def loss(params):
        w, b = params
        log_p = jax.nn.log_softmax(x @ w.T + b, axis=-1)
        return -jnp.mean(jnp.sum(targets * log_p, -1)) + 0.5 * penalty * jnp.sum(w * w)

    def step(params, _):
        grads = jax.grad(loss)(params)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), None

    init = (jnp.zeros((n_way, x.shape[1]), x.dtype), jnp.zeros((n_way,), x.dtype))
    (w, b), _ = jax.lax.scan(step, init, None, length=steps)
    return jax.nn.softmax(l2_normalize(query_feats) @ w.T + b, axis=-1)


METHOD = register(Method(
    name="logreg", fn=logistic_regression, is_transductive=False,
    paper="Tian et al., Rethinking Few-Shot Image Classification: a Good Embedding Is All "
          "You Need?, ECCV 2020 (support-set logistic regression)"))
