"""Files written safely: atomic replacement under unique temporary names, one run per work
dir, and the operating system's write errors as one sentence.

`atomic_path(path)` gives a temporary file beside `path`, unique to the writer (two writers
never share one), renamed onto `path` only once it is complete and removed if writing fails,
so a reader sees the old file or the new one and a full disk leaves no partial file behind.
`WorkdirLock` holds an exclusive lock on `<workdir>/.lock` for as long as a run writes there;
the operating system releases it when the process ends, however it ends, so a lock left by a
dead process never blocks the next run.

`what_is_at` says what stands at a path that is not what was asked for.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator

from metaunlab.errors import ConfigError


def write_error(path: str, error: OSError, needed_bytes: int | None = None) -> ConfigError:
    """A one-sentence ConfigError for an OSError met writing `path`."""
    if error.errno == errno.ENOSPC:
        need = f" (about {_size(needed_bytes)} needed)" if needed_bytes else ""
        return ConfigError(f"no space left on the device of {path}{need}; free some space or "
                           "point --workdir elsewhere, then rerun to resume.")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ConfigError(f"cannot write {path} ({error.strerror}); use a --workdir you may "
                           "write to.")
    return ConfigError(f"cannot write {path} ({error.strerror or error}); check the folder and "
                       "the disk, then rerun.")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{max(1, nbytes // 1024)} KiB"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a unique temporary path beside `path`; rename it onto `path` when the block ends,
    remove it when the block raises. OSErrors become a one-sentence ConfigError."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    try:
        fd, partial = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".partial{suffix}")
    except OSError as error:
        raise write_error(path, error) from None
    os.close(fd)
    try:
        yield partial
        os.replace(partial, path)
    except OSError as error:
        _remove(partial)
        raise write_error(path, error) from None
    except BaseException:
        _remove(partial)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def what_is_at(path: str | os.PathLike, wanted: str) -> str:
    """Why `path` is not `wanted`, as the end of a sentence that names it.

    Args:
      path: a path that was checked and is not what was asked for.
      wanted: what was asked for, with its article: "a folder", "an image file".

    Returns:
      "is a broken symbolic link to <target>", "is a folder, not <wanted>", "is a file, not
      <wanted>" or "does not exist".
    """
    path = os.fspath(path)
    if os.path.islink(path) and not os.path.exists(path):
        return f"is a broken symbolic link to {os.readlink(path)}"
    if os.path.isdir(path):
        return f"is a folder, not {wanted}"
    if os.path.exists(path):
        return f"is a file, not {wanted}"
    return "does not exist"


class WorkdirLock:
    """`with WorkdirLock(workdir):` an exclusive lock for one run, or a ConfigError naming
    the process that holds it."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.fspath(workdir), ".lock")
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise ConfigError(f"--workdir={folder} does not exist; point it at the work dir "
                              "of a run.")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise write_error(self.path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{os.path.dirname(self.path)} is in use by {holder}; wait for "
                              "that run to end, or use another --workdir.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})"
                 .encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
