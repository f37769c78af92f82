"""Speed and memory benchmarks of meta-training and evaluation (`python -m experiments.benchmark`).

Every case is compiled ahead of time (`jax.jit(f).lower(...).compile()`), which gives the
compile time and XLA's memory analysis of the executable without running it; timed cases
then run the compiled step in a loop. Records are flat dicts, one per case:

    {"name": "sib_step", "backbone": "none", "batch": 1, "k": 3, "way": 5, "shot": 1,
     "episodes_per_s": ..., "peak_bytes": ..., "compile_s": ..., ...}

Cases (`name`):
  sib_step       the SIB meta-training step on features already gathered into (B, Ns, D)
                 arrays: K synthetic-gradient steps, query cross-entropy, meta-gradient, SGD
                 update. `inner` is "unroll" (`sib.batch_loss`, a Python loop over K),
                 "scan" (the K steps as a `lax.scan`), "autodiff" (unrolled, the VJP
                 of each step by `jax.vjp`), "phi_autodiff" (phi's VJP by autodiff
                 instead of written out) or "vmap" (episodes by `jax.vmap` instead of a
                 leading axis, and phi's VJP by autodiff: how `sib` ran before; variants
                 below); `form` is the SIB form,
                 "direct" or "gram" (`sib.span_logits`); `donate` says whether the
                 training state is donated to the step.
  cached_step    `metatrain.make_train_step` on a device-resident feature table (the whole
                 train split) gathered by index inside the step: meta-training on cached
                 features, `per_call` iterations of B episodes per dispatched call
                 (`steps_per_call`), SIB form `form` ("auto" as meta_train uses it).
  eval           `evaluation.episode_accuracies`: test episodes per second.
  full_step      `metatrain.make_train_step` on uint8 images: gather, augmentation, frozen
                 backbone forward, SIB step (Conv-4-64 and WRN-28-10).
  memory_target  compile only: peak bytes of the full WRN-28-10 step against 16 GiB.
  torch_sib_step an independent eager PyTorch transcription of the SIB head step (B = 1),
                 timed in the same run when `torch` is importable (skipped otherwise).

Timing: each case runs one untimed warm-up call, then `rounds` rounds of about `round_s`
seconds each; `episodes_per_s` comes from the median round, `best_episodes_per_s` from the
fastest. Cases on the same episodes (sib_step variants, cached_step, torch_sib_step of one
batch / K / shot) are timed interleaved, round by round, so that their ratios survive a
machine whose load changes during the run. On CPU every step is followed by
`hostsync.step_barrier` (as in the training loop: letting CPU steps queue made them slower);
on accelerators steps are dispatched asynchronously and each round ends with one block.

Peak memory is `argument + output - alias + temp` bytes from `Compiled.memory_analysis()`:
the buffers the executable reads, writes and uses as scratch, where an output that reuses a
donated argument's buffer (alias) is counted once. Without donation alias is 0 and this is
plainly temp + argument + output. It is XLA's static figure for the backend the benchmark
runs on (so on CPU it is the CPU executable's), without allocator overheads.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaunlab import evaluation, metatrain, optim, sib
from metaunlab.backbones import get_backbone
from metaunlab.data import augment
from metaunlab.data.episodes import Episodes, EpisodeSampler, EpisodeShape
from metaunlab.hostsync import step_barrier

# ---- reference figures ------------------------------------------------------------------------
# Quoted from the issue "Performance: a benchmark suite", NOT measured by this module: the SIB
# authors' PyTorch code (torch 2.13, CPU) on the project's 2-core CPU machine, one episode per
# step (the reference never batches episodes).
REFERENCE_SIB_STEP_S = 7.6e-3  # SIB head step, 5-way 1-shot, K = 3, 640-d features
REFERENCE_CONV4_STEP_S = 0.470  # full step with Conv-4-64 at 80x80 (taken as 5-way 1-shot K=3)
REFERENCE_SOURCE = "issue 'Performance: a benchmark suite' (authors' PyTorch code, CPU)"

MEMORY_TARGET_BYTES = 16 * 1024**3  # "fits in 16 GB": a 16 GiB accelerator

INNER_LR = 1e-3  # the synthetic step size eta of the published configs
OUTER_LR = 1e-3
FEAT_DIM = 640  # WRN-28-10 / ResNet-12 feature size

# Image datasets of the full-step cases: training transform, stored side, channels.
# (Omniglot, without augmentation, only serves the fast smoke suite.)
DATASETS: dict[str, tuple[augment.ImageTransform, int, int]] = {
    "miniimagenet": (augment.MINIIMAGENET, 84, 3),
    "cifar_fs": (augment.CIFAR_FS, 32, 3),
    "omniglot": (augment.OMNIGLOT, 28, 1),
}
# Both mini-ImageNet and CIFAR-FS train splits have 64 classes of 600 images.
TRAIN_CLASSES, IMAGES_PER_CLASS = 64, 600


# ---- cases and budgets ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark configuration (see the module docstring for `name`)."""

    name: str
    batch: int
    k: int
    shot: int
    way: int = 5
    query: int = 15
    backbone: str = "none"
    dataset: str = ""  # full_step / memory_target: a key of DATASETS
    feat_dim: int = FEAT_DIM
    # sib_step: "unroll" | "scan" | "autodiff" | "phi_autodiff" | "vmap"; torch_sib_step: "eager"
    inner: str = "unroll"
    donate: bool = True
    form: str = "direct"  # SIB form (sib_step, cached_step, eval): direct | gram | auto
    per_call: int = 1  # meta-training iterations per dispatched call (cached_step)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long to time each case, and the sizes of the synthetic data."""

    round_s: float = 1.0  # target duration of one timing round (whole steps, at least one)
    rounds: int = 3  # timing rounds per case
    max_case_s: float = 60.0  # fewer rounds when a case would take longer than this
    table_rows: int = TRAIN_CLASSES * IMAGES_PER_CLASS  # cached feature table (train split)
    eval_rows: int = 20 * IMAGES_PER_CLASS  # test split: 20 classes
    eval_episodes: int = 1000
    image_rows: int = 200  # the uint8 image table of the timed full steps
    memory_source_rows: int = TRAIN_CLASSES * IMAGES_PER_CLASS  # whole train split on device


