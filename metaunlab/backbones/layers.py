"""The layers every backbone is built from, in the form of the PyTorch reference code.

Convolutions are bias-free with PyTorch's ``kaiming_normal_(mode="fan_out")`` and explicit
symmetric padding, BatchNorm has PyTorch's defaults, max-pooling floors odd sizes, and
``maybe_remat`` recomputes a block's activations in the backward pass (the conventions are
spelled out in :mod:`metaunlab.backbones`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

__all__ = ["batch_norm", "conv", "conv_fan_out_normal", "max_pool2", "maybe_remat"]


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


def conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
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


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch default hyper-parameters."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=nn.initializers.ones,
        bias_init=nn.initializers.zeros,
        name=name,
    )


def max_pool2(x: jax.Array, train: bool) -> jax.Array:
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


def maybe_remat(block: type[nn.Module], remat: bool) -> type[nn.Module]:
    """`block`, or `block` with its activations recomputed in the backward pass. Argument 2
    of `__call__(self, x, train)` is a Python bool, hence static."""
    return nn.remat(block, static_argnums=(2,)) if remat else block
