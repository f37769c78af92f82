"""Memory levers change memory, not maths: remat is exact, bfloat16 is close."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import metatrain, optim, parallel, pretrain, sib
from metaunlab.backbones import Conv4, WideResNet, compute_dtype, init_backbone
from metaunlab.data import augment
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from tests._support import perturbed_sib_params


def test_sib_remat_gives_the_same_loss_and_meta_gradient():
    rng = np.random.default_rng(0)
    fs = jnp.asarray(rng.normal(size=(2, 5, 12)), jnp.float32)
    fq = jnp.asarray(rng.normal(size=(2, 15, 12)), jnp.float32)
    ys = jnp.tile(jnp.arange(5), (2, 1))
    yq = jnp.tile(jnp.repeat(jnp.arange(5), 3), (2, 1))
    params = perturbed_sib_params(0, 5, 12)

    def loss_and_grad(remat):
        def loss(p):
            return sib.loss(p, fs, ys, fq, yq, steps=4, lr=0.5, grad_coeff=0.1,
                            remat=remat)[0]

        return jax.jit(jax.value_and_grad(loss))(params)

    plain, rematted = loss_and_grad(False), loss_and_grad(True)
    # The same maths; XLA fuses the recomputation differently, so the last bits may differ.
    chex.assert_trees_all_close(plain, rematted, rtol=1e-4, atol=1e-6)
    # lr=0.5 makes the K steps matter, so a remat that skipped them would show.
    assert float(plain[0]) != pytest.approx(float(sib.loss(
        params, fs, ys, fq, yq, steps=0, lr=0.5)[0]), rel=1e-3)


def test_backbone_remat_gives_the_same_gradients_and_parameters():
    images = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 3)), jnp.float32)
    plain = WideResNet(depth=10, widen_factor=1, strides=(1, 2, 2))
    rematted = WideResNet(depth=10, widen_factor=1, strides=(1, 2, 2), remat=True)
    variables = plain.init(jax.random.PRNGKey(0), images, train=False)
    chex.assert_trees_all_equal_structs(
        variables, rematted.init(jax.random.PRNGKey(0), images, train=False))

    def grads(module):
        def loss(params):
            feats, _ = module.apply({**variables, "params": params}, images, train=True,
                                    mutable=["batch_stats"])
            return jnp.sum(feats ** 2)

        return jax.jit(jax.grad(loss))(variables["params"])

    chex.assert_trees_all_close(grads(plain), grads(rematted), rtol=1e-5, atol=1e-6)


def _conv4_images(n=60, size=12):
    images = np.random.default_rng(0).integers(0, 255, (n, size, size, 1), dtype=np.uint8)
    return images, np.repeat(np.arange(6), n // 6).astype(np.int32)


def test_bfloat16_frozen_backbone_step_is_close_to_float32():
    module = Conv4()
    images, labels = _conv4_images()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)), train=False)

    def feature_fn(v, x):
        return module.apply(v, x, train=False)

    batch = metatrain.episodes_as_dict(
        EpisodeSampler(labels, EpisodeShape(5, 1, 3), seed=1).sample(0, 4))
    optimizer = optim.sgd_nesterov(0.05)
    dim = feature_fn(variables, augment.OMNIGLOT.eval(images[:1])).shape[1]
    params = sib.init(jax.random.PRNGKey(1), 5, dim)
    results = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        step = metatrain.make_train_step(optimizer, steps=2, inner_lr=1e-3,
                                         feature_fn=feature_fn, transform=augment.OMNIGLOT,
                                         backbone_dtype=dtype)
        # The step donates its state: each run starts from its own copy of the parameters.
        fresh = jax.tree_util.tree_map(jnp.copy, params)
        state = parallel.replicate(metatrain.init_state(fresh, optimizer, 0),
                                   parallel.data_mesh())
        results[dtype] = step(state, variables, jnp.asarray(images), batch)
    (s32, m32), (s16, m16) = results[jnp.float32], results[jnp.bfloat16]
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), rel=2e-2)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(s16["params"]))
    chex.assert_trees_all_close(s16["params"], s32["params"], rtol=2e-2, atol=2e-3)


def test_bfloat16_pretraining_keeps_float32_state_and_a_close_loss():
    module = Conv4(width=8)
    images, labels = _conv4_images(n=24, size=16)
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


def test_unknown_dtype_is_one_clear_sentence():
    with pytest.raises(ValueError, match=r"--config.metatrain.backbone_dtype='fp8' is not a "
                                         r"supported dtype; use float32 or bfloat16\."):
        compute_dtype("fp8", "--config.metatrain.backbone_dtype")
