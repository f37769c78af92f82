"""The self-describing work directory: config.json, results.json, atomic JSON writes, and
JSON files read back as one sentence when damaged."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from metaunlab.errors import ConfigError
from metaunlab.files import atomic_path, read_json_object
from metaunlab.train.parallel import is_primary

# What to do about a damaged work-dir file (the end of `read_json`'s message).
REWRITE_CONFIG = "restore it from a copy, or start the run again in a new --workdir"
REWRITE_BY_TRAINING = ("rerun the training command on this --workdir, which writes it again "
                       "and resumes from the run's checkpoints")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write to a temporary file and rename, so readers never see a half-written file.

    In a multi-process run only process 0 writes: the work directory is shared, and every
    process would write the same content.
    """
    if not is_primary():
        return
    with atomic_path(path) as partial, open(partial, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: str | os.PathLike, what_to_do: str) -> dict[str, Any]:
    """The JSON object in the work-dir file `path`.

    Args:
      path: config.json, model.json, results.json, ...
      what_to_do: how the user gets a good file back (`REWRITE_CONFIG`, ...).

    Raises:
      ConfigError: the file cannot be read, is damaged or holds no JSON object: one
        sentence naming it and ending with `what_to_do`.
    """
    return read_json_object(path, what_to_do)


# Fields (or groups of fields) that may change between a run and its resumption without
# invalidating its checkpoints: how much is evaluated and logged, how often state is saved,
# where the data lives, and how long meta-training goes on (its learning rate is constant,
# so stopping later or earlier leaves the steps already taken as they were).
RESUMABLE_FIELDS = ("test", "log_every", "eval_checkpoint", "data.root",
                    "metatrain.iterations", "metatrain.log_every",
                    "metatrain.checkpoint_every", "pretrain.checkpoint_every",
                    # Speed knobs that leave the trajectory as it is (up to rounding);
                    # sib_form is no longer read (`sib.apply` picks the form itself).
                    "metatrain.steps_per_call", "metatrain.sib_form")


def _is_resumable(field: str) -> bool:
    return any(field == r or field.startswith(r + ".") for r in RESUMABLE_FIELDS)


# Options metaunlab no longer has. A stored config with one off (its default, the head
# metaunlab still computes) is read without it; a head trained with it on cannot be.
REMOVED_FLAGS = ("metatrain.query_scaled_step", "metatrain.phi_balanced_assignment",
                 "metatrain.phi_class_marginal", "metatrain.learned_step_size")


def _without_removed_flags(stored: dict, path: str) -> dict:
    """`stored` (a config read from `path`) without the REMOVED_FLAGS it has off; a
    ConfigError for one it has on."""
    for field in REMOVED_FLAGS:
        *parents, leaf = field.split(".")
        node = stored
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        if node[leaf]:
            raise ConfigError(f"{path} holds a run trained with {field}=True, an option "
                              "metaunlab no longer has, so its head cannot be used any more.")
        del node[leaf]
    return stored


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Write `config.json`; refuse to resume a work dir that was trained with another config.

    A resumed run with a different model or schedule would silently mix two experiments
    in one set of checkpoints.
    """
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        old = _without_removed_flags(read_json(path, REWRITE_CONFIG), path)
        changed = sorted(_differences(old, new))
        changed = [c for c in changed if not _is_resumable(c)]
        if changed:
            raise ConfigError(
                f"--workdir={workdir} holds a run with a different config ({', '.join(changed)} "
                "changed); use a new --workdir, or the same config to resume.")
    write_json_atomic(path, new)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        runs = sorted(name for name in (os.listdir(workdir) if os.path.isdir(workdir) else [])
                      if os.path.exists(os.path.join(workdir, name, "config.json")))
        if runs:  # the Omniglot demo writes one run per protocol
            raise ConfigError(f"--workdir={workdir} holds the runs "
                              f"{', '.join(os.path.join(workdir, r) for r in runs)}; pass one "
                              "of them as --workdir.")
        raise ConfigError(f"{path} does not exist; --workdir must be a directory written "
                                "by a metaunlab training run.")
    return ml_collections.ConfigDict(_without_removed_flags(read_json(path, REWRITE_CONFIG),
                                                            path))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        # A field the stored config lacks was added to metaunlab after the run started; its
        # default keeps the old behaviour, so it is not a change.
        for key in sorted(set(old) | set(new)):
            if key in old:
                out += _differences(old[key], new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]
