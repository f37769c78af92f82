"""The reference's state-dict layouts: one entry per torch key, where it lives in this
package's Flax trees and how its array is transformed.

Reference names (Hu et al.'s ``synthetic_info_bottleneck`` code) and where they go:

Conv-4-64 (``ConvNet_4_64``), ``i`` in 0..3:
  ``conv_blocks.{i}.layers.Conv.weight`` (O, I, 3, 3)  -> ``params/conv{i}/kernel`` (3, 3, I, O)
  ``conv_blocks.{i}.layers.BatchNorm.weight|bias``     -> ``params/bn{i}/scale|bias``
  ``conv_blocks.{i}.layers.BatchNorm.running_mean|var`` -> ``batch_stats/bn{i}/mean|var``

WRN-28-10 (``WideResNet``), group ``g`` in 1..3, block ``j`` in 0..3:
  ``conv1.weight``                              -> ``params/conv1/kernel``
  ``block{g}.layer.{j}.bn1|bn2.*``              -> ``group{g-1}_block{j}/bn1|bn2`` (as above)
  ``block{g}.layer.{j}.conv1|conv2.weight``     -> ``params/group{g-1}_block{j}/conv1|conv2``
  ``block{g}.layer.0.convShortcut.weight``      -> ``params/group{g-1}_block0/shortcut/kernel``
  ``bn1.*`` (the final BatchNorm)               -> ``bn_final``

SIB head (``ClassifierSIB``, N ways, D features):
  ``bias`` (1,), ``scale_cls`` (1,)             -> ``classifier/bias``, ``classifier/scale`` ()
  ``wnLayerFavg.weight`` (D,)                   -> ``init/w`` (D,)  (Conv-4: see `convert`)
  ``dni.layer1.0.weight|bias`` (8N, N)          -> ``grad_net/dense1/kernel`` (N, 8N) ``|bias``
  ``dni.layer1.2.weight|bias`` (BatchNorm1d)    -> ``grad_net/bn1/scale|bias``
  ``dni.layer2.0.*``, ``dni.layer2.2.*``        -> ``grad_net/dense2``, ``grad_net/bn2``
  ``dni.layer3.weight|bias`` (N, 8N)            -> ``grad_net/dense3/kernel`` (8N, N) ``|bias``
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from metaunlab.errors import ConfigError

ARCHS = ("conv4", "wrn28_10")
# The reference's own architecture names are accepted too.
_ARCH_ALIASES = {"convnet_4_64": "conv4", "conv4": "conv4", "wrn_28_10": "wrn28_10",
                 "wrn28_10": "wrn28_10", "wrn-28-10": "wrn28_10"}
CONV4_WIDTH = 64
_WRN_DEPTH, _WRN_WIDEN = 28, 10


def canonical_arch(arch: str) -> str:
    """``"conv4"`` or ``"wrn28_10"`` for this package's or the reference's name of a backbone."""
    name = _ARCH_ALIASES.get(str(arch).lower())
    if name is None:
        raise ConfigError(f"unknown architecture {arch!r}; the reference checkpoints are "
                         f"{' or '.join(ARCHS)} (also spelled ConvNet_4_64, WRN_28_10).")
    return name


@dataclasses.dataclass(frozen=True)
class Entry:
    """One torch key: its shape, where it lives in the Flax tree, and how it is transformed.

    kind: "conv" (OIHW <-> HWIO), "linear" ((out, in) <-> (in, out)), "scalar" ((1,) <-> ()),
    "copy" (same shape); or, for buffers Flax does not keep (flax_path None), the value
    written on export: "count" (int64 0), "zeros", "ones".
    """

    torch_key: str
    torch_shape: tuple[int, ...]
    flax_path: tuple[str, ...] | None
    kind: str

    @property
    def required(self) -> bool:
        return self.flax_path is not None


def bn_entries(prefix: str, flax_name: tuple[str, ...], features: int) -> list[Entry]:
    """A backbone BatchNorm2d: affine parameters and running averages, all used."""
    return [
        Entry(f"{prefix}.weight", (features,), ("params", *flax_name, "scale"), "copy"),
        Entry(f"{prefix}.bias", (features,), ("params", *flax_name, "bias"), "copy"),
        Entry(f"{prefix}.running_mean", (features,), ("batch_stats", *flax_name, "mean"),
               "copy"),
        Entry(f"{prefix}.running_var", (features,), ("batch_stats", *flax_name, "var"), "copy"),
        Entry(f"{prefix}.num_batches_tracked", (), None, "count"),
    ]


def conv_entry(key: str, out_ch: int, in_ch: int, kernel: int,
                flax_name: tuple[str, ...]) -> Entry:
    return Entry(key, (out_ch, in_ch, kernel, kernel), ("params", *flax_name, "kernel"), "conv")


def conv4_layout(in_channels: int) -> list[Entry]:
    entries = []
    for i in range(4):
        cin = in_channels if i == 0 else CONV4_WIDTH
        prefix = f"conv_blocks.{i}.layers"
        entries.append(conv_entry(f"{prefix}.Conv.weight", CONV4_WIDTH, cin, 3, (f"conv{i}",)))
        entries += bn_entries(f"{prefix}.BatchNorm", (f"bn{i}",), CONV4_WIDTH)
    return entries


def wrn_layout(in_channels: int) -> list[Entry]:
    n = (_WRN_DEPTH - 4) // 6
    widths = (16 * _WRN_WIDEN, 32 * _WRN_WIDEN, 64 * _WRN_WIDEN)
    entries = [conv_entry("conv1.weight", 16, in_channels, 3, ("conv1",))]
    in_planes = 16
    for g, width in enumerate(widths):
        for j in range(n):
            prefix, name = f"block{g + 1}.layer.{j}", f"group{g}_block{j}"
            entries += bn_entries(f"{prefix}.bn1", (name, "bn1"), in_planes)
            entries.append(conv_entry(f"{prefix}.conv1.weight", width, in_planes, 3,
                                       (name, "conv1")))
            entries += bn_entries(f"{prefix}.bn2", (name, "bn2"), width)
            entries.append(conv_entry(f"{prefix}.conv2.weight", width, width, 3,
                                       (name, "conv2")))
            if in_planes != width:
                entries.append(conv_entry(f"{prefix}.convShortcut.weight", width, in_planes, 1,
                                           (name, "shortcut")))
            in_planes = width
    return entries + bn_entries("bn1", ("bn_final",), in_planes)


def sib_layout(n_way: int, feat_dim: int) -> list[Entry]:
    hidden = 8 * n_way
    entries = [
        Entry("bias", (1,), ("classifier", "bias"), "scalar"),
        Entry("scale_cls", (1,), ("classifier", "scale"), "scalar"),
        Entry("wnLayerFavg.weight", (feat_dim,), ("init", "w"), "copy"),
    ]
    for layer, (fan_in, fan_out) in enumerate(((n_way, hidden), (hidden, hidden)), start=1):
        dense, bn, prefix = f"dense{layer}", f"bn{layer}", f"dni.layer{layer}"
        entries += [
            Entry(f"{prefix}.0.weight", (fan_out, fan_in), ("grad_net", dense, "kernel"),
                   "linear"),
            Entry(f"{prefix}.0.bias", (fan_out,), ("grad_net", dense, "bias"), "copy"),
            Entry(f"{prefix}.2.weight", (fan_out,), ("grad_net", bn, "scale"), "copy"),
            Entry(f"{prefix}.2.bias", (fan_out,), ("grad_net", bn, "bias"), "copy"),
            # phi always normalises with batch statistics: these buffers are never read.
            Entry(f"{prefix}.2.running_mean", (fan_out,), None, "zeros"),
            Entry(f"{prefix}.2.running_var", (fan_out,), None, "ones"),
            Entry(f"{prefix}.2.num_batches_tracked", (), None, "count"),
        ]
    return entries + [
        Entry("dni.layer3.weight", (n_way, hidden), ("grad_net", "dense3", "kernel"), "linear"),
        Entry("dni.layer3.bias", (n_way,), ("grad_net", "dense3", "bias"), "copy"),
    ]


def shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def flax_shape(entry: Entry) -> tuple[int, ...]:
    s = entry.torch_shape
    if entry.kind == "conv":
        return (s[2], s[3], s[1], s[0])
    if entry.kind == "linear":
        return (s[1], s[0])
    if entry.kind == "scalar":
        return ()
    return s


def from_torch_array(entry: Entry, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if entry.kind == "conv":
        value = value.transpose(2, 3, 1, 0)
    elif entry.kind == "linear":
        value = value.T
    elif entry.kind == "scalar":
        value = value.reshape(())
    return np.array(value, order="C")  # a C-ordered copy (ascontiguousarray makes 0-d 1-d)


def to_torch_array(entry: Entry, value: np.ndarray | None) -> np.ndarray:
    if entry.kind == "count":
        return np.asarray(0, np.int64)
    if entry.kind == "zeros":
        return np.zeros(entry.torch_shape, np.float32)
    if entry.kind == "ones":
        return np.ones(entry.torch_shape, np.float32)
    value = np.asarray(value, np.float32)
    if entry.kind == "conv":
        value = value.transpose(3, 2, 0, 1)
    elif entry.kind == "linear":
        value = value.T
    elif entry.kind == "scalar":
        value = value.reshape((1,))
    return np.array(value, order="C")  # a C-ordered copy (ascontiguousarray makes 0-d 1-d)


def first_conv_in_channels(value: Any, default: int = 3, axis: int = 1) -> int:
    shape = np.shape(value) if value is not None else ()
    return int(shape[axis]) if len(shape) == 4 else default


def backbone_layout(arch: str, in_channels: int) -> list[Entry]:
    return conv4_layout(in_channels) if arch == "conv4" else wrn_layout(in_channels)


FIRST_CONV = {"conv4": ("conv_blocks.0.layers.Conv.weight", "conv0"),
               "wrn28_10": ("conv1.weight", "conv1")}
