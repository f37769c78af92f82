"""Checkpoints through orbax: atomic writes, integrity checked on restore, resume from the
latest.

orbax writes each checkpoint into a temporary directory and renames it into place when it
is complete, so an interrupted save never leaves a half-written checkpoint behind. Each save
also records the SHA-256 of the tree's arrays in the checkpoint's own metadata, and every
restore recomputes it: a checkpoint changed on disk afterwards (a flipped byte, a truncated
file) is refused with one sentence naming it, never used to produce a wrong number.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from metaunlab.errors import ConfigError, shown
from metaunlab.files import write_error

_DIGEST = "metaunlab_sha256"


class CheckpointError(ConfigError):
    """A checkpoint on disk cannot be read back as it was saved."""


def tree_digest(tree: Any) -> str:
    """SHA-256 of every array of `tree` with its path, dtype and shape, in the order of the
    paths' names, so that a tree restored with dicts where it was saved with other
    containers (optimizer states) has the same digest."""
    entries = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(_key_name(k) for k in path)
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)  # replicated: every process holds the whole array
        entries.append((name, np.asarray(leaf)))
    digest = hashlib.sha256()
    for name, value in sorted(entries, key=lambda e: e[0]):
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


class _DropErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _without_orbax_error_logs():
    """orbax logs a failed write with its traceback before raising it; the raised error is
    reported (as one sentence, or re-raised with its traceback), so the log is dropped."""
    drop = _DropErrors()
    logger = logging.getLogger("absl")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


_OS_MESSAGES = {"No space left on device": errno.ENOSPC, "Read-only file system": errno.EROFS,
                "Permission denied": errno.EACCES}


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind an exception of orbax or tensorstore, if it is one."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        for message, code in _OS_MESSAGES.items():
            if message in str(seen):
                return OSError(code, message)
        seen = seen.__cause__ or seen.__context__
    return None


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


class Checkpointer:
    """One named sequence of checkpoints (for example `<workdir>/pretrain/last`), keeping
    the newest `max_to_keep`.

    With `remove_unfinished`, the temporary folders of saves a killed process left
    (`<step>.orbax-checkpoint-tmp-<time>`) are removed, by orbax (`cleanup_tmp_directories`,
    before the next save), each named in a warning. Only the writer that holds the work
    dir's lock (a training run) may ask for it: a reader would remove a live run's save.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 1, *,
                 remove_unfinished: bool = False, read_only: bool = False):
        """Args:
          directory: the folder of the sequence's checkpoints.
          max_to_keep: how many of the newest checkpoints a save keeps.
          remove_unfinished: remove the temporary folders of interrupted saves (above).
          read_only: only restore: the folder is not created when it does not exist (a
            command that reads a work dir leaves no trace in it).
        """
        self.directory = os.path.abspath(os.fspath(directory))
        if remove_unfinished and jax.process_index() == 0:  # orbax cleans on process 0 only
            for folder in sorted(glob.glob(os.path.join(
                    glob.escape(self.directory), f"*{ocp.path.atomicity_types.TMP_DIR_SUFFIX}*"))):
                logging.getLogger("absl").warning(
                    "removing %s, the temporary folder of a checkpoint save that was "
                    "interrupted", shown(folder))
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=remove_unfinished)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as error:
            raise write_error(self.directory, error) from None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any) -> None:
        """Save `tree` as `step`; a full disk or a read-only folder is one ConfigError (the
        checkpoints already there are kept)."""
        try:
            with _without_orbax_error_logs():
                self._manager.save(step, args=ocp.args.StandardSave(tree), force=True,
                                   custom_metadata={_DIGEST: tree_digest(tree)})
                self._manager.wait_until_finished()
        except Exception as error:  # orbax wraps the OSError of tensorstore in other types
            os_error = error if isinstance(error, OSError) else _os_error_in(error)
            if os_error is None:
                raise
            for partial in glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*")):
                shutil.rmtree(partial, ignore_errors=True)  # give the space back
            size = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(tree))
            raise write_error(os.path.join(self.directory, str(step)), os_error,
                              needed_bytes=size) from None

    def restore(self, like: Any = None, step: int | None = None) -> Any:
        """Restore `step` (default: the latest), checked against the digest saved with it.

        With `like`, into its structure, shapes, dtypes and placement (sharding); without,
        as saved, with dicts for every mapping: the parameters of a training state can be
        read (`restore()["params"]`) without rebuilding its optimizer. A checkpoint that
        cannot be read, or whose arrays differ from what was saved, raises CheckpointError.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise ConfigError(f"No checkpoint in {self.directory}; train first or point "
                              "--workdir at a directory that holds one.")
        where = os.path.join(self.directory, str(step))
        try:
            expected = self._saved_digest(step)
            if like is None:
                tree = self._manager.restore(step, args=ocp.args.StandardRestore())
            else:
                abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
                tree = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as error:  # orbax and tensorstore raise many types for a bad file
            detail = str(error).split(" See full TensorStore details")[0][:200]
            raise CheckpointError(f"checkpoint {where} cannot be read ({type(error).__name__}: "
                                  f"{detail}); {self._what_to_do(step)}") from None
        # Checkpoints written before digests were recorded carry none: nothing to check.
        if expected is not None and tree_digest(tree) != expected:
            raise CheckpointError(f"checkpoint {where} is corrupt: its arrays differ from the "
                                  f"checksum saved with them; {self._what_to_do(step)}")
        return tree

    def _saved_digest(self, step: int) -> str | None:
        """The digest saved with `step`, from the step's own metadata file (read directly:
        orbax's metadata() call warns about items it has not been asked to restore yet)."""
        path = os.path.join(self.directory, str(step), "_CHECKPOINT_METADATA")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return (json.load(f).get("custom_metadata") or {}).get(_DIGEST)

    def _what_to_do(self, step: int) -> str:
        earlier = [s for s in self.all_steps() if s < step]
        if earlier:
            return (f"delete that folder to resume from step {earlier[-1]}, the checkpoint "
                    "kept before it")
        return "delete that folder to redo the training it held, or use a new --workdir"

    def close(self) -> None:
        self._manager.close()
