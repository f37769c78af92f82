"""Runs side by side (`experiments.concurrent_runs`): the children's output, their errors
in the parent, and the choice of how many run at once (`runner.parallel_runs`)."""

import pytest

from experiments import runner
from experiments.concurrent_runs import _LogFollower, run_concurrently
from experiments.configs.omniglot import get_config as omniglot_config
from metaunlab.data.errors import DataError
from metaunlab.errors import ConfigError


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