def suite(mode: str) -> tuple[list[Case], Budget]:
    """The cases and budget of `mode`: "full", "quick" (1-2 min on a 2-core CPU) or "smoke"
    (tiny sizes, every kind of case once: for tests)."""
    if mode == "full":
        cases = [Case("sib_step", b, k, shot)
                 for shot in (1, 5) for k in (0, 3, 5) for b in (1, 8, 32, 128)]
        cases += [Case("sib_step", 1, 3, 1, inner="scan"), Case("torch_sib_step", 1, 3, 1,
                                                                 inner="eager")]
        cases += [Case("sib_step", 8, k, 1, inner="scan") for k in (3, 5, 10)]
        cases += [Case("sib_step", 8, 10, 1)]
        cases += [Case("sib_step", b, 3, 1, inner="autodiff") for b in (1, 8)]
        cases += [Case("sib_step", b, 3, 1, inner=i, form=f) for i in ("phi_autodiff", "vmap")
                  for b, f in ((1, "direct"), (8, "gram"), (32, "gram"))]
        cases += [Case("sib_step", b, 3, 1, donate=False) for b in (1, 32)]
        cases += [Case("sib_step", b, k, s, form="gram")
                  for s in (1, 5) for k in (3, 5) for b in (1, 8, 32, 128)]
        cases += [Case("cached_step", b, 3, 1, form=f, per_call=n)
                  for b in (1, 8, 32) for f in ("direct", "auto") for n in (1, 10)]
        cases += [Case("eval", 100, 0, 1)] + [Case("eval", 100, 3, s, form=f)
                                              for s in (1, 5) for f in ("direct", "auto")]
        # (Conv-4 at B = 8 and 5-shot were cut: 1 min more on the 2-core CPU, little news.)
        cases += [Case("full_step", 1, 3, 1, backbone="conv4", dataset="miniimagenet")]
        cases += [Case("full_step", 1, 3, 1, backbone="wrn28_10", dataset=d)
                  for d in ("miniimagenet", "cifar_fs")]
        cases += [Case("memory_target", 8, 5, s, backbone="wrn28_10", dataset="miniimagenet")
                  for s in (1, 5)]
        return cases, Budget(round_s=0.4, rounds=5, max_case_s=30.0)
    if mode == "quick":
        cases = [Case("sib_step", 1, 3, 1), Case("torch_sib_step", 1, 3, 1, inner="eager")]
        cases += [Case("sib_step", 8, 3, 1), Case("sib_step", 8, 3, 1, inner="scan"),
                  Case("sib_step", 8, 3, 1, donate=False), Case("sib_step", 8, 3, 1, form="gram"),
                  Case("sib_step", 8, 3, 1, inner="vmap", form="gram"),
                  Case("cached_step", 8, 3, 1, form="auto")]
        cases += [Case("sib_step", 1, 3, 1, form="gram"),
                  Case("sib_step", 1, 3, 1, inner="autodiff"),
                  Case("cached_step", 1, 3, 1, per_call=10)]
        cases += [Case("eval", 100, 3, 1, form="auto")]
        cases += [Case("full_step", 1, 3, 1, backbone="conv4", dataset="miniimagenet")]
        cases += [Case("memory_target", 8, 5, 5, backbone="wrn28_10", dataset="miniimagenet")]
        return cases, Budget(round_s=0.3, rounds=4, max_case_s=6.0, eval_episodes=300)
    if mode == "smoke":
        # Compilation dominates: K = 0 and no augmentation keep every compile short.
        dim = 32
        cases = [Case("sib_step", 2, 0, 1, feat_dim=dim),
                 Case("sib_step", 2, 0, 1, feat_dim=dim, inner="scan", donate=False),
                 Case("cached_step", 2, 0, 1, feat_dim=dim, form="auto", per_call=2),
                 Case("sib_step", 2, 1, 1, feat_dim=dim, form="gram"),
                 Case("sib_step", 2, 1, 1, feat_dim=dim, inner="autodiff"),
                 Case("sib_step", 2, 1, 1, feat_dim=dim, inner="vmap", form="gram"),
                 Case("eval", 4, 0, 1, feat_dim=dim),
                 Case("full_step", 1, 0, 1, query=2, backbone="conv4", dataset="omniglot"),
                 Case("memory_target", 2, 0, 1, query=2, backbone="conv4", dataset="omniglot")]
        return cases, Budget(round_s=0.05, rounds=2, max_case_s=1.0, table_rows=200,
                             eval_rows=200, eval_episodes=8, image_rows=30,
                             memory_source_rows=100)
    raise ValueError(f"unknown benchmark mode {mode!r}; use 'full', 'quick' or 'smoke'")


