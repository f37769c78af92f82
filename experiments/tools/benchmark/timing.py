"""Timing and memory measurement: ahead-of-time compilation, interleaved timing rounds."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from metaunlab.train.train_loop import step_barrier


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
