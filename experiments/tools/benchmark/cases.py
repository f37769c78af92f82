"""The benchmark's cases, budgets and suites (full, quick, smoke)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from metaunlab.data import augment

# ---- reference figures ------------------------------------------------------------------------
# Not measured by this module: the SIB authors' PyTorch code (torch 2.13, CPU) on a 2-core
# CPU machine, one episode per step (the reference never batches episodes); docs/benchmark.md
# measures it beside this suite.
REFERENCE_SIB_STEP_S = 7.6e-3  # SIB head step, 5-way 1-shot, K = 3, 640-d features
REFERENCE_CONV4_STEP_S = 0.470  # full step with Conv-4-64 at 80x80 (taken as 5-way 1-shot K=3)
REFERENCE_SOURCE = "the SIB authors' PyTorch code on a 2-core CPU (docs/benchmark.md)"

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
    # SIB form: direct | gram (sib_step), direct | auto (eval); cached_step is always auto,
    # as meta-training runs it (`sib.apply` picks the form).
    form: str = "direct"
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
        cases += [Case("cached_step", b, 3, 1, form="auto", per_call=n)
                  for b in (1, 8, 32) for n in (1, 10)]
        cases += [Case("eval", 100, 0, 1)] + [Case("eval", 100, 3, s, form=f)
                                              for s in (1, 5) for f in ("direct", "auto")]
        # Conv-4 runs at B = 1, 1-shot only, which keeps the full suite short on a CPU.
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
                  Case("cached_step", 1, 3, 1, form="auto", per_call=10)]
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


def device_name() -> str:
    return f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
