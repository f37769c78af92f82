"""Few-shot evaluation: any `Method` on any batch of episodes, with 95% intervals.

`evaluate(method, feats, episodes)` is the one evaluation primitive: validation during
training, meta-testing, episode files and the method comparison all call it. Episodes are
index arrays into `feats`, so every image is embedded once (`embed`): the backbone is frozen
and test images are not augmented, so each has exactly one feature vector, and the
numbers are those of recomputing the features inside every episode, as the reference
does, at a fraction of the cost.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from metaunlab.data.episodes import Episodes
from metaunlab.errors import NonFiniteError
from metaunlab.head import Head
from metaunlab.methods.base import Method
from metaunlab.methods.sib_head import StepScales, sib_method

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
    # disable=None: a bar only where stderr is a terminal (piped logs get none).
    bar = tqdm(range(0, n, batch_size), desc=desc, unit="batch",
               disable=True if desc is None else None, leave=False)
    for start in bar:
        chunk = images[start:start + batch_size]
        valid = len(chunk)
        if valid < batch_size:  # pad the tail so the jitted function sees one shape
            pad = np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        key = None if rng is None else jax.random.fold_in(rng, start)
        feats = np.asarray(run(chunk, key))[:valid]
        if not np.all(np.isfinite(feats)):
            bad = start + int(np.flatnonzero(~np.isfinite(feats).all(axis=1))[0])
            raise NonFiniteError(f"the backbone gives NaN or infinite features for image {bad} "
                                 f"of {n}{f' ({desc})' if desc else ''}; its weights diverged "
                                 "or the image is corrupt.")
        outputs.append(feats)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def mean_and_ci95(accuracies: np.ndarray) -> tuple[float, float]:
    """The mean of `accuracies` (E,) and its 95% interval half-width as the reference
    reports it: 1.96 * std / sqrt(E), population std.

    Returns:
      (mean, ci95), floats.
    """
    accuracies = np.asarray(accuracies, np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(len(accuracies)))


@dataclasses.dataclass
class Evaluation:
    """Per-episode accuracies (E,) in percent, and with `timed` the cost of computing them:
    milliseconds per episode after compilation, and seconds of the untimed first call
    (compilation plus one chunk)."""

    accuracies: np.ndarray
    ms_per_episode: float | None = None
    warm_up_s: float | None = None

    @property
    def accuracy(self) -> float:
        return mean_and_ci95(self.accuracies)[0]

    @property
    def ci95(self) -> float:
        return mean_and_ci95(self.accuracies)[1]


@functools.partial(jax.jit, static_argnums=0)
def _correct_fraction(predictor, params, base_mean, feats, support_idx, support_labels,
                      query_idx, query_labels, query_mask=None):
    probs = predictor(params, base_mean, feats[support_idx], support_labels, feats[query_idx],
                      query_mask)
    correct = jnp.argmax(probs, -1) == query_labels
    if query_mask is None:
        return jnp.mean(correct, axis=-1), jnp.all(jnp.isfinite(probs))
    real = jnp.sum(query_mask, axis=-1)
    fraction = jnp.sum(correct & query_mask, axis=-1) / jnp.maximum(real, 1)
    return fraction, jnp.all(jnp.isfinite(probs))


def evaluate(method: Method, feats: np.ndarray | jax.Array, episodes: Episodes, *,
             base_mean: np.ndarray | jax.Array | None = None, chunk: int = 100,
             timed: bool = False, desc: str | None = None) -> Evaluation:
    """Accuracy of `method` on every episode of `episodes`.

    Episodes run `chunk` at a time as one batch; the last chunk is padded by repeating
    episodes (then dropped), so one shape compiles per episode shape. Episodes with a
    `query_mask` (padded query sets) are scored on their real queries only.

    Args:
      method: the classifier (`metaunlab.methods`, `sib_method`).
      feats: (N, D) features the episodes index into.
      episodes: a batch of episodes (`metaunlab.data.episodes`).
      base_mean: (D,) the base-class mean, for the methods that use one.
      chunk: episodes per batch.
      timed: run the first chunk once untimed (compilation) before a timed pass.
      desc: a progress bar's label, or None for none.

    Returns:
      An `Evaluation`: per-episode accuracies in percent, their mean and 95% interval.
    """
    feats = jnp.asarray(feats)
    base_mean = None if base_mean is None else jnp.asarray(base_mean)
    predictor = method.predictor(episodes.n_way)
    arrays = (episodes.support_idx, episodes.support_labels, episodes.query_idx,
              episodes.query_labels)
    if episodes.query_mask is not None:
        arrays += (episodes.query_mask,)
    total = len(episodes)
    chunk = min(chunk, total)
    parts = [[a[np.arange(start, start + chunk) % total] for a in arrays]
             for start in range(0, total, chunk)]

    def run(part):
        fraction, finite = _correct_fraction(predictor, method.params, base_mean, feats, *part)
        if not bool(finite):
            raise NonFiniteError(f"{method.name} gives NaN or infinite probabilities on these "
                                 "episodes; its parameters or the features diverged (lower "
                                 "the learning rate, or check the data).")
        return fraction

    warm_up = None
    if timed:
        started = time.perf_counter()
        jax.block_until_ready(run(parts[0]))
        warm_up = time.perf_counter() - started
    started = time.perf_counter()
    bar = tqdm(parts, desc=desc, unit="chunk", disable=True if desc is None else None,
               leave=False)  # disable=None: a bar only on a terminal
    out = [np.asarray(run(part)) for part in bar]
    ms = 1000.0 * (time.perf_counter() - started) / total if timed else None
    return Evaluation(100.0 * np.concatenate(out)[:total], ms, warm_up)


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """`{"mean", "ci95"}` of a - b over the same episodes (per-episode accuracies in
    percent): the mean paired difference and 1.96 times its standard error, the interval a
    matched comparison has, narrower than either method's own."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired accuracies need the same episodes, got {a.shape} and "
                         f"{b.shape}.")
    mean, ci95 = mean_and_ci95(a - b)
    return {"mean": mean, "ci95": ci95}


