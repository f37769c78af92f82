"""The pretraining step: it compiles once and learns, and a bfloat16 backbone keeps float32
state and a close loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab.backbones import Conv4, init_backbone
from metaunlab.data import augment
from metaunlab.train import optim, parallel, pretrain


def test_pretrain_step_compiles_once_and_learns():
    module = Conv4()
    backbone = init_backbone(module, 64, (16, 16, 1), seed=0)
    optimizer = optim.sgd_nesterov(0.05)
    state = parallel.replicate(pretrain.init_state(backbone, 4, optimizer, seed=0),
                               parallel.data_mesh())
    step = pretrain.make_train_step(module, augment.OMNIGLOT_SHIFT, optimizer)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 32).astype(np.int32)
    images = (np.eye(4)[labels][:, :, None, None] * 255 * np.ones((1, 1, 16, 4))).reshape(
        32, 16, 16, 1).astype(np.uint8)  # each class lights up its own band of columns
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

    module = Conv4(width=4)
    backbone = init_backbone(module, 4, (16, 16, 1), seed=0)
    config = ml_collections.ConfigDict({"epochs": 0})
    with pytest.raises(ConfigError, match=r"--config\.pretrain\.epochs=0 needs a pretrained "
                                          r"backbone in .*pretrain/best"):
        pretrain.pretrain(config, backbone, None, None, None, augment.OMNIGLOT, str(tmp_path),
                          None)


def test_bfloat16_pretraining_keeps_float32_state_and_a_close_loss(conv4_images):
    module = Conv4(width=8)
    images, labels = conv4_images(n=24, size=16)
    labels = labels % 4
    optimizer = optim.sgd_nesterov(0.05)
    out = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        backbone = init_backbone(module, 8, (16, 16, 1), seed=0)  # donated below
        state = parallel.replicate(pretrain.init_state(backbone, 4, optimizer, seed=0),
                                   parallel.data_mesh())
        step = pretrain.make_train_step(module, augment.OMNIGLOT, optimizer,
                                        backbone_dtype=dtype)
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