# ---- timing and memory helpers ----------------------------------------------------------------

def memory_stats(compiled: Any) -> dict[str, int]:
    """Byte counts of a compiled executable's memory analysis, and `peak` (see module doc).

    Returns {} when the backend offers no analysis.
    """
    analysis = compiled.memory_analysis()
    if isinstance(analysis, (list, tuple)):  # one entry per device on some versions
        analysis = analysis[0] if analysis else None
    if analysis is None:
        return {}
    stats = {name: int(getattr(analysis, f"{name}_size_in_bytes", 0))
             for name in ("argument", "output", "alias", "temp", "generated_code")}
    stats["peak"] = stats["argument"] + stats["output"] - stats["alias"] + stats["temp"]
    return stats


def compile_with_stats(jitted: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, dict]:
    """(compiled executable, seconds to trace + lower + compile, `memory_stats`).

    `args` may be arrays or `jax.ShapeDtypeStruct`s: nothing runs.
    """
    start = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - start, memory_stats(compiled)


@dataclasses.dataclass(frozen=True)
class Timing:
    median_s: float  # seconds per call, median round
    best_s: float  # seconds per call, fastest round
    calls: int  # timed calls


def time_interleaved(calls: Sequence[Callable[[], Any]], *, round_s: float, rounds: int,
                     max_s: float, blocks: Sequence[Callable[[Any], Any]] | None = None
                     ) -> list[Timing]:
    """Time several calls round by round, interleaved, after one untimed warm-up call each.

    A round of call i runs as many calls as fit in about `round_s` (at least one), judged
    from its warm-up or, when that was quicker than a round, from a few more calls (10% of
    a round, untimed); there are `rounds` rounds, fewer (down to one) when they would take
    more than `max_s` in all. Every call goes through `step_barrier` (it blocks on CPU) and
    each round ends with `blocks[i]` (default `jax.block_until_ready`) on its last result.
    """
    blocks = list(blocks or [jax.block_until_ready] * len(calls))
    estimates = []
    for call, block in zip(calls, blocks, strict=True):
        start = time.perf_counter()
        block(call())  # warm-up: often much slower than the calls after it
        estimate = time.perf_counter() - start
        if estimate < round_s:  # re-estimate from ~10% of a round of steady calls
            start, count = time.perf_counter(), 0
            while True:
                block(step_barrier(call()))
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= 0.1 * round_s or count >= 1000:
                    break
            estimate = elapsed / count
        estimates.append(max(estimate, 1e-7))
    per_round = [max(1, min(int(round_s / e), 100_000)) for e in estimates]
    round_cost = sum(e * n for e, n in zip(estimates, per_round, strict=True))
    rounds = max(1, min(rounds, int(max_s / round_cost)))
    seconds: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, (call, block, n) in enumerate(zip(calls, blocks, per_round, strict=True)):
            start = time.perf_counter()
            out = None
            for _ in range(n):
                out = step_barrier(call())
            block(out)
            seconds[i].append((time.perf_counter() - start) / n)
    return [Timing(statistics.median(s), min(s), rounds * n)
            for s, n in zip(seconds, per_round, strict=True)]


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
            "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
            "load_avg_1min": load, "jax": jax.__version__, "python": platform.python_version()}


