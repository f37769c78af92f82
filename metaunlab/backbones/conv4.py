"""Conv-4-64, the classic few-shot backbone, and its global-average variants."""

from __future__ import annotations

import jax
from flax import linen as nn

from metaunlab.backbones.layers import batch_norm, conv, max_pool2
from metaunlab.errors import ConfigError

__all__ = ["Conv4"]


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
    49 cells, at slightly more pretraining time. The Omniglot demo uses it, chosen on
    validation (docs/omniglot.md, "Backbone levers").
    """

    width: int = 64
    max_pools: int = 4  # the first `max_pools` blocks end in a 2x2 max-pool
    global_average: bool = False  # average the last map over space instead of flattening

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not 0 <= self.max_pools <= 4:
            raise ConfigError(f"Conv4(max_pools={self.max_pools!r}) is not between 0 and 4.")
        for i in range(4):
            x = conv(self.width, 3, name=f"conv{i}")(x)
            x = batch_norm(train, name=f"bn{i}")(x)
            x = nn.relu(x)
            if i < self.max_pools:
                x = max_pool2(x, train)
        if self.global_average:
            return x.mean(axis=(1, 2))
        return x.reshape((x.shape[0], -1))
