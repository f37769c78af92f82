"""Numerics shared by SIB, the baselines and pretraining.

Every function works on the last one or two axes and accepts any leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORM_EPS = 1e-12  # the clamp of torch's F.normalize


def transpose(x: jax.Array) -> jax.Array:
    """Swap the last two axes (the matrices of a batch of episodes)."""
    return jnp.swapaxes(x, -1, -2)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """Divide by max(||x||_2, 1e-12) along `axis`, exactly like torch's F.normalize."""
    norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
    return x / jnp.maximum(norm, NORM_EPS)


def power_transform(x: jax.Array, beta=0.5, eps: float = 1e-6) -> jax.Array:
    """Elementwise (|x| + eps)^beta with the sign of x kept: PT-MAP's transform of ReLU
    features, (x + 1e-6)^beta, for the non-negative ones (which ReLU backbones produce), and
    defined for negative ones too. `beta` may be a traced scalar (a meta-learned exponent)."""
    return jnp.where(x >= 0, 1.0, -1.0) * jnp.power(jnp.abs(x) + eps, beta)


def cosine_logits(classifier: dict, weights: jax.Array, feats: jax.Array) -> jax.Array:
    """`scale * (normalize(feats) @ normalize(weights).T + bias)`: (n, D), (N, D) -> (n, N).

    `classifier` holds the scalars `scale` and `bias` (SIB's cosine classifier; pretraining's
    head has bias 0).
    """
    cos = l2_normalize(feats) @ transpose(l2_normalize(weights))
    return logits_of_cosines(classifier, cos)


def logits_of_cosines(classifier: dict, cos: jax.Array) -> jax.Array:
    """`scale * (cos + bias)` for cosines (n, N)."""
    return classifier["scale"] * (cos + classifier["bias"])


def class_means(feats: jax.Array, labels: jax.Array, n_way: int) -> jax.Array:
    """(N, D) per-class mean of `feats` (n, D); an absent class gets zeros, not NaN.

    The reference has the same hazard (a division by zero); clamping the count keeps the
    arithmetic finite without changing any well-formed episode.
    """
    one_hot = jax.nn.one_hot(labels, n_way, dtype=feats.dtype)  # (n, N)
    counts = jnp.maximum(one_hot.sum(axis=-2), 1.0)[..., None]
    return (transpose(one_hot) @ feats) / counts


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over every leading axis, integer labels.

    `optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()` up to float
    rounding (tested); optax's logsumexp form rounds differently in the last bit, and this
    form, the label's entry of `log_softmax`, keeps every number the project reports as it
    was trained.
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0].mean()


def sq_distances(x: jax.Array, centres: jax.Array) -> jax.Array:
    """(n, N) squared Euclidean distances between rows of x (n, D) and centres (N, D)."""
    d2 = (jnp.sum(x * x, -1)[..., :, None] - 2.0 * x @ transpose(centres)
          + jnp.sum(centres * centres, -1)[..., None, :])
    return jnp.maximum(d2, 0.0)


def entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
    """Shannon entropy in nats along `axis` (0 log 0 = 0)."""
    return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0),
                    axis=axis)
