"""Feature-extractor backbones for few-shot learning (Flax linen).

This module holds the three convolutional feature extractors used by SIB
(Hu et al., "Empirical Bayes Transductive Meta-Learning with Synthetic
Gradients", ICLR 2020) and by the later work it is usually compared with:

* :class:`Conv4` -- the classic Conv-4-64 network (Vinyals et al. 2016,
  Snell et al. 2017), flattened output, any input size; ``"conv4_gap"`` is the same
  network with a global average over the last block's map in place of its last max-pool,
  ``"conv4_gap_two_pools"`` without its last two max-pools.
* :class:`WideResNet` -- the pre-activation WRN-28-10 of Zagoruyko &
  Komodakis (2016) in the exact form used by the SIB reference code.
* :class:`ResNet12` -- the 640-d ResNet-12 of MetaOptNet (Lee et al. 2019).

:func:`get_backbone` builds one of them, or any Flax module registered with
:func:`register_backbone` or named as ``"package.module:factory"``, by name for a given
image size and returns its feature dimension as well; :class:`Backbone` holds a module with its
variables (:func:`init_backbone`). The backbone may compute in bfloat16 on float32
parameters (:func:`compute_dtype`, :func:`cast_floats`): features are returned in float32.

Conventions, chosen so that the networks behave like the PyTorch reference
implementations:

* Inputs are NHWC float32 images; every module returns a 2-D ``(N, D)`` feature
  matrix and has the signature ``__call__(self, x, train: bool)``.
* BatchNorm uses batch statistics when ``train=True`` and running averages when
  ``train=False``. Its hyper-parameters mirror PyTorch's defaults: Flax
  ``momentum=0.9`` is PyTorch ``momentum=0.1``, ``epsilon=1e-5``, scale
  initialised to 1 and bias to 0. (One small difference remains: Flax updates
  the running variance with the biased batch variance, PyTorch with the
  unbiased one.)
* Convolutions have no bias and are initialised with PyTorch's
  ``kaiming_normal_(mode="fan_out")``: a normal with standard deviation
  ``sqrt(2 / (kh * kw * out_channels))`` (see :func:`conv_fan_out_normal`).
* Padding is always given explicitly (``((1, 1), (1, 1))`` for 3x3 kernels, no
  padding for 1x1 kernels) instead of ``"SAME"``. For a stride-2 convolution on
  an even-sized input, ``"SAME"`` pads only on the bottom/right, whereas PyTorch
  ``padding=1`` pads symmetrically, which shifts the sampling grid by one pixel.
  Explicit symmetric padding reproduces PyTorch's output exactly, and the
  output size is ``floor((H + 2 - 3) / stride) + 1`` as in PyTorch.
* Max-pooling is 2x2 with stride 2 and no padding (``"VALID"``), i.e. odd sizes
  are floored like PyTorch's ``MaxPool2d(2)``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from metaunlab.errors import ConfigError

__all__ = [
    "BACKBONES",
    "Backbone",
    "Conv4",
    "ResNet12",
    "WideResNet",
    "cast_floats",
    "compute_dtype",
    "conv_fan_out_normal",
    "get_backbone",
    "init_backbone",
    "register_backbone",
]



def conv_fan_out_normal(
    key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32
) -> jax.Array:
    """He-normal initializer in "fan_out" mode, as PyTorch's ``kaiming_normal_``.

    ``shape`` is a Flax conv kernel shape ``(kh, kw, in_channels, out_channels)``;
    the samples are drawn from a (non-truncated) normal with standard deviation
    ``sqrt(2 / (kh * kw * out_channels))``.
    """
    fan_out = shape[-1] * math.prod(shape[:-2])
    std = math.sqrt(2.0 / fan_out)
    return std * jax.random.normal(key, tuple(shape), dtype)


def _conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
    """Bias-free conv with PyTorch-style symmetric padding (1 for 3x3, 0 for 1x1)."""
    pad = ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))
    return nn.Conv(
        features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=pad,
        use_bias=False,
        kernel_init=conv_fan_out_normal,
        name=name,
    )


def _bn(train: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch default hyper-parameters."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=nn.initializers.ones,
        bias_init=nn.initializers.zeros,
        name=name,
    )


def _max_pool2(x: jax.Array, train: bool) -> jax.Array:
    """2x2 max-pool, stride 2, odd edges dropped (torch MaxPool2d(2, 2), flax VALID).

    Two spellings of the same values (bitwise), each the faster one on CPU where it is
    used: in training, a reshape and a max, whose gradient avoids XLA's select-and-scatter;
    in inference (the frozen backbone of meta-training and evaluation), `reduce_window`,
    which XLA fuses into the conv kernel before it.
    """
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    if not train:
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                     "VALID")
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Conv4(nn.Module):
    """Conv-4-64 (Vinyals et al., NeurIPS 2016; Snell et al., NeurIPS 2017).

    Four blocks of [3x3 conv (``width`` filters, padding 1, no bias) ->
    BatchNorm -> ReLU -> 2x2 max-pool], then flatten. The number of input
    channels is taken from the input, and any spatial size works: 28 -> 64
    features, 32 -> 256, 80 or 84 -> 1600 (with ``width=64``).

    Two variants keep the convolutions and change what reaches the features:
    ``global_average=True`` returns the mean over the whole map of the last block instead of
    flattening it, ``width`` features at any size; ``max_pools`` is how many blocks, from
    the first, end in their 2x2 max-pool. With ``max_pools=3`` (``"conv4_gap"``) the last
    block's 3x3 map at 28 px is averaged, where the classic 2x2 max-pool with odd edges
    dropped reads only its top-left 2x2 cells; with ``max_pools=2``
    (``"conv4_gap_two_pools"``) the last two blocks run on the 7x7 map and the average reads
    49 cells, at 4% more pretraining time on this project's CPU (docs/omniglot.md).
    """

    width: int = 64
    max_pools: int = 4  # the first `max_pools` blocks end in a 2x2 max-pool
    global_average: bool = False  # average the last map over space instead of flattening

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not 0 <= self.max_pools <= 4:
            raise ConfigError(f"Conv4(max_pools={self.max_pools!r}) is not between 0 and 4.")
        for i in range(4):
            x = _conv(self.width, 3, name=f"conv{i}")(x)
            x = _bn(train, name=f"bn{i}")(x)
            x = nn.relu(x)
            if i < self.max_pools:
                x = _max_pool2(x, train)
        if self.global_average:
            return x.mean(axis=(1, 2))
        return x.reshape((x.shape[0], -1))


def _maybe_remat(block: type[nn.Module], remat: bool) -> type[nn.Module]:
    """`block`, or `block` with its activations recomputed in the backward pass. Argument 2
    of `__call__(self, x, train)` is a Python bool, hence static."""
    return nn.remat(block, static_argnums=(2,)) if remat else block


class _WideBasicBlock(nn.Module):
    """Pre-activation basic block of the SIB reference WRN.

    When the width changes, the pre-activation ``relu(bn1(x))`` is shared by the
    residual branch and the 1x1 shortcut conv; otherwise the identity shortcut
    adds the raw input. (A same-width block with stride > 1, which the reference
    cannot run and WRN-28-10 never has, also gets the 1x1 shortcut conv.)
    """

    in_planes: int
    out_planes: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        equal = self.in_planes == self.out_planes and self.stride == 1
        act = nn.relu(_bn(train, name="bn1")(x))
        if not equal:
            x = act
        out = _conv(self.out_planes, 3, self.stride, name="conv1")(act)
        out = nn.relu(_bn(train, name="bn2")(out))
        out = _conv(self.out_planes, 3, 1, name="conv2")(out)
        if equal:
            shortcut = x
        else:
            shortcut = _conv(self.out_planes, 1, self.stride, name="shortcut")(x)
        return shortcut + out


class WideResNet(nn.Module):
    """Pre-activation Wide ResNet (Zagoruyko & Komodakis, BMVC 2016), as in SIB.

    With the defaults this is WRN-28-10: a 3x3 conv with 16 filters, then three
    groups of ``(depth - 4) // 6`` basic blocks of widths ``16k, 32k, 64k``
    (``k = widen_factor``; the first block of each group uses that group's
    stride), then BatchNorm -> ReLU -> global average pooling, giving
    ``64k`` = 640 features. No dropout. Use ``strides=(2, 2, 2)`` for 80 px
    inputs (mini-ImageNet in SIB) and ``(1, 2, 2)`` for 32 px inputs (CIFAR-FS).
    With ``remat`` each block's activations are recomputed in the backward pass (less memory
    when training the backbone; no effect on a frozen forward). Parameters are the same.
    """

    depth: int = 28
    widen_factor: int = 10
    strides: tuple[int, int, int] = (2, 2, 2)
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if (self.depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {self.depth}.")
        n = (self.depth - 4) // 6
        k = self.widen_factor
        widths = (16 * k, 32 * k, 64 * k)
        x = _conv(16, 3, name="conv1")(x)
        in_planes = 16
        block = _maybe_remat(_WideBasicBlock, self.remat)
        for g, (width, stride) in enumerate(zip(widths, self.strides, strict=True)):
            for b in range(n):
                x = block(
                    in_planes=in_planes,
                    out_planes=width,
                    stride=stride if b == 0 else 1,
                    name=f"group{g}_block{b}",
                )(x, train)
                in_planes = width
        x = nn.relu(_bn(train, name="bn_final")(x))
        return jnp.mean(x, axis=(1, 2))


class _ResBlock12(nn.Module):
    """One ResNet-12 block: 3 x (conv3x3 -> BN -> LeakyReLU) with a 1x1-conv
    shortcut added before the last activation, then 2x2 max-pooling."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        shortcut = _conv(self.width, 1, name="shortcut_conv")(x)
        shortcut = _bn(train, name="shortcut_bn")(shortcut)
        out = x
        for i in range(3):
            out = _conv(self.width, 3, name=f"conv{i}")(out)
            out = _bn(train, name=f"bn{i}")(out)
            if i < 2:
                out = nn.leaky_relu(out, negative_slope=0.1)
        out = nn.leaky_relu(out + shortcut, negative_slope=0.1)
        return _max_pool2(out, train)


