"""The training loop shared by pretraining and meta-training: dispatch, logs, validation."""

import jax.numpy as jnp
import numpy as np

from metaunlab import parallel
from metaunlab.metrics import MetricWriter, read_metrics
from metaunlab.train_loop import TrainLoop


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
