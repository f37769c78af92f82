"""Runs side by side (`experiments.concurrent_runs`): the children's output, their errors
in the parent, and the choice of how many run at once (`runner.parallel_runs`)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import runner
from experiments.concurrent_runs import _LogFollower, run_concurrently
from experiments.configs.omniglot import get_config as omniglot_config
from metaunlab.data.errors import DataError
from metaunlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_log_follower_shows_each_complete_line_as_the_terminal_last_drew_it(tmp_path):
    log = tmp_path / "log.txt"
    follower = _LogFollower(str(log))
    assert follower.new_lines() == []  # no file yet
    log.write_text("pretrain epoch 1: 90%\n\rbar 10%\rbar 50%\r       \rtest done\nhalf")
    assert follower.new_lines() == ["pretrain epoch 1: 90%", "test done"]
    with log.open("a") as f:
        f.write(" a line\n\r     \r\n")  # the rest of the line; a cleared progress bar
    assert follower.new_lines() == ["half a line"]
    assert follower.new_lines() == []


def test_an_error_in_a_child_is_raised_in_the_parent(tmp_path, capsys):
    configs = {}
    for name in ("a", "b"):
        config = omniglot_config()
        config.data.root = str(tmp_path / "no_such_folder")
        configs[name] = (config, str(tmp_path / name))
    with pytest.raises(DataError, match="no_such_folder"):
        run_concurrently(configs, label="protocol", processes=2)
    out = capsys.readouterr().out
    assert f"protocol a: {tmp_path / 'a'} (log: {tmp_path / 'a' / 'log.txt'})" in out
    assert "no_such_folder" in (tmp_path / "a" / "log.txt").read_text()  # its traceback


def test_how_many_runs_go_at_once():
    assert runner.parallel_runs(1) == 1 and runner.parallel_runs(3) == 3
    expected = 1 if runner._accelerator_plugins() else 2
    assert runner.parallel_runs(0) == expected
    assert runner.parallel_runs(0, distributed=True) == 1
    with pytest.raises(ConfigError, match="--parallel_runs=-1"):
        runner.parallel_runs(-1)
    with pytest.raises(ConfigError, match="--distributed cannot coordinate"):
        runner.parallel_runs(2, distributed=True)


SCRIPT = """
import sys
from experiments.concurrent_runs import RunsPreempted, run_concurrently
from experiments.configs.features import get_config


def main(features, workdir, iterations):
    runs = {}
    for name in ("a", "b"):
        c = get_config()
        c.data.root, c.settings, c.val_episodes = features, "5way_1shot", 20
        c.metatrain.iterations, c.metatrain.batch_size = int(iterations), 2
        c.metatrain.val_every, c.metatrain.log_every, c.test.episodes = 100000, 100, 20
        runs[name] = (c, f"{workdir}/{name}")
    try:
        run_concurrently(runs, label="run", processes=2)
    except RunsPreempted as stop:
        print("PREEMPTED", stop)
        sys.exit(143)
    print("DONE")


if __name__ == "__main__":  # the children import this module again (spawn)
    main(*sys.argv[1:])
"""


@pytest.mark.slow
def test_sigterm_stops_every_child_at_a_checkpoint_and_the_same_command_resumes(tmp_path):
    from tests.test_pipeline import _write_features

    _write_features(tmp_path / "feats.npz")
    script = tmp_path / "runs.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script), str(tmp_path / "feats.npz"), str(tmp_path / "w"),
               "1000000"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / "w" / name / "log.txt" for name in ("a", "b")]
    deadline = time.time() + 240
    while not all(p.exists() and "metatrain_5way_1shot:" in p.read_text() for p in logs):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    for name in ("a", "b"):
        assert re.search(rf"run {name}: metatrain_5way_1shot: stopped by SIGTERM after step "
                         r"\d+ of 1000000", out), out
        assert any((tmp_path / "w" / name / "metatrain" / "5way_1shot" / "last").iterdir())
    # The same runs, now with a schedule that ends, continue from the saved state.
    command[-1] = "2000"
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "DONE" in again.stdout, again.stderr[-3000:]
    for name in ("a", "b"):
        assert (tmp_path / "w" / name / "results.json").is_file()
