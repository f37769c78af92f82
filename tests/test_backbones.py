"""Tests for metaunlab.backbones (shapes, parameter counts, init, BatchNorm modes, and the
memory levers: remat and the compute dtype)."""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import backbones
from metaunlab.backbones import Conv4, ResNet12, WideResNet, compute_dtype, get_backbone, layers
from metaunlab.errors import ConfigError


def _abstract_init(model, shape):
    """Shapes of (output, variables) of ``model.init_with_output`` without computing."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(
        lambda key, inp: model.init_with_output(key, inp, train=False), jax.random.key(0), x
    )


def _n_params(params) -> int:
    return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))


# Conv4 at 28 px takes Omniglot's single grey channel; everything else is colour.
SHAPE_CASES = [  # (backbone, image size, channels, feature dimension), a line per backbone
    ("conv4", 28, 1, 64), ("conv4", 32, 3, 256), ("conv4", 80, 3, 1600), ("conv4", 84, 3, 1600),
    ("conv4_gap", 28, 1, 64), ("conv4_gap", 84, 3, 64),
    ("conv4_gap_two_pools", 28, 1, 64), ("conv4_gap_two_pools", 84, 3, 64),
    ("wrn28_10", 32, 3, 640), ("wrn28_10", 80, 3, 640),
    ("resnet12", 32, 3, 640), ("resnet12", 80, 3, 640), ("resnet12", 84, 3, 640),
]


@pytest.mark.parametrize(("name", "size", "channels", "expected_dim"), SHAPE_CASES)
def test_output_shapes_and_feature_dim(name, size, channels, expected_dim):
    model, dim = get_backbone(name, size)
    assert dim == expected_dim
    out, _ = _abstract_init(model, (3, size, size, channels))
    chex.assert_shape(out, (3, dim))
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("size", [28, 32])
def test_conv4_gap_is_conv4_with_the_mean_of_the_last_map_for_its_last_pool(size):
    # Same parameters as Conv-4: the features are the mean over the last block's map (taken
    # before its pool), where Conv-4's own last max-pool reads only the top-left 2x2 cells.
    x = jax.random.normal(jax.random.key(1), (4, size, size, 1))
    classic, _ = get_backbone("conv4", size)
    gap, dim = get_backbone("conv4_gap", size)
    variables = classic.init(jax.random.key(0), x, train=False)
    out, inter = classic.apply(variables, x, train=False,
                               capture_intermediates=lambda mdl, _: mdl.name == "bn3")
    (last_bn,) = inter["intermediates"]["bn3"]["__call__"]
    last_map = jax.nn.relu(last_bn)
    chex.assert_trees_all_close(gap.apply(variables, x, train=False),
                                last_map.mean(axis=(1, 2)), atol=1e-6)
    assert dim == 64 and out.shape[1] == 64 * (size // 16) ** 2
    assert not jnp.allclose(gap.apply(variables, x, train=False)[:, :64], out[:, :64])


def _conv4_by_hand(variables, x, max_pools):
    """Conv-4 in inference, written with lax ops: conv, BatchNorm from its running
    statistics, ReLU, 2x2 max-pool after the first `max_pools` blocks, global average."""
    params, stats = variables["params"], variables["batch_stats"]
    for i in range(4):
        x = jax.lax.conv_general_dilated(x, params[f"conv{i}"]["kernel"], (1, 1),
                                         ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        bn, st = params[f"bn{i}"], stats[f"bn{i}"]
        x = (x - st["mean"]) / jnp.sqrt(st["var"] + 1e-5) * bn["scale"] + bn["bias"]
        x = jnp.maximum(x, 0.0)
        if i < max_pools:
            n, h, w, c = x.shape
            x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
            x = x.max(axis=(2, 4))
    return x.mean(axis=(1, 2))


@pytest.mark.parametrize(("name", "max_pools"), [("conv4_gap", 3), ("conv4_gap_two_pools", 2)])
def test_conv4_gap_variants_match_a_forward_pass_by_hand(name, max_pools):
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    model, _ = get_backbone(name, 28)
    variables = model.init(jax.random.key(0), x, train=False)
    # Running statistics away from their initial 0 / 1, so the test sees them used.
    keys = iter(jax.random.split(jax.random.key(2), 8))
    variables = {"params": variables["params"], "batch_stats": jax.tree_util.tree_map(
        lambda v: v + 0.5 * jax.random.uniform(next(keys), v.shape), variables["batch_stats"])}
    chex.assert_trees_all_close(model.apply(variables, x, train=False),
                                _conv4_by_hand(variables, x, max_pools), atol=1e-5)


def test_conv4_gap_variants_reject_images_too_small_for_their_pools():
    with pytest.raises(ConfigError, match="conv4_gap_two_pools needs images of at least 4 px"):
        get_backbone("conv4_gap_two_pools", 3)
    with pytest.raises(ConfigError, match="max_pools=5"):
        _abstract_init(Conv4(max_pools=5), (1, 28, 28, 1))


def test_get_backbone_wrn_strides():
    assert get_backbone("wrn28_10", 32)[0].strides == (1, 2, 2)
    assert get_backbone("wrn28_10", 80)[0].strides == (2, 2, 2)


@pytest.mark.parametrize(("size", "strides", "final"), [(80, (2, 2, 2), 10), (32, (1, 2, 2), 8)])
def test_wrn_final_map_size(size, strides, final):
    model = WideResNet(strides=strides)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    _, variables = jax.eval_shape(
        lambda key, inp: model.init_with_output(
            key, inp, train=False, capture_intermediates=lambda mdl, _: mdl.name == "bn_final"
        ),
        jax.random.key(0),
        x,
    )
    (bn_out,) = variables["intermediates"]["bn_final"]["__call__"]
    assert bn_out.shape == (1, final, final, 640)


def test_unknown_name_raises():
    with pytest.raises(ValueError) as err:
        get_backbone("resnet18", 84)
    msg = str(err.value)
    for valid in ("conv4", "wrn28_10", "resnet12"):
        assert valid in msg
    assert "resnet18" in msg


def _wrn_param_count(depth: int, k: int) -> int:
    """Trainable parameters (conv kernels + BN scale/bias) of the reference WRN."""
    n = (depth - 4) // 6
    total = 3 * 3 * 3 * 16  # stem conv, no bias
    in_planes = 16
    for width in (16 * k, 32 * k, 64 * k):
        # First block of a group: bn1(in) + conv1 3x3 in->w + bn2(w) + conv2 3x3 w->w
        # + 1x1 shortcut in->w.
        total += 2 * in_planes + 9 * in_planes * width + 2 * width + 9 * width * width
        total += in_planes * width
        # Remaining n-1 blocks: two BN(w) and two 3x3 w->w convs each.
        total += (n - 1) * (4 * width + 18 * width * width)
        in_planes = width
    total += 2 * 64 * k  # final BN
    return total


def test_wrn28_10_parameter_count():
    expected = _wrn_param_count(28, 10)
    # The often-quoted 36,479,194 of the reference PyTorch WRN-28-10 includes a 10-way
    # linear classifier (640 * 10 weights + 10 biases); the backbone alone has 36,472,784.
    assert expected == 36_472_784
    assert expected + 640 * 10 + 10 == 36_479_194
    for size in (32, 80):
        model, _ = get_backbone("wrn28_10", size)
        _, variables = _abstract_init(model, (1, size, size, 3))
        assert _n_params(variables["params"]) == expected
        # Running statistics are state, not parameters: one mean + one var per BN channel.
        # Running statistics are state, not parameters: one mean + one var per BN channel,
        # as many as the BN scale + bias parameters.
        flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
        n_bn = sum(math.prod(v.shape) for path, v in flat if path[-1].key in ("scale", "bias"))
        assert _n_params(variables["batch_stats"]) == n_bn
        n_kernel = sum(math.prod(v.shape) for path, v in flat if path[-1].key == "kernel")
        assert n_kernel + n_bn == expected


def test_resnet12_parameter_count():
    widths = (64, 160, 320, 640)
    expected = 0
    in_c = 3
    for w in widths:
        expected += 9 * in_c * w + 9 * w * w * 2 + in_c * w  # 3 convs + 1x1 shortcut
        expected += 4 * 2 * w  # 4 BatchNorms (scale + bias)
        in_c = w
    _, variables = _abstract_init(ResNet12(), (1, 84, 84, 3))
    assert _n_params(variables["params"]) == expected


def test_conv4_init_statistics():
    variables = Conv4().init(jax.random.key(1), jnp.zeros((1, 28, 28, 3)), train=False)
    params = variables["params"]
    target = math.sqrt(2.0 / (9 * 64))
    for i in range(4):
        kernel = np.asarray(params[f"conv{i}"]["kernel"])
        assert "bias" not in params[f"conv{i}"]
        in_c = 3 if i == 0 else 64
        assert kernel.shape == (3, 3, in_c, 64)
        # The std does not depend on the input channels ("fan_out" mode).
        # Relative standard error of the sample std is ~1/sqrt(2N): 0.4% for the
        # 64x64x3x3 kernels, 1.7% for the 3x64x3x3 first kernel.
        tol = 0.03 if i > 0 else 0.08
        assert abs(kernel.std() / target - 1.0) < tol
        assert abs(kernel.mean()) < 4 * target / math.sqrt(kernel.size)
        bn = params[f"bn{i}"]
        np.testing.assert_array_equal(bn["scale"], np.ones(64))
        np.testing.assert_array_equal(bn["bias"], np.zeros(64))


def test_conv_init_fn_std():
    kernel = backbones.conv_fan_out_normal(jax.random.key(2), (3, 3, 64, 64))
    assert abs(float(kernel.std()) / math.sqrt(2.0 / (9 * 64)) - 1.0) < 0.03
    kernel = backbones.conv_fan_out_normal(jax.random.key(3), (1, 1, 64, 640))
    assert abs(float(kernel.std()) / math.sqrt(2.0 / 640) - 1.0) < 0.03


def test_stride2_padding_is_symmetric_like_pytorch():
    # A 3x3 all-ones kernel, stride 2, padding 1, on a 4x4 all-ones image. PyTorch pads one
    # pixel on every side, so the top-left output only sees a 2x2 patch of ones (sum 4);
    # "SAME" would pad only bottom/right and give 9 there.
    conv = layers.conv(1, 3, stride=2)
    params = {"params": {"kernel": jnp.ones((3, 3, 1, 1))}}
    out = conv.apply(params, jnp.ones((1, 4, 4, 1)))
    np.testing.assert_array_equal(np.asarray(out)[0, :, :, 0], [[4.0, 6.0], [6.0, 9.0]])


def test_batchnorm_train_vs_eval():
    model = Conv4()
    key_a, key_b, key_c = jax.random.split(jax.random.key(4), 3)
    a = jax.random.normal(key_a, (1, 28, 28, 1)) + 0.5
    b = jax.random.normal(key_b, (1, 28, 28, 1))
    c = 3.0 * jax.random.normal(key_c, (1, 28, 28, 1)) - 1.0
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(5), jnp.concatenate([a, b]), train=False)

    # BatchNorm hyper-parameters mirror PyTorch defaults (torch momentum 0.1 = flax 0.9).
    for train in (True, False):
        bn = layers.batch_norm(train)
        assert (bn.momentum, bn.epsilon, bn.use_running_average) == (0.9, 1e-5, not train)

    # Train mode: running statistics get updated.
    batch = jnp.concatenate([a, b])
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    _, updates = apply(variables, batch, train=True, mutable=("batch_stats",))
    old, new = variables["batch_stats"]["bn0"], updates["batch_stats"]["bn0"]
    assert not np.allclose(old["mean"], new["mean"])
    assert not np.allclose(old["var"], new["var"])
    # First layer: batch mean of the conv output, mixed in with weight 0.1.
    conv_out = jax.lax.conv_general_dilated(
        batch,
        variables["params"]["conv0"]["kernel"],
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(new["mean"], 0.1 * conv_out.mean(axis=(0, 1, 2)), atol=1e-5)
    # Flax mixes in the biased batch variance (PyTorch would use the unbiased one).
    batch_var = conv_out.var(axis=(0, 1, 2))
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * batch_var, rtol=1e-4)
    variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}

    # Eval mode: the features of `a` do not depend on the rest of the batch.
    eval_ab = apply(variables, jnp.concatenate([a, b]), train=False)
    eval_ac = apply(variables, jnp.concatenate([a, c]), train=False)
    np.testing.assert_allclose(eval_ab[0], eval_ac[0], rtol=1e-5, atol=1e-6)

    # Train mode: they do (batch statistics).
    train_ab, _ = apply(variables, jnp.concatenate([a, b]), train=True, mutable=("batch_stats",))
    train_ac, _ = apply(variables, jnp.concatenate([a, c]), train=True, mutable=("batch_stats",))
    assert not np.allclose(train_ab[0], train_ac[0], atol=1e-3)


def _numpy_variables(model, shape, seed=0):
    """Variables with the same distribution as ``model.init`` but sampled with numpy.

    On a CPU, ``model.init`` of the big backbones spends 5-15 s compiling one
    ``jax.random.normal`` sampler per distinct kernel shape; the init itself is
    covered by the Conv4 tests, so the forward-pass test fills the parameters
    directly: fan-out He-normal kernels, unit BN scales, zero BN biases and
    BN running mean 0 / variance 1.
    """
    _, abstract = _abstract_init(model, shape)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = path[-1].key
        if key == "kernel":
            std = math.sqrt(2.0 / (math.prod(leaf.shape[:-2]) * leaf.shape[-1]))
            return jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)
        if key in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize(
    ("model", "shape", "dim"),
    [
        (Conv4(), (2, 28, 28, 1), 64),
        (ResNet12(), (2, 32, 32, 3), 640),
        (WideResNet(strides=(1, 2, 2)), (2, 32, 32, 3), 640),
    ],
    ids=["conv4-28", "resnet12-32", "wrn28_10-32"],
)
def test_real_forward_is_finite(model, shape, dim):
    x = jax.random.normal(jax.random.key(6), shape)
    variables = _numpy_variables(model, shape)

    @jax.jit  # one XLA compilation is cheaper on CPU than op-by-op dispatch here
    def forward(variables, x):
        out_eval = model.apply(variables, x, train=False)
        out_train, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return out_eval, out_train, updates

    out_eval, out_train, updates = forward(variables, x)
    for out in (out_eval, out_train):
        chex.assert_shape(out, (shape[0], dim))
        chex.assert_tree_all_finite(out)
    chex.assert_tree_all_finite(updates)
    # Features are post-ReLU averages/maxima for Conv4 and WRN; not all zero for any model.
    assert float(jnp.abs(out_eval).max()) > 0.0


@pytest.mark.parametrize("train", [True, False])
def test_max_pool_matches_flax_window_max_pool(train: bool) -> None:
    """Training pools by reshape + max, inference by reduce_window (the faster of the two
    on CPU in each place): both must give flax's VALID window max, odd edges dropped."""
    from metaunlab.backbones.layers import max_pool2

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 9, 3))
    want = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
    np.testing.assert_array_equal(np.asarray(max_pool2(x, train)), np.asarray(want))


