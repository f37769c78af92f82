"""The training loop shared by pretraining and meta-training: dispatch, logs, validation."""

import re
import time

import jax.numpy as jnp
import numpy as np

from metaunlab.train import parallel
from metaunlab.train.metrics import MetricWriter, read_metrics
from metaunlab.train.train_loop import TrainLoop


def _loop(tmp_path, steps_per_call, checkpoint_every=0):
    writer = MetricWriter(tmp_path)
    loop = TrainLoop("phase", str(tmp_path / "ckpt"), 23, writer, parallel.data_mesh(),
                     log_at=lambda done: done % 5 == 0,
                     validate_at=lambda done: done % 10 == 0 or done == 23,
                     checkpoint_every=checkpoint_every, items_per_step=2,
                     steps_per_call=steps_per_call)
    return loop, writer


def _run(loop, calls, accuracies):
    def advance(state, step, count):
        calls.append((step, count))
        assert int(state["step"]) == step
        return dict(state, step=state["step"] + count), {"loss": jnp.float32(1.0),
                                                         "accuracy": jnp.float32(0.5)}

    def validate(state):
        return {"accuracy": accuracies[int(state["step"])]}

    state = {"step": jnp.asarray(0, jnp.int32), "best_accuracy": jnp.asarray(-1.0),
             "value": jnp.zeros(3)}
    state = loop.resume(parallel.replicate(state, loop.mesh))
    return loop.run(state, advance, validate=validate, best_of=lambda s: {"value": s["value"]})


def test_calls_never_cross_a_log_validation_or_checkpoint_step(tmp_path):
    loop, writer = _loop(tmp_path, steps_per_call=3)
    calls = []
    state = _run(loop, calls, {0: 10.0, 10: 30.0, 20: 20.0, 23: 25.0})
    writer.close()
    assert calls == [(0, 3), (3, 1), (4, 1), (5, 3), (8, 1), (9, 1), (10, 3), (13, 1), (14, 1),
                     (15, 3), (18, 1), (19, 1), (20, 3)]
    assert int(state["step"]) == 23
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records if r["phase"] == "phase"] == [5, 10, 15, 20]
    assert [r["step"] for r in records if r["phase"] == "phase_val"] == [0, 10, 20, 23]
    assert all(r["episodes_per_s"] > 0 for r in records if r["phase"] == "phase")
    # best keeps the step of the best validation; last the final step.
    assert loop.best.latest_step() == 10 and loop.last.latest_step() == 23
    assert float(state["best_accuracy"]) == 30.0


def test_one_step_per_call_and_interval_checkpoints_resume(tmp_path):
    loop, writer = _loop(tmp_path, steps_per_call=1, checkpoint_every=7)
    calls = []
    _run(loop, calls, dict.fromkeys((0, 10, 20, 23), 50.0))
    writer.close()
    assert calls == [(s, 1) for s in range(23)]
    # A second loop on the same directory resumes from `last` and has nothing left to do.
    again, writer = _loop(tmp_path, steps_per_call=1, checkpoint_every=7)
    more = []
    state = _run(again, more, {})
    writer.close()
    assert more == [] and int(state["step"]) == 23
    np.testing.assert_array_equal(np.asarray(again.best.restore()["value"]), np.zeros(3))


