"""Stop cleanly on SIGTERM (the preemption notice of TPU VMs, SLURM and Kubernetes).

The training loops ask `PreemptionGuard.should_stop(step)` after every step; when it says
yes they save their full state and raise `Preempted`. The experiment runner turns that into
a one-line message, and rerunning the same command resumes from that step.

One process: a Python SIGTERM handler sets a flag. Many processes: every process must stop
at the same step, or the next step's collectives would wait forever, so the decision is
JAX's preemption sync point (`jax.distributed.initialize` starts a service that catches
SIGTERM on any host and agrees on a step to stop at).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):  # an event the runner reports, not a failure
    """Training stopped on SIGTERM after saving a checkpoint; rerun to resume."""


class PreemptionGuard:
    """Context manager that notices SIGTERM during a training loop.

    Outside a `with` block, and in threads other than the main one (where Python cannot
    install handlers), it never stops; interval checkpoints still bound the lost work.
    """

    def __init__(self) -> None:
        self._requested = False
        self._previous = None
        self._multi_process = jax.process_count() > 1

    def __enter__(self) -> PreemptionGuard:
        if not self._multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self._requested = True  # acted on at the end of the current step

    def should_stop(self, step: int) -> bool:
        """Whether to checkpoint and stop after `step`; called after every step."""
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested


def stop_if_requested(guard: PreemptionGuard, step: int, total: int, last, state,
                      writer, phase: str) -> None:
    """After `step`: on a stop request, make sure `last` holds this step's full state, flush
    the metrics and raise `Preempted` (the loops' common ending on SIGTERM)."""
    if not guard.should_stop(step):
        return
    if last.latest_step() != step:
        last.save(step, state)
    writer.flush()
    raise Preempted(f"{phase}: stopped by SIGTERM after step {step} of {total} and saved "
                    f"{last.directory}; rerun the same command to resume.")