class ResNet12(nn.Module):
    """ResNet-12 of MetaOptNet (Lee et al., "Meta-Learning with Differentiable
    Convex Optimization", CVPR 2019), as used with a 640-d output by FEAT
    (Ye et al., CVPR 2020) and later work.

    Four residual blocks of widths ``(64, 160, 320, 640)``; each block is
    3 x [3x3 conv (no bias) -> BatchNorm -> LeakyReLU(0.1)] where the last
    LeakyReLU is applied after adding a 1x1-conv + BatchNorm shortcut, followed
    by 2x2 max-pooling. The output is globally average-pooled to 640 features
    (MetaOptNet itself flattens the 5x5x640 map instead). DropBlock and dropout
    regularisation of the original are omitted. ``remat`` as in ``WideResNet``.
    """

    widths: tuple[int, ...] = (64, 160, 320, 640)
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        block = _maybe_remat(_ResBlock12, self.remat)
        for i, width in enumerate(self.widths):
            x = block(width, name=f"block{i}")(x, train)
        return jnp.mean(x, axis=(1, 2))


# (image size, remat) -> (Flax module with `__call__(x, train) -> (N, D)`, D)
BackboneFactory = Callable[[int, bool], tuple[nn.Module, int]]


def _conv4_no_remat(remat: bool) -> None:
    if remat:
        raise ConfigError("--config.pretrain.backbone_remat=True is only implemented for the "
                          "residual backbones (wrn28_10, resnet12); Conv-4 is small enough "
                          "without it.")


