"""Two measurements that say why a transductive head fails on a task: how crowded the
features are, and how unevenly the head spreads its predictions over the classes.

`feature_crowding` is the mean cosine between the L2-normalised features of pairs of
images of different classes (and of the same class): near 0 the classes are spread
around the origin, near 1 every image points one way and all cosines are compressed
together. `prediction_shares` is, per episode, the fraction of queries given to the
most-predicted class (1 / N when predictions are spread as evenly as a balanced query
set) and the number of classes predicted at all. A head whose steps gather the queries
into a few classes shows it as a share far above 1 / N.
"""

from __future__ import annotations

import numpy as np


def feature_crowding(feats: np.ndarray, labels: np.ndarray, *, pairs: int = 4000,
                     seed: int = 0) -> dict[str, float]:
    """Mean cosines over `pairs` random image pairs of (N, D) `feats`: "between" (pairs of
    different classes), "within" (the same class), and "mean_norm", the length of the
    mean normalised feature (0: no common direction, 1: all identical)."""
    feats, labels = np.asarray(feats, np.float64), np.asarray(labels)
    if len(feats) < 2 or len(feats) != len(labels):
        raise ValueError(f"feature_crowding needs two or more features with one label each, "
                         f"got {len(feats)} features and {len(labels)} labels")
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    first, second = rng.integers(len(unit), size=(2, pairs))
    distinct = first != second  # an image paired with itself says nothing
    first, second = first[distinct], second[distinct]
    cosines = np.sum(unit[first] * unit[second], axis=1)
    same = labels[first] == labels[second]
    return {"between": float(np.mean(cosines[~same])) if np.any(~same) else float("nan"),
            "within": float(np.mean(cosines[same])) if np.any(same) else float("nan"),
            "mean_norm": float(np.linalg.norm(unit.mean(axis=0)))}


def prediction_shares(probs: np.ndarray, query_mask: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(largest share, classes predicted), each (E,), of class probabilities (E, Q, N):
    the fraction of an episode's (real) queries whose argmax is its most frequent class,
    and how many of the N classes are the argmax of at least one query."""
    probs = np.asarray(probs)
    n_way = probs.shape[-1]
    mask = np.ones(probs.shape[:-1], bool) if query_mask is None else np.asarray(query_mask)
    predicted = np.argmax(probs, axis=-1)
    counts = np.stack([np.bincount(p[m], minlength=n_way)
                       for p, m in zip(predicted, mask, strict=True)])
    real = np.maximum(mask.sum(axis=-1), 1)
    return counts.max(axis=-1) / real, (counts > 0).sum(axis=-1)