def test_resuming_logs_each_step_once(tmp_path):
    """Killed after step 16 (checkpoints at 10 and 14), then rerun: the steps between the
    last checkpoint and the kill are logged once, not twice."""
    import pytest

    loop, writer = _loop(tmp_path, steps_per_call=1, checkpoint_every=7)

    def killed(state, step, count):
        if step == 16:
            raise KeyboardInterrupt
        return dict(state, step=state["step"] + count), {"loss": jnp.float32(1.0),
                                                         "accuracy": jnp.float32(50.0)}

    state = parallel.replicate({"step": jnp.asarray(0, jnp.int32),
                                "best_accuracy": jnp.asarray(-1.0), "value": jnp.zeros(3)},
                               loop.mesh)
    with pytest.raises(KeyboardInterrupt):
        loop.run(state, killed, validate=lambda s: {"accuracy": 50.0},
                 best_of=lambda s: {"value": s["value"]})
    assert loop.last.latest_step() == 14
    assert ("phase", 15) in [(r["phase"], r["step"]) for r in read_metrics(tmp_path)]
    again, writer = _loop(tmp_path, steps_per_call=1, checkpoint_every=7)
    _run(again, [], dict.fromkeys((0, 10, 20, 23), 50.0))
    writer.close()
    steps = [(r["phase"], r["step"]) for r in read_metrics(tmp_path)]
    assert len(steps) == len(set(steps)), steps  # nothing logged twice
    assert sorted(steps) == sorted([("phase", s) for s in (5, 10, 15, 20)]
                                   + [("phase_val", s) for s in (0, 10, 20, 23)])


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_saves_nothing_after(tmp_path):
    import pytest

    from metaunlab.errors import NonFiniteError

    loop, writer = _loop(tmp_path, steps_per_call=1, checkpoint_every=0)

    def advance(state, step, count):
        loss = jnp.float32(jnp.nan if step >= 12 else 1.0)
        return dict(state, step=state["step"] + count), {"loss": loss,
                                                         "accuracy": jnp.float32(50.0)}

    state = parallel.replicate({"step": jnp.asarray(0, jnp.int32),
                                "best_accuracy": jnp.asarray(-1.0), "value": jnp.zeros(3)},
                               loop.mesh)
    with pytest.raises(NonFiniteError, match=r"phase: the training loss is NaN or infinite at "
                                             r"step 15; .*the last checkpoint, step 10, is kept"):
        loop.run(state, advance, validate=lambda s: {"accuracy": 1.0},
                 best_of=lambda s: {"value": s["value"]})
    writer.close()
    assert loop.last.latest_step() == 10


def test_piped_output_gets_a_line_per_log_step_and_compilation_is_timed_apart(tmp_path,
                                                                             capsys):
    """The first call stands for compilation (1 s; later calls 1 ms): it is reported once,
    and neither the logged throughput nor the time left counts it. Output that is not a
    terminal (here pytest's capture) gets lines, not progress-bar frames."""
    loop, writer = _loop(tmp_path, steps_per_call=1)

    def advance(state, step, count):
        time.sleep(1.0 if step == 0 else 0.001)
        return dict(state, step=state["step"] + count), {"loss": jnp.float32(1.0),
                                                         "accuracy": jnp.float32(0.5)}

    state = {"step": jnp.asarray(0, jnp.int32), "best_accuracy": jnp.asarray(-1.0)}
    loop.run(parallel.replicate(state, loop.mesh), advance,
             validate=lambda s: {"accuracy": 1.0}, best_of=lambda s: {"step": s["step"]})
    writer.close()
    captured = capsys.readouterr()
    err = captured.out + captured.err
    assert "\r" not in err and "it/s" not in err  # no bar frames
    compiling = re.findall(r"phase: first call \(compiling the step\) took (\S+) s", err)
    assert len(compiling) == 1 and float(compiling[0]) >= 1.0
    lines = re.findall(r"phase step (\d+)/23: loss 1\.000, acc 0\.5%, (\d+) episodes/s, "
                       r"0:(\d\d) left", err)
    assert [int(step) for step, _, _ in lines] == [5, 10, 15, 20]
    # Counting the first call, the first window (steps 1 to 5, 2 episodes each) could not
    # exceed 10 episodes/s, and the 18 steps left would be estimated at 4 s or more.
    _, first_rate, first_left = lines[0]
    assert int(first_rate) > 20 and int(first_left) <= 1
    rates = [r["episodes_per_s"] for r in read_metrics(tmp_path) if r["phase"] == "phase"]
    assert len(rates) == 4 and rates[0] > 20
