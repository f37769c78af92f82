"""Checkpoints: what is restored is what was saved, or one sentence says which one is not."""

import errno
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import sib
from metaunlab.errors import ConfigError
from metaunlab.train import metatrain, optim
from metaunlab.train.checkpoints import Checkpointer, CheckpointError, tree_digest


def _flip_bytes(directory, count=256):
    """XOR `count` bytes in the middle of the largest data file of a checkpoint folder."""
    files = [f for f in glob.glob(f"{directory}/**/*", recursive=True)
             if os.path.isfile(f) and "/d/" in f]
    target = max(files, key=os.path.getsize)
    data = bytearray(open(target, "rb").read())
    middle = len(data) // 2
    for i in range(middle, min(middle + count, len(data))):
        data[i] ^= 0xFF
    with open(target, "wb") as f:
        f.write(data)


def test_a_corrupt_checkpoint_is_refused_naming_it_and_the_one_kept_before(tmp_path):
    checkpoints = Checkpointer(tmp_path / "last", max_to_keep=2)
    first = {"w": jnp.arange(4000, dtype=jnp.float32), "step": jnp.asarray(1, jnp.int32)}
    checkpoints.save(1, first)
    checkpoints.save(2, {"w": 2 * first["w"], "step": jnp.asarray(2, jnp.int32)})
    np.testing.assert_array_equal(checkpoints.restore(first)["w"], 2 * np.arange(4000))
    _flip_bytes(tmp_path / "last" / "2")
    with pytest.raises(CheckpointError, match=r"checkpoint .*last/2 (is corrupt|cannot be "
                                              r"read).*resume from step 1"):
        checkpoints.restore(first)
    np.testing.assert_array_equal(checkpoints.restore(first, step=1)["w"], np.arange(4000))
    assert issubclass(CheckpointError, ConfigError)  # the scripts print it as one sentence


def test_the_digest_ignores_the_containers_a_training_state_comes_back_in(tmp_path):
    optimizer = optim.sgd_nesterov(1e-3)
    state = metatrain.init_state(sib.init(jax.random.PRNGKey(0), 5, 8),
                                 optimizer, 0)
    checkpoints = Checkpointer(tmp_path / "s")
    checkpoints.save(0, state)
    raw = checkpoints.restore()  # dicts and lists where optax had named tuples
    assert tree_digest(raw) == tree_digest(state)
    assert tree_digest(checkpoints.restore(state)) == tree_digest(state)
    assert tree_digest({"a": np.zeros(3)}) != tree_digest({"a": np.zeros(3, np.float64) + 1})
    assert isinstance(state["opt_state"], tuple) and not isinstance(raw["opt_state"], tuple)


def test_a_full_disk_during_a_save_is_one_sentence_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch):
    checkpoints = Checkpointer(tmp_path / "last")
    checkpoints.save(1, {"w": jnp.ones(10)})

    def full(*args, **kwargs):
        raise ValueError("tensorstore: write failed") from OSError(errno.ENOSPC,
                                                                   "No space left on device")

    monkeypatch.setattr(checkpoints._manager, "save", full)
    with pytest.raises(ConfigError, match=r"no space left on the device of .*last/2 \(about "
                                          r"\d+ (KiB|MiB) needed\); free some space"):
        checkpoints.save(2, {"w": jnp.ones(10)})
    monkeypatch.undo()
    assert checkpoints.latest_step() == 1
    np.testing.assert_array_equal(checkpoints.restore()["w"], np.ones(10))
