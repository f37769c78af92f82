"""Files and folders a command writes where the user says: checked before any work, never one
of the command's inputs, written atomically through symlinks with the user's umask.

    check_output_file(out, "--output", inputs=[("work dir", workdir)])   # before any work
    ...
    with output_file(out) as partial, open(partial, "w") as f:              # after it
        f.write(text)

An output is refused (one `ConfigError` sentence) when it is, or resolves to (symlinks, `..`),
one of the command's inputs or lies inside an input folder, when its folder does not exist or
cannot be written to (tried with a probe file, removed at once: permission bits alone do not
tell for root, a read-only mount or `/proc`), and when it is an existing folder. A symlink is
written through: its target gets the new content and the link stays. A new file is created
0666 less the umask (0644 usually), as `open` would; a replaced file keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator

from metaunlab.errors import ConfigError
from metaunlab.files import atomic_path

# (what it is, in words; its path): an input a command reads, e.g. ("query folder", "q/").
Input = tuple[str, "str | os.PathLike"]


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_not_an_input(path: str | os.PathLike, flag: str, inputs: Iterable[Input]) -> None:
    """Refuse an output that is, or resolves to, one of `inputs` or lies inside one of them.

    Args:
      path: the output file or folder.
      flag: the flag that named it, for messages ("--output").
      inputs: (what it is, in words; path) of each file and folder the command reads.

    Raises:
      ConfigError: one sentence naming the flag, the path and the input.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    for what, source in inputs:
        source = os.path.realpath(os.fspath(source))
        if target == source:
            raise ConfigError(f"{flag}={path} is the {what} {source}, which this command reads; "
                              "write the output elsewhere.")
        if _is_within(target, source) and os.path.isdir(source):
            raise ConfigError(f"{flag}={path} lies inside the {what} {source}, which this "
                              "command only reads; write the output elsewhere.")


def _probe(path: str, flag: str, folder: str) -> None:
    """Create and remove a file in `folder`: the one test of writability that holds for root,
    read-only mounts and pseudo file systems alike."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".metaunlab-probe-")
    except OSError as error:
        raise ConfigError(f"{flag}={path}: cannot write into {folder} ({error.strerror}); write "
                          "the output to a folder you may write to.") from None
    os.close(fd)
    os.unlink(probe)


def _existing_folder(path: str, flag: str, folder: str) -> None:
    if not os.path.exists(folder):
        raise ConfigError(f"{flag}={path}: the folder {folder} does not exist; create it or "
                          "write elsewhere.")
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag}={path}: {folder} is a file, not a folder; write the output "
                          "into a folder.")


def check_output_file(path: str | os.PathLike, flag: str, *,
                      inputs: Iterable[Input] = ()) -> None:
    """Refuse, before any work, an output file that cannot be written or would replace an input.

    Args:
      path: the output file (it may be a symlink: its target is what is written).
      flag: the flag that named it, for messages ("--output").
      inputs: files and folders the command reads: the output may not be one of them nor
        lie inside one of the folders (a read-only command's work dir, a query folder).

    Raises:
      ConfigError: one sentence naming the flag, the path and what to do.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise ConfigError(f"{flag}={path} is a folder; give the path of a file to write.")
    folder = os.path.dirname(target)
    _existing_folder(path, flag, folder)
    check_not_an_input(path, flag, inputs)  # before the probe: it writes into the folder
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise ConfigError(f"{flag}={path} is read-only; make it writable or write elsewhere.")
    _probe(path, flag, folder)


def check_output_folder(path: str | os.PathLike, flag: str, *,
                        inputs: Iterable[Input] = ()) -> None:
    """Refuse, before any work, an output folder that cannot be written or lies inside an
    input. The folder itself may not exist yet (the command creates it).

    Args:
      path: the folder the command writes its files into.
      flag: the flag that named it ("--output_dir").
      inputs: files and folders the command reads (as in `check_output_file`).

    Raises:
      ConfigError: one sentence naming the flag, the path and what to do.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    check_not_an_input(path, flag, inputs)
    existing = target
    while not os.path.exists(existing):  # the nearest folder that exists is created in
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{flag}={path}: {existing} is a file, not a folder; give a folder "
                          "to write into.")
    _probe(path, flag, existing)


@contextlib.contextmanager
def output_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path to write the output to; when the block ends it replaces the
    output's target atomically (the file a symlink points to: the link stays), with the mode
    of the file it replaces, or 0666 less the umask for a new one (`files.atomic_path`).

    Args:
      path: the output file.
      suffix: the temporary file's extension, for writers that infer the format (".png").

    Raises:
      ConfigError: the operating system refused the write (one sentence).
    """
    with atomic_path(os.path.realpath(os.fspath(path)), suffix) as partial:
        yield partial


def write_output_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to the output file `path` (`output_file`)."""
    with output_file(path) as partial, open(partial, "w") as f:
        f.write(text)