# ---- variants of the K synthetic-gradient steps -----------------------------------------------

def autodiff_synthetic_step(params: sib.Params, theta: jax.Array, query_hat: jax.Array, *,
                            lr: float) -> jax.Array:
    """`sib.synthetic_step` with the VJP through the cosine classifier taken by `jax.vjp`,
    as the reference takes it with torch.autograd (and as metaunlab did before writing it
    out): the same values, timed against the closed form."""
    logits, vjp = jax.vjp(lambda t: sib.cosine_logits(params["classifier"], t, query_hat),
                          theta)
    (grad_theta,) = vjp(sib.synthetic_gradient(params, logits))
    return theta - lr * grad_theta


def variant_refine_theta(params: sib.Params, theta: jax.Array, query_feats: jax.Array, *,
                         steps: int, lr: float, inner: str) -> jax.Array:
    """`sib.refine_theta` as variant `inner`: "scan" runs the K steps as a `lax.scan`
    instead of a Python loop; "autodiff" unrolls `autodiff_synthetic_step`."""
    query_hat = sib.l2_normalize(query_feats)
    if inner == "scan":
        def body(theta, _):
            return sib.synthetic_step(params, theta, query_hat, lr=lr), None

        theta, _ = jax.lax.scan(body, theta, None, length=steps)
        return theta
    if inner != "autodiff":
        raise ValueError(f"no K-step variant {inner!r}; use 'scan' or 'autodiff'")
    for _ in range(steps):
        theta = autodiff_synthetic_step(params, theta, query_hat, lr=lr)
    return theta


def variant_apply(params: sib.Params, support_feats: jax.Array, support_labels: jax.Array,
                  query_feats: jax.Array, *, steps: int = 3, lr: float = INNER_LR,
                  inner: str) -> jax.Array:
    """`sib.apply` (direct form) built on `variant_refine_theta`: query logits (Nq, N)."""
    theta = sib.init_theta(params["init"], support_feats, support_labels, sib.n_way_of(params))
    theta = variant_refine_theta(params, theta, query_feats, steps=steps, lr=lr, inner=inner)
    return sib.cosine_logits(params["classifier"], theta, query_feats)


def variant_batch_loss(params: sib.Params, support_feats: jax.Array, support_labels: jax.Array,
                       query_feats: jax.Array, query_labels: jax.Array, *, steps: int,
                       lr: float, inner: str) -> tuple[jax.Array, jax.Array]:
    """`sib.batch_loss` (grad_coeff = 0) on `variant_apply`: (mean loss, logits (B, Nq, N)).
    Episodes are passed as in `sib.batch_loss` (`sib.over_episodes`): only the K steps differ."""
    per_episode = functools.partial(variant_apply, params, steps=steps, lr=lr, inner=inner)
    logits = sib.over_episodes(per_episode, support_feats, support_labels, query_feats)
    return sib.cross_entropy(logits, query_labels), logits


def vmap_batch_loss(params: sib.Params, support_feats: jax.Array, support_labels: jax.Array,
                    query_feats: jax.Array, query_labels: jax.Array, *, steps: int, lr: float,
                    form: str) -> tuple[jax.Array, jax.Array]:
    """`sib.batch_loss` as it ran before episodes became a leading axis: `sib.episode_loss`
    vmapped over episodes, phi differentiated by autodiff (`phi_vjp="autodiff"`)."""
    per_episode = functools.partial(sib.episode_loss, steps=steps, lr=lr,
                                    form=sib.resolve_form(form, support_feats.shape[0]),
                                    phi_vjp="autodiff")
    losses, logits = jax.vmap(per_episode, in_axes=(None, 0, 0, 0, 0))(
        params, support_feats, support_labels, query_feats, query_labels)
    return losses.mean(), logits


