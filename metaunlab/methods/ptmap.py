"""PT-MAP: power transform + MAP with Sinkhorn-balanced assignments (transductive).

Hu, Gripon & Pateux, "Leveraging the Feature Distribution in Transfer-based Few-Shot
Learning", ICANN 2021 (arXiv:2006.03806).

1. Power transform of the (non-negative, post-ReLU) features, f(v) = (v + 1e-6)^beta with
   beta = 0.5, then L2 normalisation, centring and L2 normalisation again;
2. prototypes m_c start at the support class means; for 30 epochs:
   * soft query assignments P = Sinkhorn(exp(-lambda ||x_q - m_c||^2)) with row sums 1
     (each query is one sample) and column sums Nq / N (balanced classes); the support
     rows are their one-hot labels;
   * m_c <- m_c + alpha (weighted mean of all samples under P - m_c);
3. the query probabilities are the final assignments.

Defaults: beta = 0.5, lambda = 10, alpha = 0.2, 30 epochs, 100 Sinkhorn iterations.

Deviations and notes:
* Sinkhorn runs a fixed number of iterations (as we recall, the reference iterates until
  a small tolerance); a fixed count gives every episode of a vmapped batch the same work.
  The last half-step is a column normalisation, so the returned rows are re-normalised to
  sum to 1. The kernel's rows are rescaled before exp (Sinkhorn's result is invariant to
  that) so a large lambda cannot underflow a whole row.
* Negative features (not produced by ReLU backbones) would make v^beta undefined; we use
  the sign-preserving -(|v| + 1e-6)^beta for v < 0, identical to the paper for v >= 0.
* Centring: `centre="separate"` (default) subtracts the support mean from the support and
  the query mean from the queries, each then L2-normalised, as in the circulating copies
  of the authors' code we looked at (some derivatives centre jointly: `centre="joint"`
  subtracts one mean of all the episode's features). The reference's QR reduction of the
  features is a rotation and does not change any distance, so it is omitted.
* Balanced columns assume every class has Nq / N queries (true for our episodes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaunlab.methods.base import Method, register
from metaunlab.numerics import class_means, l2_normalize, sq_distances


def power_transform(x: jax.Array, beta: float = 0.5, eps: float = 1e-6) -> jax.Array:
    return jnp.where(x >= 0, 1.0, -1.0) * jnp.power(jnp.abs(x) + eps, beta)


def sinkhorn(kernel: jax.Array, row_sums: jax.Array, col_sums: jax.Array,
             iterations: int = 100) -> jax.Array:
    """P = diag(u) kernel diag(v) with (approximately) the given row and column sums, by
    alternating row and column scaling; the last scaling is the column one, so the column
    sums are exact. `kernel` must be positive (no all-zero row or column)."""
    def body(p, _):
        p = p * (row_sums / p.sum(axis=1))[:, None]
        p = p * (col_sums / p.sum(axis=0))[None, :]
        return p, None

    p, _ = jax.lax.scan(body, kernel, None, length=iterations)
    return p


def preprocess(support_feats: jax.Array, query_feats: jax.Array, *, beta: float = 0.5,
               centre: str = "separate") -> tuple[jax.Array, jax.Array]:
    """Power transform, L2, centre, L2 (see the module docstring)."""
    support = l2_normalize(power_transform(support_feats, beta))
    query = l2_normalize(power_transform(query_feats, beta))
    if centre == "separate":
        support, query = support - support.mean(0), query - query.mean(0)
    elif centre == "joint":
        mean = jnp.concatenate([support, query]).mean(0)
        support, query = support - mean, query - mean
    else:
        raise ValueError(f"centre must be 'separate' or 'joint', got {centre!r}")
    return l2_normalize(support), l2_normalize(query)


def pt_map(support_feats: jax.Array, support_labels: jax.Array, query_feats: jax.Array,
           n_way: int, *, beta: float = 0.5, lam: float = 10.0, alpha: float = 0.2,
           epochs: int = 30, sinkhorn_iterations: int = 100,
           centre: str = "separate") -> jax.Array:
    support, query = preprocess(support_feats, query_feats, beta=beta, centre=centre)
    feats = jnp.concatenate([support, query])
    support_p = jax.nn.one_hot(support_labels, n_way, dtype=feats.dtype)
    n_query = query.shape[0]
    rows = jnp.ones((n_query,), feats.dtype)
    cols = jnp.full((n_way,), n_query / n_way, feats.dtype)

    def assign(mus):
        energy = lam * sq_distances(query, mus)
        # Scaling a row of the kernel does not change Sinkhorn's result; making each row's
        # largest entry 1 keeps exp() from underflowing a whole row for large lambda.
        kernel = jnp.exp(-(energy - energy.min(axis=1, keepdims=True)))
        return sinkhorn(kernel, rows, cols, sinkhorn_iterations)

    def epoch(mus, _):
        p = jnp.concatenate([support_p, assign(mus)])
        estimate = (p.T @ feats) / p.sum(axis=0)[:, None]
        return mus + alpha * (estimate - mus), None

    mus, _ = jax.lax.scan(epoch, class_means(support, support_labels, n_way), None,
                          length=epochs)
    p = assign(mus)
    return p / p.sum(axis=1, keepdims=True)


METHOD = register(Method(
    name="pt_map", fn=pt_map, is_transductive=True,
    paper="Hu, Gripon & Pateux, Leveraging the Feature Distribution in Transfer-based "
          "Few-Shot Learning, ICANN 2021"))
