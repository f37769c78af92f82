"""Speed and memory benchmarks of meta-training and evaluation (`python -m experiments.benchmark`).

Every case is compiled ahead of time (`jax.jit(f).lower(...).compile()`), which gives the
compile time and XLA's memory analysis of the executable without running it; timed cases
then run the compiled step in a loop. Records are flat dicts, one per case:

    {"name": "sib_step", "backbone": "none", "batch": 1, "k": 3, "way": 5, "shot": 1,
     "episodes_per_s": ..., "peak_bytes": ..., "compile_s": ..., ...}

Cases (`name`):
  sib_step       the SIB meta-training step on features already gathered into (B, Ns, D)
                 arrays: K synthetic-gradient steps, query cross-entropy, meta-gradient, SGD
                 update. `inner` is "unroll" (`sib` itself) or one of the variants of
                 `variants.py` (scan, autodiff, phi_autodiff, vmap); `form` is the SIB
                 form, "direct" or "gram" (`metaunlab._unrolled`);
                 `donate` says whether the training state is donated to the step.
  cached_step    `metatrain.make_train_step` on a device-resident feature table (the whole
                 train split) gathered by index inside the step: meta-training on cached
                 features, `per_call` iterations of B episodes per dispatched call
                 (`steps_per_call`), the SIB form chosen by `sib.apply`.
  eval           `evaluation.evaluate` of a SIB head: test episodes per second, in the
                 form `sib.apply` chooses ("auto") or the direct form.
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
`train_loop.step_barrier` (as in the training loop: CPU steps left to queue run slower);
on accelerators steps are dispatched asynchronously and each round ends with one block.

Peak memory is `argument + output - alias + temp` bytes from `Compiled.memory_analysis()`:
the buffers the executable reads, writes and uses as scratch, where an output that reuses a
donated argument's buffer (alias) is counted once. Without donation alias is 0 and this is
plainly temp + argument + output. It is XLA's static figure for the backend the benchmark
runs on (so on CPU it is the CPU executable's), without allocator overheads.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from metaunlab.errors import ConfigError

from .cases import (
    DATASETS,
    FEAT_DIM,
    REFERENCE_CONV4_STEP_S,
    REFERENCE_SIB_STEP_S,
    REFERENCE_SOURCE,
    Budget,
    Case,
    Prepared,
    suite,
)
from .prepare import (
    prepare_cached_step,
    prepare_eval,
    prepare_full_step,
    prepare_memory_target,
    prepare_sib_step,
)
from .timing import Timing, environment, time_interleaved
from .torch_step import prepare_torch_sib_step

__all__ = ["REFERENCE_CONV4_STEP_S", "REFERENCE_SIB_STEP_S", "REFERENCE_SOURCE",
           "environment", "format_table", "run", "summary"]

PREPARERS: dict[str, Callable[[Case, Budget], Prepared | None]] = {
    "sib_step": prepare_sib_step,
    "torch_sib_step": prepare_torch_sib_step,
    "cached_step": prepare_cached_step,
    "eval": prepare_eval,
    "full_step": prepare_full_step,
    "memory_target": prepare_memory_target,
}


def _reference_eps(case: Case) -> float | None:
    """Reference episodes/s of the settings with a reference figure (cases.py), else None."""
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
        raise ConfigError(f"--only names unknown cases {sorted(unknown)}; use some of "
                          f"{sorted(PREPARERS)}.")
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