# ---- memory levers change memory, not maths -----------------------------------------------


@pytest.mark.slow
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


def test_unknown_dtype_is_one_clear_sentence():
    with pytest.raises(ValueError, match=r"--config.metatrain.backbone_dtype='fp8' is not a "
                                         r"supported dtype; use float32 or bfloat16\."):
        compute_dtype("fp8", "--config.metatrain.backbone_dtype")


def tiny_factory(image_size, remat):
    """A user's backbone factory, named from a config as tests.test_backbones:tiny_factory."""
    del remat
    return Conv4(width=4), 4 * (image_size // 16) ** 2


def test_a_registered_or_importable_factory_builds_the_backbone():
    module, dim = get_backbone("tests.test_backbones:tiny_factory", 32)
    assert isinstance(module, Conv4) and module.width == 4 and dim == 16
    variables = jax.jit(module.init, static_argnames="train")(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)), train=False)
    features = jax.jit(module.apply, static_argnames="train")(
        variables, jnp.zeros((2, 32, 32, 1)), train=False)
    assert features.shape == (2, dim)
    backbones.register_backbone("tiny_for_test", tiny_factory)
    try:
        assert get_backbone("tiny_for_test", 16)[1] == 4
        with pytest.raises(ConfigError, match="already registered"):
            backbones.register_backbone("tiny_for_test", tiny_factory)
    finally:
        del backbones.BACKBONES["tiny_for_test"]


def test_bad_backbone_names_are_one_clear_sentence():
    with pytest.raises(ConfigError, match=r"Unknown backbone 'vgg'.*package\.module:factory"):
        get_backbone("vgg", 32)
    with pytest.raises(ConfigError, match="module 'no_such_package' cannot be imported"):
        get_backbone("no_such_package:net", 32)
    with pytest.raises(ConfigError, match="has no callable 'nothing'"):
        get_backbone("tests.test_backbones:nothing", 32)
    with pytest.raises(ConfigError, match=r"returns \(Flax module, feature dimension\)"):
        get_backbone("tests.test_backbones:_not_a_module", 32)


def _not_a_module(image_size, remat):
    return "conv", 10
