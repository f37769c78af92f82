"""Files written safely and read back safely: atomic replacement under unique temporary
names, one run per work dir, the operating system's errors as one sentence.

`atomic_path(path)` gives a temporary file beside `path`, unique to the writer (two writers
never share one), renamed onto `path` only once it is complete and removed if writing fails,
so a reader sees the old file or the new one and a full disk leaves no partial file behind.
The file gets the mode a plain `open` would give it (0666 less the umask), or the mode of
the file it replaces, so a work dir stays readable to the colleagues its folder lets in.
A process killed while writing leaves its temporary file; `WorkdirLock` holds an exclusive
lock (`filelock`) on `<workdir>/.lock` for as long as a run writes there, and removes such
files when it is taken (a run that holds the lock is the only writer, so none of them is
being written). The operating system releases the lock when the process ends, however it
ends, so a lock left by a dead process never blocks the next run.

`read_json_object` reads a JSON file the project wrote, and says in one sentence what to
do when it is damaged; `what_is_at` says what stands at a path that is not what was asked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import filelock
from absl import logging

from metaunlab.errors import ConfigError, shown

# The names of `atomic_path`'s temporary files: ".<name>.<tempfile's 8 random characters>
# .partial<suffix>".
_PARTIAL_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.partial[^/]*")


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
        _give_mode(partial, path)
        os.replace(partial, path)
    except OSError as error:
        _remove(partial)
        raise write_error(path, error) from None
    except BaseException:
        _remove(partial)
        raise


def _give_mode(partial: str, path: str) -> None:
    """Give `partial` (which mkstemp made 0600, private to its owner) the permission bits of
    the file `path` it replaces (through a symbolic link), else those `open` gives a new
    file: 0666 less the umask. Set once the file is written: a read-only target stays
    read-only, and its replacement could not be written with those bits."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    with contextlib.suppress(OSError):  # a file system without modes keeps its own
        os.chmod(partial, mode)


_PROC_STATUS = "/proc/self/status"


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (since 4.7).

    Elsewhere `os.umask` reads it only by setting another one and back; a thread of this
    process creating a file in between gets the placeholder, so the placeholder is the
    strictest sensible mask (0077: private to the owner), never a laxer one.
    """
    with contextlib.suppress(OSError, ValueError):
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def remove_partial_files(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files of `atomic_path` below `folder` (symbolic links are not
    followed), each named in a warning: what a process killed while writing leaves. Only
    the holder of the folder's `WorkdirLock` may call it, when no other writer is there.

    Returns:
      The paths removed.
    """
    removed = []
    for root, _, names in os.walk(folder):
        for name in names:
            if _PARTIAL_NAME.fullmatch(name):
                path = os.path.join(root, name)
                _remove(path)
                removed.append(path)
                logging.warning("removed %s, the temporary file of a write that was "
                                "interrupted", shown(path))
    return removed


def read_json_object(path: str | os.PathLike, what_to_do: str) -> dict[str, Any]:
    """The JSON object (a dict) in the file `path`, which metaunlab wrote.

    Args:
      path: the file.
      what_to_do: the end of the error message's sentence, for a file that cannot be read,
        is damaged (a torn or edited file) or holds another JSON type.

    Returns:
      The object.

    Raises:
      ConfigError: one sentence naming the file and ending with `what_to_do`.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except OSError as error:
        raise ConfigError(f"cannot read {path} ({error.strerror or error}); "
                          f"{what_to_do}.") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path} is damaged, not valid JSON ({error}); "
                          f"{what_to_do}.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} holds a JSON {type(value).__name__}, not the object "
                          f"metaunlab writes there; {what_to_do}.")
    return value


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
    the process that holds it. Once taken, the temporary files that interrupted writes left
    in the work dir are removed (`remove_partial_files`)."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.fspath(workdir), ".lock")
        # timeout=0: a held lock is refused at once; filelock's lock is the operating
        # system's, so it is released when the process ends, however it ends.
        self._lock = filelock.FileLock(self.path, timeout=0)

    def __enter__(self) -> WorkdirLock:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise ConfigError(f"--workdir={folder} does not exist; point it at the work dir "
                              "of a run.")
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = _read_holder(self.path) or "another process"
            raise ConfigError(f"{folder} is in use by {holder}; wait for that run to end, or "
                              "use another --workdir.") from None
        except OSError as error:
            raise write_error(self.path, error) from None
        # Who holds it, for the message another run gets (the lock itself is the flock).
        with contextlib.suppress(OSError), open(self.path, "w") as f:
            f.write(f"process {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        remove_partial_files(folder)
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()


def _read_holder(path: str) -> str:
    with contextlib.suppress(OSError):
        with open(path, errors="replace") as f:
            return f.read(200).strip()
    return ""
