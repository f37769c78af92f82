"""Meta-testing: accuracy of SIB (K steps) and K = 0 on many episodes, with 95% intervals.

The backbone is frozen and test images are not augmented, so every image has exactly one
feature vector. We therefore embed each image once and run the episodes on those features:
the numbers are identical to recomputing the features inside every episode, as the
reference does, at a fraction of the cost.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from metaunlab import sib
from metaunlab.data.episodes import Episodes

# Backbone forward in inference mode: (variables, float images (N,H,W,C)) -> (N, D).
FeatureFn = Callable[[Any, jax.Array], jax.Array]


def embed(feature_fn: FeatureFn, variables: Any, images: np.ndarray,
          preprocess: Callable[..., jax.Array], *, batch_size: int = 256,
          desc: str | None = None, rng: jax.Array | None = None) -> np.ndarray:
    """Features (N, D) of uint8 images (N, H, W, C), in fixed-size chunks (one compilation).

    With `rng`, `preprocess(key, chunk)` is random (a training augmentation) and each chunk
    gets its own key, `fold_in(rng, index of its first image)`, so no two chunks share a draw.
    """
    @jax.jit
    def run(chunk, key):
        x = preprocess(chunk) if key is None else preprocess(key, chunk)
        return feature_fn(variables, x)

    n = len(images)
    batch_size = min(batch_size, max(n, 1))
    outputs = []
    bar = tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=desc is None,
               leave=False)
    for start in bar:
        chunk = images[start:start + batch_size]
        valid = len(chunk)
        if valid < batch_size:  # pad the tail so the jitted function sees one shape
            pad = np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        key = None if rng is None else jax.random.fold_in(rng, start)
        outputs.append(np.asarray(run(chunk, key))[:valid])
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


@functools.partial(jax.jit, static_argnames=("steps", "form"))
def _correct_fraction(params, feats, support_idx, support_labels, query_idx, query_labels, *,
                      steps, lr, form="auto"):
    logits = sib.batched_apply(params, feats[support_idx], support_labels, feats[query_idx],
                               steps=steps, lr=lr, form=form)
    return jnp.mean(jnp.argmax(logits, -1) == query_labels, axis=-1)


def episode_accuracies(params: sib.Params, feats: np.ndarray | jax.Array, episodes: Episodes,
                       *, steps: int, lr: float, chunk: int = 100,
                       desc: str | None = None, form: str = "auto") -> np.ndarray:
    """Per-episode query accuracy in percent, shape (E,), for SIB with `steps` steps.

    `form` is the SIB form (`sib.resolve_form`; "auto" takes the Gram form for chunks of
    two or more episodes): the accuracies are the same up to float rounding.
    Episodes are processed `chunk` at a time, as one batch; the last chunk is padded by repeating
    episodes (then dropped) so that only one shape is ever compiled.
    """
    feats = jnp.asarray(feats)
    arrays = (episodes.support_idx, episodes.support_labels, episodes.query_idx,
              episodes.query_labels)
    total = len(episodes.support_idx)
    chunk = min(chunk, total)
    out = []
    bar = tqdm(range(0, total, chunk), desc=desc, unit="chunk", disable=desc is None,
               leave=False)
    for start in bar:
        rows = np.arange(start, start + chunk) % total
        part = [a[rows] for a in arrays]
        out.append(np.asarray(_correct_fraction(params, feats, *part, steps=steps, lr=lr,
                                                form=form)))
    return 100.0 * np.concatenate(out)[:total]


def mean_and_ci95(accuracies: np.ndarray) -> tuple[float, float]:
    """Mean and 1.96 * std / sqrt(n), as the reference reports (population std)."""
    accuracies = np.asarray(accuracies, np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(len(accuracies)))


def evaluate_sib(params: sib.Params, feats: np.ndarray, episodes: Episodes, *, steps: int,
                 lr: float, desc: str = "meta-test") -> dict[str, dict[str, float]]:
    """`{"sib": {"accuracy", "ci95"}, "k0": {...}}` on the same episodes.

    "k0" is the same trained model with zero synthetic gradient steps: the initialization
    network's class-mean cosine classifier, which never looks at the unlabeled queries.
    The difference between the two is what transduction through synthetic gradients adds.
    """
    results = {}
    for name, k in (("sib", steps), ("k0", 0)):
        accs = episode_accuracies(params, feats, episodes, steps=k, lr=lr,
                                  desc=f"{desc} {name}")
        mean, ci = mean_and_ci95(accs)
        results[name] = {"accuracy": mean, "ci95": ci, "steps": k}
    return results
