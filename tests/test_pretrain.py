"""The pretraining step: it compiles once and learns, and a bfloat16 backbone keeps float32
state and a close loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab.backbones import Conv4, init_backbone
from metaunlab.data import augment
from metaunlab.train import optim, parallel, pretrain


def _bands(n=32):
    """n 16 px images of 4 classes: each class lights up its own band of columns."""
    labels = np.random.default_rng(0).integers(0, 4, n).astype(np.int32)
    images = (np.eye(4)[labels][:, :, None, None] * 255 * np.ones((1, 1, 16, 4))).reshape(
        n, 16, 16, 1).astype(np.uint8)
    return images, labels


def _pretraining(module, transform, backbone_dtype=None):
    """(state, step) of pretraining `module` (64 features at 16 px) on 4 classes."""
    optimizer = optim.sgd_nesterov(0.05)
    backbone = init_backbone(module, 64, (16, 16, 1), seed=0)  # a new one: the step donates
    state = parallel.replicate(pretrain.init_state(backbone, 4, optimizer, seed=0),
                               parallel.data_mesh())
    kwargs = {} if backbone_dtype is None else {"backbone_dtype": backbone_dtype}
    return state, pretrain.make_train_step(module, transform, optimizer, **kwargs)


def test_pretrain_step_compiles_once_and_learns():
    state, step = _pretraining(Conv4(), augment.OMNIGLOT_SHIFT)
    images, labels = _bands()
    losses = []
    accuracies = []
    for _ in range(6):
        state, metrics = step(state, images, labels)
        losses.append(float(metrics["loss"]))
        accuracies.append(float(metrics["accuracy"]))
    assert step._cache_size() == 1
    assert losses[-1] < losses[0]
    # Accuracy in percent, like every accuracy the project reports (batch of 32: 1/32 steps).
    assert all(0.0 <= a <= 100.0 for a in accuracies) and max(accuracies) > 1.0
    assert all(abs(a * 32 / 100 - round(a * 32 / 100)) < 1e-4 for a in accuracies)


def test_no_pretraining_and_no_checkpoint_is_a_config_error(tmp_path):
    import ml_collections

    from metaunlab.errors import ConfigError

    backbone = init_backbone(Conv4(), 64, (16, 16, 1), seed=0)  # as above: compiled once
    config = ml_collections.ConfigDict({"epochs": 0})
    with pytest.raises(ConfigError, match=r"--config\.pretrain\.epochs=0 needs a pretrained "
                                          r"backbone in .*pretrain/best"):
        pretrain.pretrain(config, backbone, None, None, None, augment.OMNIGLOT, str(tmp_path),
                          None)


def test_bfloat16_pretraining_keeps_float32_state_and_a_close_loss():
    # The float32 step is the one of the test above (compiled once for both).
    images, labels = _bands()
    out = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        state, step = _pretraining(Conv4(), augment.OMNIGLOT_SHIFT,
                                   None if dtype == jnp.float32 else dtype)
        start = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(state["params"])])
        out[dtype] = step(state, images, labels)
    (s32, m32), (s16, m16) = out[jnp.float32], out[jnp.bfloat16]
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), rel=2e-2)
    for tree in (s16["params"], s16["batch_stats"], s16["opt_state"]):
        assert all(x.dtype != jnp.bfloat16 for x in jax.tree_util.tree_leaves(tree))
    # bf16 gradients carry ~3 significant digits, so compare the update's direction.
    updates = [np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(s["params"])])
               - start for s in (s32, s16)]
    cosine = updates[0] @ updates[1] / np.linalg.norm(updates[0]) / np.linalg.norm(updates[1])
    assert cosine > 0.95
