"""The 640-d ResNet-12 of MetaOptNet."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from metaunlab.backbones.layers import batch_norm, conv, max_pool2, maybe_remat

__all__ = ["ResNet12"]


class _ResBlock12(nn.Module):
    """One ResNet-12 block: 3 x (conv3x3 -> BN -> LeakyReLU) with a 1x1-conv
    shortcut added before the last activation, then 2x2 max-pooling."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        shortcut = conv(self.width, 1, name="shortcut_conv")(x)
        shortcut = batch_norm(train, name="shortcut_bn")(shortcut)
        out = x
        for i in range(3):
            out = conv(self.width, 3, name=f"conv{i}")(out)
            out = batch_norm(train, name=f"bn{i}")(out)
            if i < 2:
                out = nn.leaky_relu(out, negative_slope=0.1)
        out = nn.leaky_relu(out + shortcut, negative_slope=0.1)
        return max_pool2(out, train)


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
        block = maybe_remat(_ResBlock12, self.remat)
        for i, width in enumerate(self.widths):
            x = block(width, name=f"block{i}")(x, train)
        return jnp.mean(x, axis=(1, 2))

