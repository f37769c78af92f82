"""One code path for one CPU, many local devices and many hosts: a 1-D `data` mesh.

Every training step is `jax.jit` with explicit shardings over `Mesh(jax.devices(), ("data",))`:
the batch (episode index arrays, or pretraining images) is split along `data`; parameters,
optimizer state and the step's metrics are replicated. With one device this is an ordinary
jit; with many, XLA inserts the gradient all-reduce. Results differ across device counts only
by the order of floating-point additions.

Many hosts (`initialize_distributed`): every process runs the same program; each builds only
its own rows of each global batch (`process_rows`) and `global_batch` assembles the global
array. Only process 0 writes logs, metrics and JSON files (`is_primary`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metaunlab.errors import ConfigError

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize`: with no arguments JAX detects TPU pods, SLURM and
    Open MPI; on other clusters (or localhost tests) pass all three."""
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
    """Whether this process writes files shared by the run (process 0 of a multi-host job)."""
    return jax.process_index() == 0


def data_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh over all devices of all processes (or `devices`).

    `jax.devices()` is ordered by process, so each process's devices hold one contiguous
    block of the batch, which `process_rows` relies on.
    """
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Axis `axis` (the batch; 0 unless a leading axis stacks several steps) split along
    `data`, all others whole."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, flag: str) -> None:
    """Raise ValueError unless the global batch splits evenly over the mesh."""
    devices = mesh.size
    if batch_size < 1 or batch_size % devices:
        raise ConfigError(f"{flag}={batch_size} must be a positive multiple of the "
                         f"{devices} devices; set it to a multiple of {devices}.")


def batch_mesh(batch_size: int, flag: str) -> tuple[Mesh, range]:
    """The data mesh over all devices, checked to split the global `batch_size` evenly
    (`flag` names the config field in the error), and this process's rows of a batch."""
    mesh = data_mesh()
    check_batch_size(batch_size, mesh, flag)
    return mesh, process_rows(batch_size, mesh)


def process_rows(batch_size: int, mesh: Mesh) -> range:
    """The rows of a global batch of `batch_size` held by this process's devices."""
    index_map = batch_sharded(mesh).addressable_devices_indices_map((batch_size,))
    starts = sorted(index[0].start or 0 for index in index_map.values())
    per_device = batch_size // mesh.size
    rows = range(starts[0], starts[-1] + per_device)
    # data_mesh orders devices by process, so the local rows are contiguous.
    assert len(rows) == per_device * len(starts), "this process's batch rows are not contiguous"
    return rows


def global_batch(local: Any, batch_size: int, mesh: Mesh, axis: int = 0) -> Any:
    """Global arrays, batch-sharded over `mesh` along `axis`, from this process's rows
    (`process_rows`) of every leaf of `local`."""
    sharding = batch_sharded(mesh, axis)

    def assemble(x):
        x = np.asarray(x)
        shape = x.shape[:axis] + (batch_size,) + x.shape[axis + 1:]
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree_util.tree_map(assemble, local)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (the same values on every process) on every device of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def to_local(tree: Any) -> Any:
    """Replicated global arrays as arrays on this process's first device, for process-local
    code (validation, evaluation): a view of the local copy, not a transfer."""
    def local(x):
        if not x.is_fully_replicated:
            raise ValueError("to_local needs replicated arrays; gather a sharded one first.")
        return x.addressable_data(0)

    return jax.tree_util.tree_map(local, tree)