def make_sib_step(optimizer: optax.GradientTransformation, *, steps: int,
                  lr: float = INNER_LR, inner: str = "unroll", donate: bool = True,
                  form: str = "direct"):
    """Jitted `step(state, fs, ys, fq, yq) -> (state, loss)`: the SIB meta-training step on
    gathered features (B, Ns, D) / (B, Nq, D), with `metatrain.init_state` states."""
    if inner in ("scan", "autodiff"):
        if form != "direct":
            raise ValueError(f"the {inner} variant is of the direct form only")
        loss_of = functools.partial(variant_batch_loss, inner=inner)
    elif inner in ("unroll", "phi_autodiff"):
        loss_of = functools.partial(sib.batch_loss, form=form,
                                    phi_vjp="manual" if inner == "unroll" else "autodiff")
    elif inner == "vmap":
        loss_of = functools.partial(vmap_batch_loss, form=form)
    else:
        raise ValueError("inner must be 'unroll', 'scan', 'autodiff', 'phi_autodiff' or "
                         f"'vmap', got {inner!r}")

    def step(state, fs, ys, fq, yq):
        def loss_fn(params):
            return loss_of(params, fs, ys, fq, yq, steps=steps, lr=lr)

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        return dict(state, step=state["step"] + 1, opt_state=opt_state,
                    params=optax.apply_updates(state["params"], updates)), loss

    return jax.jit(step, donate_argnums=(0,) if donate else ())


# ---- synthetic data ---------------------------------------------------------------------------

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


# ---- preparing the cases ----------------------------------------------------------------------

@dataclasses.dataclass
class Prepared:
    """A compiled case: `call()` runs one timed unit of `episodes_per_call` episodes
    (None: compile only)."""

    case: Case
    call: Callable[[], Any] | None
    episodes_per_call: int
    compile_s: float | None
    memory: dict[str, int]
    device: str
    block: Callable[[Any], Any] = jax.block_until_ready
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _device() -> str:
    return f"{jax.default_backend()}: {jax.devices()[0].device_kind}"


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
    step = make_sib_step(_optimizer(), steps=case.k, inner=case.inner, donate=case.donate,
                         form=case.form)
    compiled, compile_s, memory = compile_with_stats(step, state, *args)
    return Prepared(case, _train_call(compiled, state, args), case.batch, compile_s, memory,
                    _device())


def prepare_cached_step(case: Case, budget: Budget) -> Prepared:
    labels = _labels(budget.table_rows, case)
    table = jnp.asarray(_features(len(labels), case.feat_dim))
    episodes = metatrain.episodes_as_dict(_episodes(labels, case, case.batch * case.per_call))
    if case.per_call > 1:  # (per_call, B, ...): one batch of B episodes per iteration
        episodes = {k: v.reshape((case.per_call, case.batch) + v.shape[1:])
                    for k, v in episodes.items()}
    state = _fresh_state(case)
    step = metatrain.make_train_step(_optimizer(), steps=case.k, inner_lr=INNER_LR,
                                     form=case.form, steps_per_call=case.per_call)
    args = (None, table, episodes)
    compiled, compile_s, memory = compile_with_stats(step, state, *args)
    return Prepared(case, _train_call(compiled, state, args), case.batch * case.per_call,
                    compile_s, memory, _device())


def prepare_eval(case: Case, budget: Budget) -> Prepared:
    """`episode_accuracies` over `budget.eval_episodes` episodes, `case.batch` per chunk."""
    params = sib.init(jax.random.PRNGKey(0), case.way, case.feat_dim)
    labels = _labels(budget.eval_rows, case, classes=20)
    feats = jnp.asarray(_features(len(labels), case.feat_dim, seed=1))
    episodes = _episodes(labels, case, budget.eval_episodes, seed=1)
    chunk = min(case.batch, budget.eval_episodes)
    # Compile time and memory of the per-chunk function that episode_accuracies jits.
    part = [jnp.asarray(a[:chunk]) for a in (episodes.support_idx, episodes.support_labels,
                                            episodes.query_idx, episodes.query_labels)]
    _, compile_s, memory = compile_with_stats(evaluation._correct_fraction, params, feats,
                                              *part, steps=case.k, lr=INNER_LR,
                                              form=case.form)

    def call():
        return evaluation.episode_accuracies(params, feats, episodes, steps=case.k,
                                             lr=INNER_LR, chunk=chunk, form=case.form)

    return Prepared(case, call, len(episodes), compile_s, memory, _device())


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
                    _device())


def prepare_memory_target(case: Case, budget: Budget) -> Prepared:
    """Compile only, on abstract inputs: does the full step fit in MEMORY_TARGET_BYTES?"""
    step, state, variables, source, episodes = _full_step_inputs(case, budget, abstract=True)
    _, compile_s, memory = compile_with_stats(step, state, variables, source, episodes)
    peak = memory.get("peak")
    extra = {"source_rows": int(source.shape[0]), "target_bytes": MEMORY_TARGET_BYTES,
             "fits_target": None if peak is None else bool(peak <= MEMORY_TARGET_BYTES)}
    return Prepared(case, None, case.batch, compile_s, memory, _device(), extra=extra)


# ---- an independent eager PyTorch transcription of the SIB head step --------------------------