def _conv4(image_size: int, remat: bool) -> tuple[nn.Module, int]:
    _conv4_no_remat(remat)
    model = Conv4()
    side = image_size
    for _ in range(4):
        side //= 2
    return model, model.width * side * side


def _conv4_gap_factory(max_pools: int, name: str) -> BackboneFactory:
    def factory(image_size: int, remat: bool) -> tuple[nn.Module, int]:
        _conv4_no_remat(remat)
        smallest = 2 ** max_pools
        if image_size < smallest:
            raise ConfigError(f"--config.backbone={name} needs images of at least {smallest} px "
                              f"({max_pools} 2x2 max-pools before the average), not "
                              f"{image_size}.")
        model = Conv4(max_pools=max_pools, global_average=True)
        return model, model.width
    return factory


def _wrn28_10(image_size: int, remat: bool) -> tuple[nn.Module, int]:
    strides = (1, 2, 2) if image_size <= 32 else (2, 2, 2)
    model = WideResNet(depth=28, widen_factor=10, strides=strides, remat=remat)
    return model, 64 * model.widen_factor


def _resnet12(image_size: int, remat: bool) -> tuple[nn.Module, int]:
    del image_size
    model = ResNet12(remat=remat)
    return model, model.widths[-1]


BACKBONES: dict[str, BackboneFactory] = {
    "conv4": _conv4,
    "conv4_gap": _conv4_gap_factory(3, "conv4_gap"),
    "conv4_gap_two_pools": _conv4_gap_factory(2, "conv4_gap_two_pools"),
    "wrn28_10": _wrn28_10,
    "resnet12": _resnet12,
}


