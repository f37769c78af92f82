"""Preemption: a run stopped by SIGTERM, or killed outright, resumes to the same bits.

The run to interrupt is a subprocess (tests/_tiny_run.py); the test waits until it has
written an interval checkpoint, signals it, and then resumes it in this process.
"""

import re
import signal
import subprocess
import time

import chex
import numpy as np
import pytest

from tests import _tiny_run

ITERATIONS, CHECKPOINT_EVERY = 200, 4


def _checkpoint_steps(workdir) -> list[int]:
    """Complete checkpoints of `last` (orbax renames a finished save to its step number)."""
    last = workdir / "mt" / "last"
    return sorted(int(p.name) for p in last.iterdir() if p.name.isdigit()) if last.is_dir() \
        else []


def _start_and_interrupt(run_tiny, workdir, out, sig, after_step):
    """Start a run, send `sig` once it has checkpointed past `after_step`; its output."""
    proc = run_tiny([workdir, out, "--iterations", ITERATIONS, "--checkpoint-every",
                     CHECKPOINT_EVERY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
    try:
        deadline = time.monotonic() + 240
        while not any(s > after_step for s in _checkpoint_steps(workdir)):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "no interval checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(sig)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    return proc.returncode, output


def _uninterrupted(tmp_path):
    # Without checkpoints: the interrupted run must end where a run that never saved does.
    return _tiny_run.run_meta_train(str(tmp_path / "straight"), ITERATIONS, 0)


@pytest.mark.slow  # CI runs it: make test-e2e
def test_sigterm_saves_the_current_step_and_the_rerun_ends_bitwise_equal(tmp_path, run_tiny):
    workdir = tmp_path / "term"
    code, output = _start_and_interrupt(run_tiny, workdir, tmp_path / "term.npz", signal.SIGTERM, 0)
    assert code == 143, output[-3000:]
    stopped = re.search(r"stopped by SIGTERM after step (\d+) of 200", output)
    assert stopped, output[-3000:]
    step = int(stopped[1])
    assert step < ITERATIONS
    # The stop saved that very step, not just the last interval checkpoint.
    assert _checkpoint_steps(workdir)[-1] == step

    resumed = _tiny_run.run_meta_train(str(workdir), ITERATIONS, CHECKPOINT_EVERY)
    chex.assert_trees_all_equal(resumed, _uninterrupted(tmp_path))


@pytest.mark.slow
def test_sigkill_resumes_from_the_last_interval_checkpoint_bitwise_equal(tmp_path, run_tiny):
    workdir = tmp_path / "kill"
    code, _ = _start_and_interrupt(run_tiny, workdir, tmp_path / "kill.npz", signal.SIGKILL,
                                   2 * CHECKPOINT_EVERY)
    assert code == -signal.SIGKILL
    steps = _checkpoint_steps(workdir)
    assert steps and steps[-1] % CHECKPOINT_EVERY == 0 and steps[-1] < ITERATIONS

    resumed = _tiny_run.run_meta_train(str(workdir), ITERATIONS, CHECKPOINT_EVERY)
    straight = _uninterrupted(tmp_path)
    chex.assert_trees_all_equal(resumed, straight)
    # The comparison has teeth: the first half of training alone ends elsewhere.
    half = _tiny_run.run_meta_train(str(tmp_path / "half"), ITERATIONS // 2, 0)
    assert not all(np.array_equal(a, b) for a, b in zip(
        _tiny_run.leaves(half), _tiny_run.leaves(straight), strict=True))