def make_torch_sib_step(params: sib.Params, *, steps: int, lr: float = INNER_LR,
                        outer_lr: float = OUTER_LR):
    """(step, tensors): an eager PyTorch SIB head step on one episode, from the JAX `params`.

    Written from the maths, not from the reference code: theta_0 = class means of the
    L2-normalised support features times w; K times z = scale * (cos(query, theta) + bias),
    theta -= lr * (dz/dtheta)^T phi(z), with phi = Linear-ReLU-BN-Linear-ReLU-BN-Linear (BN
    on batch statistics) and the graph kept (second order); then query cross-entropy,
    backward, and SGD with Nesterov momentum 0.9 and weight decay 5e-4.
    `step(fs, ys, fq, yq)` takes torch tensors and returns the loss before the update;
    `tensors` holds the torch parameters ("w", "scale", "bias", "phi") for inspection.
    Raises ImportError without torch.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    def tensor(x):
        return torch.tensor(np.array(x, np.float32))

    way = sib.n_way_of(params)
    grad_net = params["grad_net"]
    hidden = grad_net["dense1"]["kernel"].shape[1]
    phi = nn.Sequential(nn.Linear(way, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                        nn.Linear(hidden, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                        nn.Linear(hidden, way))
    phi.train()  # BatchNorm on the statistics of the current queries
    with torch.no_grad():
        for index, name in ((0, "dense1"), (3, "dense2"), (6, "dense3")):
            phi[index].weight.copy_(tensor(grad_net[name]["kernel"]).T)  # flax: (in, out)
            phi[index].bias.copy_(tensor(grad_net[name]["bias"]))
        for index, name in ((2, "bn1"), (5, "bn2")):
            phi[index].weight.copy_(tensor(grad_net[name]["scale"]))
            phi[index].bias.copy_(tensor(grad_net[name]["bias"]))
    w = nn.Parameter(tensor(params["init"]["w"]))
    scale = nn.Parameter(tensor(params["classifier"]["scale"]))
    bias = nn.Parameter(tensor(params["classifier"]["bias"]))
    opt = torch.optim.SGD([w, scale, bias, *phi.parameters()], lr=outer_lr, momentum=0.9,
                          weight_decay=5e-4, nesterov=True)

    def step(fs, ys, fq, yq):
        queries = F.normalize(fq, dim=-1, eps=1e-12)

        def logits_of(theta):
            return scale * (queries @ F.normalize(theta, dim=-1, eps=1e-12).T + bias)

        one_hot = F.one_hot(ys, way).to(fs.dtype)
        counts = one_hot.sum(0).clamp_min(1.0)[:, None]
        theta = (one_hot.T @ F.normalize(fs, dim=-1, eps=1e-12)) / counts * w
        for _ in range(steps):
            logits = logits_of(theta)
            (grad_theta,) = torch.autograd.grad(logits, theta, phi(logits), create_graph=True)
            theta = theta - lr * grad_theta
        loss = F.cross_entropy(logits_of(theta), yq)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step, {"w": w, "scale": scale, "bias": bias, "phi": phi}


def prepare_torch_sib_step(case: Case, budget: Budget) -> Prepared | None:
    """The eager PyTorch step (B = 1) on random episodes, or None when torch is missing.

    Sets torch to one intra-op thread for the rest of the process. The head's operations
    are tiny (75 x 640 by 640 x 5), and on the shared 2-core CPU torch's default two-thread
    OpenMP pool made the step erratic whenever anything else was running, the idle XLA
    thread pool of this very process included: 3 ms to over 1 s per step, against a steady
    4-5 ms with one thread. One thread is torch at its best here, so the measured ratio is
    a conservative one.
    """
    del budget
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    step, _ = make_torch_sib_step(sib.init(jax.random.PRNGKey(0), case.way, case.feat_dim),
                                  steps=case.k)
    generator = torch.Generator().manual_seed(0)
    args = (torch.randn(case.way * case.shot, case.feat_dim, generator=generator),
            torch.arange(case.way).repeat_interleave(case.shot),
            torch.randn(case.way * case.query, case.feat_dim, generator=generator),
            torch.arange(case.way).repeat_interleave(case.query))
    device = f"torch {torch.__version__} cpu ({torch.get_num_threads()} thread)"
    return Prepared(case, lambda: step(*args), 1, None, {}, device, block=lambda x: x)


PREPARERS: dict[str, Callable[[Case, Budget], Prepared | None]] = {
    "sib_step": prepare_sib_step,
    "torch_sib_step": prepare_torch_sib_step,
    "cached_step": prepare_cached_step,
    "eval": prepare_eval,
    "full_step": prepare_full_step,
    "memory_target": prepare_memory_target,
}


# ---- running ----------------------------------------------------------------------------------

def _reference_eps(case: Case) -> float | None:
    """Reference episodes/s of the settings the issue quotes a figure for, else None."""
    if (case.way, case.shot, case.k, case.query) != (5, 1, 3, 15):
        return None
    if case.name in ("sib_step", "cached_step", "torch_sib_step") and case.feat_dim == FEAT_DIM:
        return 1.0 / REFERENCE_SIB_STEP_S
    if case.name == "full_step" and case.backbone == "conv4" and case.dataset == "miniimagenet":
        return 1.0 / REFERENCE_CONV4_STEP_S
    return None


def make_record(prepared: Prepared, timing: Timing | None) -> dict[str, Any]:
    case = prepared.case
    per_call = prepared.episodes_per_call
    eps = None if timing is None else per_call / timing.median_s
    reference = _reference_eps(case)
    image_size = None
    if case.dataset:
        transform, stored, _ = DATASETS[case.dataset]
        image_size = transform.output_size(stored)
    record = {
        "name": case.name, "backbone": case.backbone, "dataset": case.dataset or None,
        "image_size": image_size, "feat_dim": None if case.dataset else case.feat_dim,
        "batch": case.batch, "k": case.k, "way": case.way, "shot": case.shot,
        "query": case.query, "inner": case.inner, "donate": case.donate,
        "form": case.form, "per_call": case.per_call,
        "episodes_per_s": eps,
        "best_episodes_per_s": None if timing is None else per_call / timing.best_s,
        # One call: a training step of `batch` episodes, or all eval episodes for "eval".
        "step_ms": None if timing is None else 1e3 * timing.median_s,
        "episodes_per_call": per_call,
        "timed_calls": 0 if timing is None else timing.calls,
        "peak_bytes": prepared.memory.get("peak"),
        "memory": {k: v for k, v in prepared.memory.items() if k != "peak"} or None,
        "compile_s": prepared.compile_s,
        "reference_episodes_per_s": reference,
        "speedup_vs_reference": None if reference is None or eps is None else eps / reference,
        "device": prepared.device,
    }
    record.update(prepared.extra)
    return record


def _group_key(case: Case) -> tuple:
    """Cases timed together: every step on the same 640-d episodes (variants, cached, torch)."""
    if case.name in ("sib_step", "cached_step", "torch_sib_step"):
        return ("features", case.batch, case.k, case.way, case.shot, case.query, case.feat_dim)
    return ("single", case)


def _variant(inner: str, donate: bool, form: str, per_call: int) -> str:
    return ",".join([inner] + ([] if form == "direct" else [form])
                    + ([] if per_call == 1 else [f"{per_call}/call"])
                    + ([] if donate else ["no-donate"]))


def case_label(case: Case) -> str:
    where = case.backbone if case.backbone != "none" else f"{case.feat_dim}-d"
    variant = " " + _variant(case.inner, case.donate, case.form, case.per_call)
    return f"{case.name} {where} B={case.batch} K={case.k} {case.shot}-shot{variant}"


def run(mode: str = "quick", *, only: Iterable[str] | None = None, with_torch: bool = True,
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the `mode` suite (optionally only the named case kinds); returns the records."""
    cases, budget = suite(mode)
    only = set(only or ())
    unknown = only - set(PREPARERS)
    if unknown:
        raise ValueError(f"unknown case names {sorted(unknown)}; known: {sorted(PREPARERS)}")
    cases = [c for c in cases if (not only or c.name in only)
             and (with_torch or c.name != "torch_sib_step")]
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    jax.block_until_ready(jax.jit(lambda x: x + 1)(jnp.zeros(())))  # backend start-up
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        groups.setdefault(_group_key(case), []).append(case)
    records, done = [], 0
    for group in groups.values():
        start = time.perf_counter()
        prepared = []
        for case in group:
            item = PREPARERS[case.name](case, budget)
            if item is None:
                log(f"skipping {case_label(case)}: torch is not importable")
            else:
                prepared.append(item)
        timed = [p for p in prepared if p.call is not None]
        timings = dict(zip(map(id, timed), time_interleaved(
            [p.call for p in timed], round_s=budget.round_s, rounds=budget.rounds,
            max_s=budget.max_case_s * len(timed), blocks=[p.block for p in timed]),
            strict=True)) if timed else {}
        for p in prepared:
            records.append(make_record(p, timings.get(id(p))))
        done += len(group)
        log(f"[{done}/{len(cases)}] {'; '.join(case_label(c) for c in group)}: "
            f"{time.perf_counter() - start:.1f} s")
    return records


