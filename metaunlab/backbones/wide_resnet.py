"""WRN-28-10 in the exact form of the SIB reference code."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from metaunlab.backbones.layers import batch_norm, conv, maybe_remat

__all__ = ["WideResNet"]


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
        act = nn.relu(batch_norm(train, name="bn1")(x))
        if not equal:
            x = act
        out = conv(self.out_planes, 3, self.stride, name="conv1")(act)
        out = nn.relu(batch_norm(train, name="bn2")(out))
        out = conv(self.out_planes, 3, 1, name="conv2")(out)
        if equal:
            shortcut = x
        else:
            shortcut = conv(self.out_planes, 1, self.stride, name="shortcut")(x)
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
        x = conv(16, 3, name="conv1")(x)
        in_planes = 16
        block = maybe_remat(_WideBasicBlock, self.remat)
        for g, (width, stride) in enumerate(zip(widths, self.strides, strict=True)):
            for b in range(n):
                x = block(
                    in_planes=in_planes,
                    out_planes=width,
                    stride=stride if b == 0 else 1,
                    name=f"group{g}_block{b}",
                )(x, train)
                in_planes = width
        x = nn.relu(batch_norm(train, name="bn_final")(x))
        return jnp.mean(x, axis=(1, 2))
