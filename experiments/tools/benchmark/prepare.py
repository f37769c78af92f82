"""Preparing the benchmark's cases: synthetic data, compiled steps, one call to time."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaunlab import evaluation, sib
from metaunlab.backbones import get_backbone
from metaunlab.data.episodes import Episodes, EpisodeSampler, EpisodeShape
from metaunlab.methods import Method, sib_method
from metaunlab.train import metatrain, optim

from . import variants
from .cases import (
    DATASETS,
    INNER_LR,
    MEMORY_TARGET_BYTES,
    OUTER_LR,
    TRAIN_CLASSES,
    Budget,
    Case,
    Prepared,
    device_name,
)
from .timing import compile_with_stats


def _labels(rows: int, case: Case, classes: int = TRAIN_CLASSES) -> np.ndarray:
    """Labels of a `rows`-row table split into about `classes` equal classes, each big enough
    for `case` episodes; rows beyond the last whole class are dropped."""
    per_class = max(rows // classes, case.shot + case.query)
    return (np.arange(rows // per_class * per_class) // per_class).astype(np.int32)


def _episodes(labels: np.ndarray, case: Case, count: int, seed: int = 0) -> Episodes:
    return EpisodeSampler(labels, EpisodeShape(case.way, case.shot, case.query),
                          seed).sample(0, count)


def _features(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim), np.float32)


def backbone_variables(module: Any, image_size: int, channels: int = 3, *,
                       abstract: bool = False, seed: int = 0) -> Any:
    """Backbone variables shaped like `module.init`'s, without running the (slow) init.

    Kernels are He-normal (fan-out) like the modules' own initializer, BatchNorm scales and
    running variances 1, biases and running means 0; `abstract` gives ShapeDtypeStructs.
    """
    sample = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    shapes = jax.eval_shape(functools.partial(module.init, train=False),
                            jax.random.PRNGKey(0), sample)
    if abstract:
        return shapes
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        name = getattr(path[-1], "key", str(path[-1]))
        if name == "kernel":
            std = math.sqrt(2.0 / (leaf.shape[-1] * math.prod(leaf.shape[:-2])))
            value = std * rng.standard_normal(leaf.shape)
        elif name in ("scale", "var"):
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(make, shapes)


def _optimizer() -> optax.GradientTransformation:
    return optim.sgd_nesterov(OUTER_LR)


def _fresh_state(case: Case, feat_dim: int | None = None) -> dict[str, Any]:
    params = sib.init(jax.random.PRNGKey(0), case.way, feat_dim or case.feat_dim)
    return metatrain.init_state(params, _optimizer(), 0)


def _train_call(compiled: Any, state: Any, args: Sequence[Any]) -> Callable[[], Any]:
    """One call of a compiled `(state, *args) -> (state, aux)` step, threading the state."""
    holder = [state]

    def call():
        holder[0], aux = compiled(holder[0], *args)
        return holder[0], aux

    return call


def prepare_sib_step(case: Case, budget: Budget) -> Prepared:
    del budget
    labels = _labels(10 * (case.shot + case.query), case, classes=10)
    table = _features(len(labels), case.feat_dim)
    ep = _episodes(labels, case, case.batch)
    args = [jnp.asarray(a) for a in (table[ep.support_idx], ep.support_labels,
                                     table[ep.query_idx], ep.query_labels)]
    state = _fresh_state(case)
    step = variants.make_sib_step(_optimizer(), steps=case.k, inner=case.inner,
                                  donate=case.donate, form=case.form)
    compiled, compile_s, memory = compile_with_stats(step, state, *args)
    return Prepared(case, _train_call(compiled, state, args), case.batch, compile_s, memory,
                    device_name())


def prepare_cached_step(case: Case, budget: Budget) -> Prepared:
    labels = _labels(budget.table_rows, case)
    table = jnp.asarray(_features(len(labels), case.feat_dim))
    episodes = metatrain.episodes_as_dict(_episodes(labels, case, case.batch * case.per_call))
    if case.per_call > 1:  # (per_call, B, ...): one batch of B episodes per iteration
        episodes = {k: v.reshape((case.per_call, case.batch) + v.shape[1:])
                    for k, v in episodes.items()}
    state = _fresh_state(case)
    step = metatrain.make_train_step(_optimizer(), steps=case.k, inner_lr=INNER_LR,
                                     steps_per_call=case.per_call)
    args = (None, table, episodes)
    compiled, compile_s, memory = compile_with_stats(step, state, *args)
    return Prepared(case, _train_call(compiled, state, args), case.batch * case.per_call,
                    compile_s, memory, device_name())


def _eval_method(params: sib.Params, case: Case) -> Method:
    """The SIB head as `evaluation.evaluate` takes it: form "auto" is `sib_method` (the
    library's choice, the Gram form for chunks of episodes), "direct" the direct form."""
    if case.form == "auto":
        return sib_method(params, case.k, INNER_LR)

    def direct(support_feats, support_labels, query_feats, n_way, *, params):
        del n_way
        return jax.nn.softmax(sib._apply_form(params, support_feats, support_labels,
                                              query_feats, form="direct", steps=case.k,
                                              lr=INNER_LR), -1)

    return Method("sib_direct", direct, case.k > 0, "", params=params, episode_axes=True)


def prepare_eval(case: Case, budget: Budget) -> Prepared:
    """`evaluation.evaluate` over `budget.eval_episodes` episodes, `case.batch` per chunk."""
    method = _eval_method(sib.init(jax.random.PRNGKey(0), case.way, case.feat_dim), case)
    labels = _labels(budget.eval_rows, case, classes=20)
    feats = jnp.asarray(_features(len(labels), case.feat_dim, seed=1))
    episodes = _episodes(labels, case, budget.eval_episodes, seed=1)
    chunk = min(case.batch, budget.eval_episodes)
    # Compile time and memory of the per-chunk function that `evaluate` jits.
    part = [jnp.asarray(a[:chunk]) for a in (episodes.support_idx, episodes.support_labels,
                                            episodes.query_idx, episodes.query_labels)]
    _, compile_s, memory = compile_with_stats(
        evaluation._correct_fraction, method.predictor(case.way), method.params, None, feats,
        *part)

    def call():
        return evaluation.evaluate(method, feats, episodes, chunk=chunk).accuracies

    return Prepared(case, call, len(episodes), compile_s, memory, device_name())


def _full_step_inputs(case: Case, budget: Budget, *, abstract: bool):
    """(train_step, state, backbone variables, image source, episodes) of a full step."""
    transform, stored, channels = DATASETS[case.dataset]
    size = transform.output_size(stored)
    module, feat_dim = get_backbone(case.backbone, size)
    state = _fresh_state(case, feat_dim)
    variables = backbone_variables(module, size, channels, abstract=abstract)

    def feature_fn(variables, images):
        return module.apply(variables, images, train=False)

    step = metatrain.make_train_step(_optimizer(), steps=case.k, inner_lr=INNER_LR,
                                     feature_fn=feature_fn, transform=transform)
    # Memory: the whole train split resident on the device, as in real training.
    labels = _labels(budget.memory_source_rows if abstract else budget.image_rows, case)
    episodes = metatrain.episodes_as_dict(_episodes(labels, case, case.batch))
    shape = (len(labels), stored, stored, channels)
    if abstract:
        source = jax.ShapeDtypeStruct(shape, jnp.uint8)
        state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    else:
        source = jnp.asarray(np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8))
    return step, state, variables, source, episodes


def prepare_full_step(case: Case, budget: Budget) -> Prepared:
    step, state, variables, source, episodes = _full_step_inputs(case, budget, abstract=False)
    args = (variables, source, episodes)
    compiled, compile_s, memory = compile_with_stats(step, state, *args)
    return Prepared(case, _train_call(compiled, state, args), case.batch, compile_s, memory,
                    device_name())


def prepare_memory_target(case: Case, budget: Budget) -> Prepared:
    """Compile only, on abstract inputs: does the full step fit in MEMORY_TARGET_BYTES?"""
    step, state, variables, source, episodes = _full_step_inputs(case, budget, abstract=True)
    _, compile_s, memory = compile_with_stats(step, state, variables, source, episodes)
    peak = memory.get("peak")
    extra = {"source_rows": int(source.shape[0]), "target_bytes": MEMORY_TARGET_BYTES,
             "fits_target": None if peak is None else bool(peak <= MEMORY_TARGET_BYTES)}
    return Prepared(case, None, case.batch, compile_s, memory, device_name(), extra=extra)