# ---- reporting --------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the records."""
    header = ("case", "backbone", "img", "B", "K", "shot", "variant", "episodes/s", "best ep/s",
              "ms/call", "x ref", "peak MiB", "compile s")
    rows = []
    for r in records:
        variant = _variant(r["inner"], r["donate"], r["form"], r["per_call"])
        backbone = r["backbone"] if r["backbone"] != "none" else f"{r['feat_dim']}-d"
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        rows.append((r["name"], backbone, _fmt(r["image_size"], "d"), str(r["batch"]),
                     str(r["k"]), str(r["shot"]), variant, _fmt(r["episodes_per_s"], ".4g"),
                     _fmt(r["best_episodes_per_s"], ".4g"), _fmt(r["step_ms"], ".4g"),
                     _fmt(r["speedup_vs_reference"], ".2f"), _fmt(peak, ".1f"),
                     _fmt(r["compile_s"], ".2f")))
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]
    left = {0, 1, 6}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary(records: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences: speed-ups vs the reference, variants vs unroll+donated, the memory target."""
    lines = []
    for r in records:
        if (r["speedup_vs_reference"] is not None and r["inner"] in ("unroll", "eager")
                and r["donate"]):
            best = r["best_episodes_per_s"] * r["speedup_vs_reference"] / r["episodes_per_s"]
            variant = _variant(r["inner"], r["donate"], r["form"], r["per_call"])
            lines.append(f"{r['name']} ({case_label_of(r)}, {variant}): "
                         f"{r['episodes_per_s']:.4g} episodes/s = "
                         f"{r['speedup_vs_reference']:.2f}x the reference "
                         f"{r['reference_episodes_per_s']:.3g} episodes/s "
                         f"(best round {best:.2f}x)")

    def key(r):
        return (r["batch"], r["k"], r["way"], r["shot"], r["query"], r["feat_dim"])

    base = {(key(r), r["form"]): r for r in records if r["name"] == "sib_step"
            and r["inner"] == "unroll" and r["donate"]}
    for r in records:
        # phi's VJP and vmap are compared within their form; the other variants with direct.
        same_form = r["name"] == "sib_step" and r["inner"] in ("phi_autodiff", "vmap")
        ref = base.get((key(r), r["form"] if same_form else "direct"))
        if ref is None or r is ref or r["name"] not in ("sib_step", "cached_step",
                                                        "torch_sib_step"):
            continue
        if r["name"] == "sib_step":
            what = "+".join({"unroll": [], "scan": ["lax.scan"],
                             "autodiff": ["VJP by jax.vjp"],
                             "phi_autodiff": ["phi's VJP by autodiff"],
                             "vmap": ["vmap over episodes", "phi's VJP by autodiff"]}[r["inner"]]
                            + ([] if r["form"] == "direct" else [f"{r['form']} form"])
                            + ([] if r["donate"] else ["undonated state"]))
        else:
            what = {"cached_step": "make_train_step on the feature table",
                    "torch_sib_step": "eager PyTorch"}[r["name"]]
            if r["name"] == "cached_step":
                what += f" ({r['form']} form, {r['per_call']} iterations per call)"
        text = (f"{what} vs sib_step unroll+{ref['form']}+donated (B={r['batch']}, K={r['k']}, "
                f"{r['shot']}-shot): speed {r['episodes_per_s'] / ref['episodes_per_s']:.2f}x "
                f"(best rounds {r['best_episodes_per_s'] / ref['best_episodes_per_s']:.2f}x)")
        if r["compile_s"] is not None:
            text += f", compile {r['compile_s']:.2f} s vs {ref['compile_s']:.2f} s"
        if r["peak_bytes"] is not None:
            text += f", peak {r['peak_bytes'] / 2**20:.2f} vs {ref['peak_bytes'] / 2**20:.2f} MiB"
        lines.append(text)
    for r in records:
        if r["name"] == "memory_target" and r["peak_bytes"] is not None:
            verdict = "fits" if r["fits_target"] else "does NOT fit"
            lines.append(
                f"memory target: {r['backbone']} at {r['image_size']}x{r['image_size']}, "
                f"B={r['batch']}, K={r['k']}, {r['shot']}-shot, {r['source_rows']} source "
                f"images resident: peak {r['peak_bytes'] / 2**30:.2f} GiB "
                f"(temp {r['memory']['temp'] / 2**30:.2f} GiB) {verdict} in "
                f"{r['target_bytes'] / 2**30:.0f} GiB ({r['device']} executable)")
    return lines


def case_label_of(record: dict[str, Any]) -> str:
    where = record["backbone"] if record["backbone"] != "none" else f"{record['feat_dim']}-d"
    return f"{where}, B={record['batch']}, K={record['k']}, {record['shot']}-shot"
