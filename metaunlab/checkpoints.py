"""Checkpoints through orbax: atomic writes, resume from the latest, keep only what is needed.

orbax writes each checkpoint into a temporary directory and renames it into place when it
is complete, so an interrupted save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from metaunlab.errors import ConfigError


class Checkpointer:
    """One named sequence of checkpoints (for example `<workdir>/pretrain/last`)."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 1):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, tree: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
        self._manager.wait_until_finished()

    def restore(self, like: Any = None, step: int | None = None) -> Any:
        """Restore `step` (default: the latest).

        With `like`, into its structure, shapes, dtypes and placement (sharding); without,
        as saved, with dicts for every mapping: the parameters of a training state can be
        read (`restore()["params"]`) without rebuilding its optimizer.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise ConfigError(f"No checkpoint in {self.directory}; train first or point "
                                    "--workdir at a directory that holds one.")
        if like is None:
            return self._manager.restore(step, args=ocp.args.StandardRestore())
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()
