"""Several pipeline runs (protocols, folds) at once, each in its own process.

On a CPU machine one run keeps well under 2 cores busy (much of a step is Python and small
XLA ops; docs/benchmark.md, "Where the time goes"), so two runs side by side finish sooner
than one after the other; the results are the same to the bit. Each child writes its output
to `<its workdir>/log.txt`; the parent prints the children's lines as they come (progress
bars left out), prefixed with the run's name. SIGTERM to the parent is passed on: every
child saves its state and stops, and the parent exits as a preempted run does. A child's
error stops the others the same way (nothing is lost) and is raised in the parent.

Children are spawned (a fresh interpreter each, which imports the calling script again): a
script that calls `run_concurrently` keeps its work under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping


class RunsPreempted(Exception):
    """A child stopped on SIGTERM after saving its state."""


def _child(config, workdir: str, log_path: str, conn) -> None:
    """Runs in the child process: the pipeline, its output into `log_path`, and the
    outcome sent back on `conn`."""
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    from metaunlab.train.pipeline import train_and_evaluate
    from metaunlab.train.preemption import Preempted

    try:
        conn.send(("ok", train_and_evaluate(config, workdir)))
    except Preempted as stop:
        conn.send(("preempted", str(stop)))
    except BaseException as error:
        try:
            conn.send(("error", error))
        except Exception:
            conn.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class _LogFollower:
    """The complete lines a child has written since the last call, each as the terminal
    would show it last (after its final carriage return); blank ones, cleared progress
    bars, are left out."""

    def __init__(self, path: str):
        self.path, self.offset, self.partial = path, 0, b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:  # bytes: a character may be half written
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        shown = [line.decode("utf-8", "replace").rsplit("\r", 1)[-1].rstrip()
                 for line in lines]
        return [line for line in shown if line.strip()]


def run_concurrently(runs: Mapping, *, label: str, processes: int) -> dict:
    """`train_and_evaluate(config, workdir)` for each `name: (config, workdir)`, at most
    `processes` at a time; the results by name, in the order of `runs`."""
    context = multiprocessing.get_context("spawn")  # a fresh JAX in every child
    pending = list(runs.items())
    running: dict = {}  # name -> (process, connection, follower)
    results, failure, stopped, preempted = {}, None, False, []

    def stop_all(*_):
        nonlocal stopped
        stopped = True
        pending.clear()
        for process, _, _ in running.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop_all)
    try:
        while pending or running:
            while pending and len(running) < processes:
                name, (config, workdir) = pending.pop(0)
                os.makedirs(workdir, exist_ok=True)
                log_path = os.path.join(workdir, "log.txt")
                print(f"{label} {name}: {workdir} (log: {log_path})", flush=True)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(config, workdir, log_path, send),
                                          name=f"{label}-{name}")
                process.start()
                send.close()
                running[name] = (process, receive, _LogFollower(log_path))
            time.sleep(0.5)
            for name in list(running):
                process, receive, follower = running[name]
                for line in follower.new_lines():
                    print(f"[{name}] {line}", flush=True)
                if process.is_alive():
                    continue
                process.join()
                try:
                    kind, value = receive.recv()
                except EOFError:  # it ended without a word: killed
                    kind, value = "error", RuntimeError(
                        f"the {label} {name} process ended with status {process.exitcode} "
                        f"without a result; see {follower.path}.")
                    if stopped and process.exitcode == -signal.SIGTERM:
                        # SIGTERM outside a training loop ends a run at once; every stage
                        # before it is checkpointed.
                        kind, value = "preempted", ("stopped between stages; rerun to "
                                                    "resume from its last checkpoint")
                del running[name]
                if kind == "ok":
                    results[name] = value
                elif kind == "preempted":
                    preempted.append(f"{label} {name}: {value}")
                elif failure is None:
                    failure = value
                    stop_all()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failure is not None:
        raise failure
    if stopped or preempted:
        raise RunsPreempted("; ".join(preempted) or "SIGTERM before any run had started")
    return {name: results[name] for name in runs}
