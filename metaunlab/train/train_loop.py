"""The training loop shared by pretraining and meta-training.

`TrainLoop.run` drives a jitted step over `total_steps` steps and owns everything around
it: resuming from `<directory>/last`, the progress bar and throughput window, logging,
validation with best-model selection into `<directory>/best`, interval checkpoints and a
clean stop on SIGTERM. A loop's state is a dict pytree holding at least `"step"` and
`"best_accuracy"`; the rest (parameters, optimizer state, RNG) is the caller's.

Checkpoints: the full state is saved to `last` every `checkpoint_every` steps, at every
validation and on SIGTERM, so an interrupted run resumes exactly (the episode and batch
samplers need only the step). `best` holds what `best_of(state)` returns at the best
validation so far.

Dispatch: with `steps_per_call` = S > 1 one call of the step runs S iterations (a
`lax.scan` in the caller's step); a call never crosses a step at which the loop logs,
validates or saves, and single steps fill in where S does not fit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from metaunlab.errors import NonFiniteError
from metaunlab.train import parallel
from metaunlab.train.checkpoints import Checkpointer
from metaunlab.train.metrics import MetricWriter
from metaunlab.train.preemption import PreemptionGuard, stop_if_requested

State = dict[str, Any]
# (state, first step, number of steps) -> (new state, metrics of the call)
Advance = Callable[[State, int, int], tuple[State, dict[str, jax.Array]]]

_SHORT_RATE = {"images": "img_s", "episodes": "ep_s"}


@functools.cache
def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def step_barrier(tree: Any) -> Any:
    """Block until `tree` is computed on CPU backends; a no-op elsewhere.

    On accelerators the loop must run ahead of the device (asynchronous dispatch), so that
    sampling the next batch overlaps the current step. On a CPU backend the device is the
    same few cores, and steps left to queue up compete with the computation's own threads:
    waiting for every step is markedly faster there.
    """
    if _on_cpu():
        jax.block_until_ready(tree)
    return tree


@dataclasses.dataclass
class TrainLoop:
    """One training phase: its checkpoints, cadences and what it logs.

    phase: the name of its metrics records ("pretrain", "metatrain_5way_1shot").
    directory: holds the `last` and `best` checkpoints.
    total_steps: the step to train up to.
    writer: where metrics go.
    mesh: the devices the state is replicated over.
    log_at: whether to log after a step (done steps in, bool out).
    validate_at: whether to validate after a step; also asked for step 0.
    checkpoint_every: save `last` this often (0: only at validation and on SIGTERM).
    items_per_step, items: throughput is logged as `<items>_per_s`.
    steps_per_call: iterations one call of the step may run.
    """

    phase: str
    directory: str
    total_steps: int
    writer: MetricWriter
    mesh: jax.sharding.Mesh
    log_at: Callable[[int], bool]
    validate_at: Callable[[int], bool]
    checkpoint_every: int = 0
    items_per_step: int = 1
    items: str = "episodes"
    steps_per_call: int = 1

    def __post_init__(self) -> None:
        # Two kept: a corrupt latest one (the checksum says so) leaves the one before it.
        # A training phase is the work dir's one writer: what an interrupted save left goes.
        self.last = Checkpointer(os.path.join(self.directory, "last"), max_to_keep=2,
                                 remove_unfinished=True)
        self.best = Checkpointer(os.path.join(self.directory, "best"), remove_unfinished=True)

    def resume(self, state: State) -> State:
        """`state` restored from `last` when there is one, else unchanged. Records this phase
        logged after that step (or, with no checkpoint, at all) are dropped: they are logged
        again, and each step is to appear once."""
        if self.last.latest_step() is None:
            self.writer.forget_after(self.phase, -1)
            return state
        state = self.last.restore(state)
        step = int(state["step"])
        # Logged again from here on (step 0 too: a run at step 0 validates first).
        self.writer.forget_after(self.phase, step if step > 0 else -1)
        tqdm.write(f"{self.phase}: resuming from step {step} of {self.total_steps}")
        return state

    def _must_stop_at(self, done: int) -> bool:
        every = self.checkpoint_every
        return (done >= self.total_steps or self.log_at(done) or self.validate_at(done)
                or bool(every and done % every == 0))

    def _steps_this_call(self, step: int) -> int:
        """`steps_per_call` unless a stop lies strictly inside the call, else 1."""
        n = self.steps_per_call
        if n > 1 and step + n <= self.total_steps and not any(
                self._must_stop_at(s) for s in range(step + 1, step + n)):
            return n
        return 1

    def _diverged(self, done: int, what: str) -> str:
        kept = self.last.latest_step()
        return (f"{self.phase}: {what} is NaN or infinite at step {done}; lower the learning "
                f"rate or check the data (the last checkpoint, "
                f"{'none' if kept is None else f'step {kept}'}, is kept and nothing later is "
                "saved).")

    def _check_finite(self, state: State, done: int) -> None:
        """Refuse to save (or validate) a state holding a NaN or an infinity."""
        leaves = jax.tree_util.tree_leaves(parallel.to_local(state))
        if not all(bool(jnp.all(jnp.isfinite(x))) for x in leaves
                   if jnp.issubdtype(x.dtype, jnp.floating)):
            raise NonFiniteError(self._diverged(done, "a parameter of the training state"))

    def _validate(self, state: State, done: int, validate: Callable[[State], dict],
                  best_of: Callable[[State], Any], describe: Callable[[int], str]) -> State:
        metrics = validate(state)
        accuracy = metrics["accuracy"]
        self.writer.write(f"{self.phase}_val", done, **metrics)
        # A step already checkpointed holds this very state: the run was resumed there (for
        # instance at step 0 of a head imported by experiments.import_torch).
        if accuracy > float(state["best_accuracy"]):
            state["best_accuracy"] = parallel.replicate(np.float32(accuracy), self.mesh)
            if self.best.latest_step() != done:
                self.best.save(done, best_of(state))
        if self.last.latest_step() != done:
            self.last.save(done, state)
        interval = f" +- {metrics['ci95']:.2f}" if "ci95" in metrics else ""
        tqdm.write(f"{self.phase} {describe(done)}: val accuracy {accuracy:.2f}{interval}% "
                   f"(best {float(state['best_accuracy']):.2f}%)")
        return state

    def run(self, state: State, advance: Advance, *, validate: Callable[[State], dict],
            best_of: Callable[[State], Any], describe: Callable[[int], str] = "step {}".format,
            log_extra: Callable[[int], dict] | None = None) -> State:
        """Train from `state["step"]` to `total_steps`; returns the final state.

        advance: runs one call of the jitted step (see `Advance`).
        validate: `{"accuracy": percent, ...}` of a state; every value is logged.
        best_of: what `best` keeps of a state (the parameters, say).
        describe: names a step in messages ("step 500", "epoch 3").
        log_extra: more scalars for the log record of a call, from its first step.

        Raises `Preempted` after saving `last` when the process receives SIGTERM.
        """
        start = int(state["step"])
        if start == 0 and self.validate_at(0):
            state = self._validate(state, 0, validate, best_of, describe)
        progress = _Progress(self.phase, start, self.total_steps, self.items_per_step,
                             self.items)
        rate = f"{self.items}_per_s"
        done = start
        with PreemptionGuard() as guard:
            while done < self.total_steps:
                step = done
                count = self._steps_this_call(step)
                state, metrics = step_barrier(advance(state, step, count))
                done = step + count
                progress.update(count)
                if self.log_at(done):
                    metrics = {k: float(v) for k, v in metrics.items()}
                    if not np.isfinite(metrics["loss"]):
                        raise NonFiniteError(self._diverged(done, "the training loss"))
                    extra = log_extra(step) if log_extra else {}
                    per_s = progress.rate()
                    rates = {} if per_s is None else {rate: per_s}
                    self.writer.write(self.phase, done, **extra, **rates, **metrics)
                    progress.log(done, metrics["loss"], metrics["accuracy"], per_s)
                if self.validate_at(done):
                    self._check_finite(state, done)
                    state = self._validate(state, done, validate, best_of, describe)
                elif self.checkpoint_every and done % self.checkpoint_every == 0:
                    self._check_finite(state, done)
                    self.last.save(done, state)
                stop_if_requested(guard, done, self.total_steps, self.last, state,
                                  self.writer, self.phase)
        progress.close()
        self.writer.flush()
        return state


class _Progress:
    """What a training phase shows of its progress: a bar on a terminal, else one line per log
    step. Compilation is timed apart: the first call of a phase (or of a resumed phase)
    compiles the step, so it is reported once, and the throughput and the time left count
    only the calls after it."""

    def __init__(self, phase: str, start: int, total: int, items_per_step: int, items: str):
        self.phase, self.total = phase, total
        self.items_per_step, self.items = items_per_step, items
        self.shown = parallel.is_primary()
        # disable=None: tqdm draws the bar only when stderr is a terminal.
        self.bar = tqdm(total=total, initial=start, desc=phase, unit="step",
                        disable=None if self.shown else True)
        self.started = time.perf_counter()
        self.first_call = True
        self.window_start, self.window_items = self.started, 0
        self.steady_start, self.steady_steps = self.started, 0

    def update(self, count: int) -> None:
        now = time.perf_counter()
        if self.first_call:
            self.first_call = False
            if self.shown:
                tqdm.write(f"{self.phase}: first call (compiling the step) took "
                           f"{now - self.started:.1f} s")
            self.window_start = self.steady_start = now
            # The bar's clock starts after compilation too, so its rate and time left are the
            # steady ones.
            self.bar.update(count)
            self.bar.start_t = self.bar.last_print_t = time.time()  # tqdm's clock
            self.bar.initial = self.bar.n
            return
        self.bar.update(count)
        self.window_items += self.items_per_step * count
        self.steady_steps += count

    def rate(self) -> float | None:
        """Items per second since the last log step, compilation excluded (None right after
        the first call: nothing has been timed yet)."""
        if not self.window_items:
            return None
        per_s = self.window_items / (time.perf_counter() - self.window_start)
        self.window_start, self.window_items = time.perf_counter(), 0
        return per_s

    def log(self, done: int, loss: float, accuracy: float, per_s: float | None) -> None:
        short = _SHORT_RATE.get(self.items, f"{self.items}_per_s")
        speed = {} if per_s is None else {short: f"{per_s:.0f}"}
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.1f}%", **speed)
        elif self.shown:
            line = f"{self.phase} step {done}/{self.total}: loss {loss:.3f}, acc {accuracy:.1f}%"
            if per_s is not None:
                line += f", {per_s:.0f} {self.items}/s"
            if self.steady_steps:
                left = (self.total - done) * (time.perf_counter() - self.steady_start) \
                    / self.steady_steps
                line += f", {_clock(left)} left"
            tqdm.write(line)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
