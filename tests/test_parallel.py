"""The sharded train steps and multi-process runs: 4 fake CPU devices follow the 1-device
trajectory, and two processes on localhost (2 CPU devices each) train like one process, with
only process 0 writing the shared work directory's files.

The test process has already initialised JAX with one CPU device, so the 4-device and the
two-process runs are subprocesses (tests/_tiny_run.py) with
XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""

import json
import socket
import subprocess
import types

import numpy as np
import pytest

from metaunlab.train import parallel
from metaunlab.train.metrics import read_metrics
from tests import _tiny_run


@pytest.mark.slow
def test_four_devices_follow_the_one_device_trajectory(tmp_path, run_tiny, saved_leaves):
    run_tiny([tmp_path / "four", tmp_path / "four.npz", "--iterations", 8,
              "--pretrain-steps", 3], devices=4)
    info = json.loads((tmp_path / "four.json").read_text())
    assert info["devices"] == 4
    # The step really receives its episodes split over the 4 devices, one episode each.
    assert info["sharding"]["spec"] == "P('data',)"
    assert info["sharding"]["devices"] == 4
    assert info["sharding"]["shard_rows"] == [1]

    one = _tiny_run.leaves(_tiny_run.run_meta_train(str(tmp_path / "one"), 8, 0))
    one += _tiny_run.leaves(_tiny_run.run_pretrain_steps(3))
    four = saved_leaves(tmp_path / "four.npz")
    assert len(four) == len(one)
    for a, b in zip(one, four, strict=True):
        # Only the order of the cross-device sums differs.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batch_size_must_split_over_the_devices():
    mesh = types.SimpleNamespace(size=4)
    parallel.check_batch_size(8, mesh, "--config.metatrain.batch_size")
    with pytest.raises(ValueError, match=r"batch_size=6 must be a positive multiple of the 4"):
        parallel.check_batch_size(6, mesh, "--config.metatrain.batch_size")


def test_one_process_holds_every_row_of_the_batch():
    assert parallel.process_rows(4, parallel.data_mesh()) == range(0, 4)


# ---- two processes ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # CI runs it: make test-e2e
def test_two_processes_train_like_one_and_only_process_0_writes(tmp_path, run_tiny, saved_leaves):
    workdir, port = tmp_path / "two", _free_port()
    procs = [run_tiny([workdir, tmp_path / f"p{i}.npz", "--iterations", 8,
                       "--coordinator", f"localhost:{port}", "--num-processes", 2,
                       "--process-id", i], devices=2,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()  # no-op when it has exited; never leave a process waiting for its peer
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]

    infos = [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]
    assert [(i["processes"], i["devices"], i["process_index"]) for i in infos] == [
        (2, 4, 0), (2, 4, 1)]
    # Each process contributes its own half of every global batch of 4 episodes.
    assert [i["sharding"]["rows"] for i in infos] == [[0, 2], [2, 4]]
    assert infos[0]["sharding"]["devices"] == 4

    p0, p1 = saved_leaves(tmp_path / "p0.npz"), saved_leaves(tmp_path / "p1.npz")
    for a, b in zip(p0, p1, strict=True):
        np.testing.assert_array_equal(a, b)  # replicated: the same bits on every process
    one = _tiny_run.leaves(_tiny_run.run_meta_train(str(tmp_path / "one"), 8, 0))
    for a, b in zip(one, p0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # One writer: the same records as the single-process run, not two copies of each.
    def records(path):
        return [(r["phase"], r["step"]) for r in read_metrics(path)]

    assert records(workdir) == records(tmp_path / "one")
    assert len(list((workdir / "tensorboard").iterdir())) == 1
    assert json.loads((workdir / "results.json").read_text()) == {"written_by_process": 0}