def register_backbone(name: str, factory: BackboneFactory) -> BackboneFactory:
    """Make `factory` available as `--config.backbone=<name>`.

    `factory(image_size, remat)` returns `(module, feature_dim)`: a Flax module whose
    `__call__(x, train: bool)` maps NHWC float images to (N, feature_dim) features and uses
    BatchNorm (or none) like the built-in backbones, and the size of those features.
    """
    if name in BACKBONES:
        raise ConfigError(f"a backbone named {name!r} is already registered; pick another name.")
    BACKBONES[name] = factory
    return factory


def _imported_factory(spec: str) -> BackboneFactory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"--config.backbone={spec!r}: module {module_name!r} cannot be "
                          f"imported ({error}); put it on PYTHONPATH or fix the name.") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--config.backbone={spec!r}: {module_name} has no callable {attr!r}; "
                          "name a factory (image_size, remat) -> (module, feature_dim).")
    return factory


def get_backbone(name: str, image_size: int, remat: bool = False) -> tuple[nn.Module, int]:
    """Build a backbone by name for square ``image_size`` inputs; returns ``(module, D)``.

    ``name`` is a registered name (``"conv4"``; ``"conv4_gap"`` and ``"conv4_gap_two_pools"``,
    Conv-4 ending in a global average after three or two max-pools; ``"wrn28_10"``, with
    strides ``(1, 2, 2)`` for ``image_size <= 32`` and ``(2, 2, 2)`` above; ``"resnet12"``;
    or one added with :func:`register_backbone`) or ``"package.module:factory"``, a factory
    importable from anywhere with the signature of :func:`register_backbone`. ``remat``
    recomputes each residual block in the backward pass (``wrn28_10`` and ``resnet12``).
    """
    if name in BACKBONES:
        factory = BACKBONES[name]
    elif ":" in name:
        factory = _imported_factory(name)
    else:
        raise ConfigError(f"Unknown backbone {name!r}; valid names are: {', '.join(BACKBONES)}, "
                          "or 'package.module:factory' for your own.")
    module, feat_dim = factory(image_size, remat)
    if not isinstance(module, nn.Module) or int(feat_dim) < 1:
        raise ConfigError(f"--config.backbone={name!r} returned {module!r} and {feat_dim!r}; a "
                          "backbone factory returns (Flax module, feature dimension).")
    return module, int(feat_dim)


@dataclasses.dataclass
class Backbone:
    """A backbone module with its variables (`{"params", "batch_stats"}`)."""

    module: nn.Module
    variables: Any
    feat_dim: int

    def features(self, variables: Any, images: jax.Array) -> jax.Array:
        """Inference-mode features (BatchNorm uses running statistics): the frozen backbone."""
        return self.module.apply(variables, images, train=False)


def init_backbone(module: nn.Module, feat_dim: int, image_shape: tuple[int, int, int],
                  seed: int) -> Backbone:
    """`module` with freshly initialised variables for images of `image_shape` (H, W, C)."""
    variables = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *image_shape)),
                            train=False)
    return Backbone(module, variables, feat_dim)


# ---- reduced-precision compute ------------------------------------------------------------
# bfloat16 arithmetic on float32 parameters: optimizer updates and checkpoints stay float32,
# a forward pass casts the parameters and its input, and features go back to float32, so the
# SIB head and the losses always run in float32. It halves the backbone's activation memory
# and uses the bf16 units of TPUs and recent GPUs; on CPU it is slower, so it is off by default.

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str, flag: str) -> Any:
    """The dtype named by a config field (`flag` names the field in the error)."""
    if name not in DTYPES:
        raise ConfigError(f"{flag}={name!r} is not a supported dtype; use "
                         f"{' or '.join(DTYPES)}.")
    return DTYPES[name]


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Every floating-point leaf of `tree` cast to `dtype`; integer leaves untouched."""
    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)
