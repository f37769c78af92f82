"""Safe writes: unique temporary names, nothing partial left behind, one run per work dir,
write errors as one sentence."""

import errno
import os
import subprocess
import sys

import pytest

from metaunlab.errors import ConfigError
from metaunlab.files import WorkdirLock, atomic_path, write_error


def test_atomic_path_is_unique_per_writer_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "results.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second  # two writers never share a temporary file
        open(first, "w").write("one")
        open(second, "w").write("two")
    assert target.read_text() == "one"  # the first to finish is replaced by the second
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        open(partial, "w").write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "one" and os.listdir(tmp_path) == ["results.json"]


def test_a_full_disk_or_read_only_folder_is_one_sentence(tmp_path, monkeypatch):
    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(ConfigError, match=r"no space left on the device of .*x\.json; free"):
        with atomic_path(tmp_path / "x.json") as partial:
            open(partial, "w").write("{}")
    assert os.listdir(tmp_path) == []  # the partial file is gone
    message = str(write_error("/w/config.json", OSError(errno.EROFS, "Read-only file system")))
    assert message == ("cannot write /w/config.json (Read-only file system); use a --workdir "
                       "you may write to.")


def test_one_run_per_work_dir_and_the_lock_of_a_dead_process_does_not_block(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(ConfigError, match=rf"{tmp_path} is in use by process {os.getpid()} "
                                              r"\(started .*\); wait for that run"):
            WorkdirLock(tmp_path).__enter__()
    with WorkdirLock(tmp_path):  # released on exit
        pass
    # A process that took the lock and died (SIGKILL: nothing ran on its way out).
    code = ("import os, sys; from metaunlab.files import WorkdirLock; "
            f"WorkdirLock({str(tmp_path)!r}).__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert "process" in (tmp_path / ".lock").read_text()  # its note is still there
    with WorkdirLock(tmp_path):  # and the lock is free
        pass
    with pytest.raises(ConfigError, match="does not exist"):
        WorkdirLock(tmp_path / "missing").__enter__()