def sib_variants(head: Head, params: Any, *, steps: int, lr: float,
                 step_scales: StepScales | None = None) -> dict[str, Method]:
    """The trained head as the methods a run reports.

    Args:
      head: the head's composition; params: its parameters.
      steps, lr: K and the synthetic step size.
      step_scales: the step multiples tuned on validation (`metaunlab.research.
        step_tuning`), or None.

    Returns:
      {"sib": K = `steps` at step `lr`, ["sib_tuned": at the tuned multiples,] "k0": no
      step, every other part of the head kept (its matched control)}.
    """
    variants = {"sib": sib_method(params, steps, lr, head=head)}
    if step_scales is not None:
        variants["sib_tuned"] = sib_method(params, steps, lr, step_scales=step_scales,
                                           head=head)
    # The matched control keeps every part of the head, the readout included.
    variants["k0"] = sib_method(params, 0, lr, readout=True if head.readout else None,
                                head=head)
    return variants


def evaluate_sib(head: Head, params: Any, feats: np.ndarray, episodes: Episodes, *, steps: int,
                 lr: float, desc: str = "meta-test",
                 step_scales: StepScales | None = None) -> dict[str, dict[str, float]]:
    """`{"sib": {"accuracy", "ci95", "steps", "minus_k0"}, "k0": {..., "transductive"}}` on
    the same episodes.

    "k0" is the same trained model with zero synthetic gradient steps and every other part
    it has (feature transforms, readout): the matched control. It reads the unlabeled
    queries only where the head centres features on the episode's mean or reads its logits
    out as a balanced assignment ("transductive": true, `Head.k0_reads_queries`). "minus_k0" is
    SIB's paired difference from it over the same episodes, `{"mean", "ci95"}`
    (`paired_difference`): what the synthetic gradient steps add. With `step_scales`
    (`metaunlab.research.step_tuning`), "sib_tuned" is SIB at those multiples of its step, its entry
    with the "step_scale" of the episodes' query count.
    """
    results, per_episode = {}, {}
    for name, method in sib_variants(head, params, steps=steps, lr=lr,
                                             step_scales=step_scales).items():
        result = evaluate(method, feats, episodes, desc=f"{desc} {name}")
        per_episode[name] = result.accuracies
        results[name] = {"accuracy": result.accuracy, "ci95": result.ci95,
                         "steps": 0 if name == "k0" else steps}
        if name == "sib_tuned":
            per_class = float(episodes.mask_or_ones.sum(-1).mean()) / episodes.n_way
            results[name]["step_scale"] = step_scales.scale_at(per_class)
    results["k0"]["transductive"] = head.k0_reads_queries
    for name in results:
        if name != "k0":
            results[name]["minus_k0"] = paired_difference(per_episode[name], per_episode["k0"])
    return results
