"""Convert between the PyTorch reference state dicts and this package's Flax trees.

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
  ``wnLayerFavg.weight`` (D,)                   -> ``init/w`` (D,)  (see Conv-4 below)
  ``dni.layer1.0.weight|bias`` (8N, N)          -> ``grad_net/dense1/kernel`` (N, 8N) ``|bias``
  ``dni.layer1.2.weight|bias`` (BatchNorm1d)    -> ``grad_net/bn1/scale|bias``
  ``dni.layer2.0.*``, ``dni.layer2.2.*``        -> ``grad_net/dense2``, ``grad_net/bn2``
  ``dni.layer3.weight|bias`` (N, 8N)            -> ``grad_net/dense3/kernel`` (8N, N) ``|bias``

Conventions:
* Convolution weights are OIHW in torch and HWIO in Flax; Linear weights are (out, in) in
  torch and Dense kernels (in, out) in Flax. Every array comes out as float32 numpy.
* ``num_batches_tracked`` is optional on input and ignored: in inference mode BatchNorm never
  reads it (nor does training with a fixed momentum). On output it is written as 0.
* The synthetic-gradient network phi normalises with batch statistics, always (the
  reference keeps the SIB head in training mode at meta-test time), so the running averages
  of ``dni.layer{1,2}.2`` are never used: they are optional and ignored on input, and written
  as zeros (mean), ones (var) and 0 (num_batches_tracked) on output.
* Conv-4 feature order: the reference flattens an NCHW map, so feature ``c*H*W + h*W + w``;
  the Flax Conv-4 flattens NHWC, feature ``(h*W + w)*C + c``. Same numbers, permuted:
  ``flax_feats == torch_feats[:, conv4_torch_feature_order(D)]``. SIB is invariant to a fixed
  permutation of the features only if ``init/w`` (``wnLayerFavg.weight``, one weight per
  feature) is permuted with them, so ``sib_from_torch(..., arch="conv4")`` permutes it into
  the Flax order and ``sib_to_torch(..., arch="conv4")`` permutes it back. For WRN-28-10 the
  features are globally average-pooled channels, in the same order in both frameworks.

Unknown, missing or mis-shaped keys raise one ``ValueError`` that lists all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "ARCHS",
    "backbone_from_torch",
    "backbone_to_torch",
    "canonical_arch",
    "conv4_torch_feature_order",
    "sib_from_torch",
    "sib_to_torch",
    "split_checkpoint",
]

ARCHS = ("conv4", "wrn28_10")
# The reference's own architecture names are accepted too.
_ARCH_ALIASES = {"convnet_4_64": "conv4", "conv4": "conv4", "wrn_28_10": "wrn28_10",
                 "wrn28_10": "wrn28_10", "wrn-28-10": "wrn28_10"}
_CONV4_WIDTH = 64
_WRN_DEPTH, _WRN_WIDEN = 28, 10
_MAX_LISTED = 12


def canonical_arch(arch: str) -> str:
    """``"conv4"`` or ``"wrn28_10"`` for this package's or the reference's name of a backbone."""
    name = _ARCH_ALIASES.get(str(arch).lower())
    if name is None:
        raise ValueError(f"unknown architecture {arch!r}; the reference checkpoints are "
                         f"{' or '.join(ARCHS)} (also spelled ConvNet_4_64, WRN_28_10).")
    return name


# --------------------------------------------------------------------------------------------
# the layout tables: one entry per torch state-dict key
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
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


def _bn_entries(prefix: str, flax_name: tuple[str, ...], features: int) -> list[_Entry]:
    """A backbone BatchNorm2d: affine parameters and running averages, all used."""
    return [
        _Entry(f"{prefix}.weight", (features,), ("params", *flax_name, "scale"), "copy"),
        _Entry(f"{prefix}.bias", (features,), ("params", *flax_name, "bias"), "copy"),
        _Entry(f"{prefix}.running_mean", (features,), ("batch_stats", *flax_name, "mean"),
               "copy"),
        _Entry(f"{prefix}.running_var", (features,), ("batch_stats", *flax_name, "var"), "copy"),
        _Entry(f"{prefix}.num_batches_tracked", (), None, "count"),
    ]


def _conv_entry(key: str, out_ch: int, in_ch: int, kernel: int,
                flax_name: tuple[str, ...]) -> _Entry:
    return _Entry(key, (out_ch, in_ch, kernel, kernel), ("params", *flax_name, "kernel"), "conv")


def _conv4_layout(in_channels: int) -> list[_Entry]:
    entries = []
    for i in range(4):
        cin = in_channels if i == 0 else _CONV4_WIDTH
        prefix = f"conv_blocks.{i}.layers"
        entries.append(_conv_entry(f"{prefix}.Conv.weight", _CONV4_WIDTH, cin, 3, (f"conv{i}",)))
        entries += _bn_entries(f"{prefix}.BatchNorm", (f"bn{i}",), _CONV4_WIDTH)
    return entries


def _wrn_layout(in_channels: int) -> list[_Entry]:
    n = (_WRN_DEPTH - 4) // 6
    widths = (16 * _WRN_WIDEN, 32 * _WRN_WIDEN, 64 * _WRN_WIDEN)
    entries = [_conv_entry("conv1.weight", 16, in_channels, 3, ("conv1",))]
    in_planes = 16
    for g, width in enumerate(widths):
        for j in range(n):
            prefix, name = f"block{g + 1}.layer.{j}", f"group{g}_block{j}"
            entries += _bn_entries(f"{prefix}.bn1", (name, "bn1"), in_planes)
            entries.append(_conv_entry(f"{prefix}.conv1.weight", width, in_planes, 3,
                                       (name, "conv1")))
            entries += _bn_entries(f"{prefix}.bn2", (name, "bn2"), width)
            entries.append(_conv_entry(f"{prefix}.conv2.weight", width, width, 3,
                                       (name, "conv2")))
            if in_planes != width:
                entries.append(_conv_entry(f"{prefix}.convShortcut.weight", width, in_planes, 1,
                                           (name, "shortcut")))
            in_planes = width
    return entries + _bn_entries("bn1", ("bn_final",), in_planes)


def _sib_layout(n_way: int, feat_dim: int) -> list[_Entry]:
    hidden = 8 * n_way
    entries = [
        _Entry("bias", (1,), ("classifier", "bias"), "scalar"),
        _Entry("scale_cls", (1,), ("classifier", "scale"), "scalar"),
        _Entry("wnLayerFavg.weight", (feat_dim,), ("init", "w"), "copy"),
    ]
    for layer, (fan_in, fan_out) in enumerate(((n_way, hidden), (hidden, hidden)), start=1):
        dense, bn, prefix = f"dense{layer}", f"bn{layer}", f"dni.layer{layer}"
        entries += [
            _Entry(f"{prefix}.0.weight", (fan_out, fan_in), ("grad_net", dense, "kernel"),
                   "linear"),
            _Entry(f"{prefix}.0.bias", (fan_out,), ("grad_net", dense, "bias"), "copy"),
            _Entry(f"{prefix}.2.weight", (fan_out,), ("grad_net", bn, "scale"), "copy"),
            _Entry(f"{prefix}.2.bias", (fan_out,), ("grad_net", bn, "bias"), "copy"),
            # phi always normalises with batch statistics: these buffers are never read.
            _Entry(f"{prefix}.2.running_mean", (fan_out,), None, "zeros"),
            _Entry(f"{prefix}.2.running_var", (fan_out,), None, "ones"),
            _Entry(f"{prefix}.2.num_batches_tracked", (), None, "count"),
        ]
    return entries + [
        _Entry("dni.layer3.weight", (n_way, hidden), ("grad_net", "dense3", "kernel"), "linear"),
        _Entry("dni.layer3.bias", (n_way,), ("grad_net", "dense3", "bias"), "copy"),
    ]


# --------------------------------------------------------------------------------------------
# the generic engine
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, for convenience
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{label} ({len(items)}): {shown}{more}"


def _raise_mismatch(what: str, unknown: list[str], missing: list[str],
                    misshaped: list[str], hint: str = "") -> None:
    parts = []
    if unknown:
        parts.append(_listing("unknown key(s)", unknown))
    if missing:
        parts.append(_listing("missing key(s)", missing))
    if misshaped:
        parts.append(_listing("mis-shaped key(s)", misshaped))
    if parts:
        raise ValueError(f"{what}: {'; '.join(parts)}.{hint}")


def _shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def _flax_shape(entry: _Entry) -> tuple[int, ...]:
    s = entry.torch_shape
    if entry.kind == "conv":
        return (s[2], s[3], s[1], s[0])
    if entry.kind == "linear":
        return (s[1], s[0])
    if entry.kind == "scalar":
        return ()
    return s


def _from_torch_array(entry: _Entry, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if entry.kind == "conv":
        value = value.transpose(2, 3, 1, 0)
    elif entry.kind == "linear":
        value = value.T
    elif entry.kind == "scalar":
        value = value.reshape(())
    return np.array(value, order="C")  # a C-ordered copy (ascontiguousarray makes 0-d 1-d)


def _to_torch_array(entry: _Entry, value: np.ndarray | None) -> np.ndarray:
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


def _hint(keys: list[str], layout: list[_Entry], name: str) -> str:
    expected = {e.torch_key for e in layout}
    if keys and not expected.intersection(keys):
        if all(k.startswith("module.") for k in keys):
            return (" Every key starts with 'module.' (saved from nn.DataParallel): strip "
                    "that prefix first.")
        return f" None of the expected keys is present: this is not a {name} state dict."
    return ""


def _convert_from_torch(state_dict: Mapping[str, Any], layout: list[_Entry],
                        name: str) -> dict[str, Any]:
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"a {name} state dict must be a mapping of names to arrays, "
                         f"got {type(state_dict).__name__}.")
    by_key = {e.torch_key: e for e in layout}
    keys = [str(k) for k in state_dict]
    unknown = [k for k in keys if k not in by_key]
    missing = [e.torch_key for e in layout if e.required and e.torch_key not in state_dict]
    misshaped, arrays = [], {}
    for key in keys:
        if key not in by_key:
            continue
        entry, value = by_key[key], _to_numpy(state_dict[key])
        if tuple(value.shape) != entry.torch_shape:
            misshaped.append(f"{key} (expected {_shape_str(entry.torch_shape)}, "
                             f"got {_shape_str(tuple(value.shape))})")
        else:
            arrays[key] = value
    _raise_mismatch(f"the state dict does not match the reference {name}", unknown, missing,
                    misshaped, _hint(keys, layout, name))
    tree: dict[str, Any] = {}
    for entry in layout:
        if entry.flax_path is None:
            continue
        node = tree
        for part in entry.flax_path[:-1]:
            node = node.setdefault(part, {})
        node[entry.flax_path[-1]] = _from_torch_array(entry, arrays[entry.torch_key])
    return tree


def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _flatten(value, (*prefix, str(key)))
    else:
        yield prefix, tree


def _convert_to_torch(tree: Any, layout: list[_Entry], name: str) -> OrderedDict[str, Any]:
    if not isinstance(tree, Mapping):
        raise ValueError(f"{name} variables must be a nested mapping, got {type(tree).__name__}.")
    by_path = {e.flax_path: e for e in layout if e.flax_path is not None}
    leaves = dict(_flatten(tree))
    unknown = ["/".join(p) for p in leaves if p not in by_path]
    missing = ["/".join(p) for p in by_path if p not in leaves]
    misshaped = []
    for path, value in leaves.items():
        entry = by_path.get(path)
        if entry is not None and tuple(np.shape(value)) != _flax_shape(entry):
            misshaped.append(f"{'/'.join(path)} (expected {_shape_str(_flax_shape(entry))}, "
                             f"got {_shape_str(tuple(np.shape(value)))})")
    _raise_mismatch(f"the variables do not match this package's {name}", unknown, missing,
                    misshaped)
    out: OrderedDict[str, Any] = OrderedDict()
    for entry in layout:
        value = None if entry.flax_path is None else _to_numpy(leaves[entry.flax_path])
        out[entry.torch_key] = _to_torch_array(entry, value)
    return out


# --------------------------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------------------------


def _first_conv_in_channels(value: Any, default: int = 3, axis: int = 1) -> int:
    shape = np.shape(value) if value is not None else ()
    return int(shape[axis]) if len(shape) == 4 else default


def _backbone_layout(arch: str, in_channels: int) -> list[_Entry]:
    return _conv4_layout(in_channels) if arch == "conv4" else _wrn_layout(in_channels)


_FIRST_CONV = {"conv4": ("conv_blocks.0.layers.Conv.weight", "conv0"),
               "wrn28_10": ("conv1.weight", "conv1")}


def backbone_from_torch(arch: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Flax variables ``{"params", "batch_stats"}`` of :class:`metaunlab.backbones.Conv4` or
    :class:`~metaunlab.backbones.WideResNet` (WRN-28-10) from a reference state dict.

    ``arch`` is ``"conv4"`` or ``"wrn28_10"``; ``state_dict`` maps names to arrays (numpy, or
    anything ``np.asarray`` accepts). The number of input channels is read from the first
    convolution (3 in every reference checkpoint). Arrays come out as float32 numpy.
    The WRN strides are not part of the weights: build the module with the strides for the
    image size (``get_backbone``), as the reference does (``isCifar`` for 32 px inputs).
    """
    arch = canonical_arch(arch)
    key = _FIRST_CONV[arch][0]
    in_channels = _first_conv_in_channels(state_dict.get(key) if isinstance(
        state_dict, Mapping) else None)
    return _convert_from_torch(state_dict, _backbone_layout(arch, in_channels), arch)


def backbone_to_torch(arch: str, variables: Mapping[str, Any]) -> OrderedDict[str, np.ndarray]:
    """The reference state dict (name -> numpy array, in the reference's key order) of Flax
    backbone variables; ``num_batches_tracked`` buffers are written as int64 0."""
    arch = canonical_arch(arch)
    try:
        first = variables["params"][_FIRST_CONV[arch][1]]["kernel"]
    except (KeyError, TypeError):
        first = None
    in_channels = _first_conv_in_channels(first, axis=2)
    return _convert_to_torch(variables, _backbone_layout(arch, in_channels), arch)


def conv4_torch_feature_order(feat_dim: int, channels: int = _CONV4_WIDTH) -> np.ndarray:
    """Index array ``perm`` with ``flax_feats == torch_feats[..., perm]`` for Conv-4.

    The reference flattens the final (C, H, W) map, this package's Conv-4 the (H, W, C) map;
    a square map is assumed (``feat_dim = channels * side**2``, e.g. 1600 = 64 * 5 * 5 for
    80 or 84 px inputs). ``np.argsort(perm)`` maps the other way.
    """
    side = math.isqrt(feat_dim // channels) if feat_dim > 0 else 0
    if feat_dim <= 0 or channels * side * side != feat_dim:
        raise ValueError(f"{feat_dim} Conv-4 features are not {channels} channels times a "
                         "square spatial map.")
    return np.arange(feat_dim).reshape(channels, side, side).transpose(1, 2, 0).reshape(-1)


# --------------------------------------------------------------------------------------------
# the SIB head
# --------------------------------------------------------------------------------------------


def _sib_dims(state_dict: Mapping[str, Any]) -> tuple[int, int]:
    """(n_way, feat_dim) read from the state dict, or a ValueError naming what is missing."""
    n_way = feat_dim = None
    for key, axis in (("dni.layer3.bias", 0), ("dni.layer3.weight", 0),
                      ("dni.layer1.0.weight", 1)):
        shape = np.shape(state_dict[key]) if key in state_dict else ()
        if len(shape) > axis:
            n_way = int(shape[axis])
            break
    shape = np.shape(state_dict["wnLayerFavg.weight"]) if "wnLayerFavg.weight" in state_dict \
        else ()
    if len(shape) == 1:
        feat_dim = int(shape[0])
    missing = []
    if n_way is None:
        missing.append("dni.layer3.bias")
    if feat_dim is None:
        missing.append("wnLayerFavg.weight")
    hint = _hint([str(k) for k in state_dict], _sib_layout(5, 1), "SIB (ClassifierSIB)")
    _raise_mismatch("the state dict does not match the reference SIB (ClassifierSIB)", [],
                    missing, [], hint)
    return n_way, feat_dim


def sib_from_torch(state_dict: Mapping[str, Any], arch: str | None = None) -> dict[str, Any]:
    """:mod:`metaunlab.sib` parameters from a reference ``ClassifierSIB`` state dict.

    The number of ways and the feature dimension are read from the state dict. ``arch`` names
    the backbone whose features the head was trained on: with ``"conv4"`` the per-feature
    weights ``wnLayerFavg.weight`` are permuted into the Flax Conv-4 feature order (see the
    module docstring); with ``None`` or ``"wrn28_10"`` they are kept as they are. The
    running averages of phi's BatchNorm layers are ignored (SIB never uses them).
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError("a SIB state dict must be a mapping of names to arrays, "
                         f"got {type(state_dict).__name__}.")
    n_way, feat_dim = _sib_dims(state_dict)
    params = _convert_from_torch(state_dict, _sib_layout(n_way, feat_dim), "SIB (ClassifierSIB)")
    if arch is not None and canonical_arch(arch) == "conv4":
        params["init"]["w"] = params["init"]["w"][conv4_torch_feature_order(feat_dim)]
    return params


def sib_to_torch(params: Mapping[str, Any], arch: str | None = None
                 ) -> OrderedDict[str, np.ndarray]:
    """The reference ``ClassifierSIB`` state dict of SIB parameters (the inverse of
    :func:`sib_from_torch`, with the same ``arch``). phi's BatchNorm running averages, which
    SIB never uses, are written as zeros (mean), ones (var) and 0 (num_batches_tracked)."""
    try:
        n_way = int(np.shape(params["grad_net"]["dense1"]["kernel"])[0])
        feat_dim = int(np.shape(params["init"]["w"])[0])
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError("SIB parameters need grad_net/dense1/kernel (N, 8N) and init/w (D,) "
                         f"to fix their shapes; {error!r} is missing.") from None
    out = _convert_to_torch(params, _sib_layout(n_way, feat_dim), "SIB head")
    if arch is not None and canonical_arch(arch) == "conv4":
        order = conv4_torch_feature_order(feat_dim)
        out["wnLayerFavg.weight"] = out["wnLayerFavg.weight"][np.argsort(order)]
    return out


# --------------------------------------------------------------------------------------------
# checkpoint files
# --------------------------------------------------------------------------------------------


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and (isinstance(v, np.ndarray | np.generic) or hasattr(v, "detach"))
        for k, v in obj.items())


def split_checkpoint(obj: Any) -> tuple[Mapping[str, Any], Mapping[str, Any] | None,
                                        dict[str, Any]]:
    """``(backbone_state_dict, sib_state_dict or None, meta)`` of a loaded reference file.

    Two forms exist: a backbone-only state dict (``main_feat.py``), and a meta-training
    checkpoint ``{"netFeat": ..., "SIB": ..., "lr": float, "nbStep": int}`` (``main.py``),
    where ``nbStep`` is K and ``lr`` the synthetic step size (the reference uses the same
    value for the outer optimizer). ``meta`` holds ``lr`` and ``nbStep`` (None if absent).
    """
    if isinstance(obj, Mapping) and "netFeat" in obj and "SIB" in obj:
        feat, head = obj["netFeat"], obj["SIB"]
        if not (_is_state_dict(feat) and _is_state_dict(head)):
            raise ValueError("the checkpoint has 'netFeat' and 'SIB' entries, but they are not "
                             "both state dicts (name -> tensor).")
        meta = {"lr": obj.get("lr"), "nbStep": obj.get("nbStep")}
        return feat, head, meta
    if _is_state_dict(obj):
        return obj, None, {"lr": None, "nbStep": None}
    keys = ", ".join(sorted(map(str, obj)))[:200] if isinstance(obj, Mapping) else ""
    raise ValueError("the checkpoint is neither a backbone state dict (name -> tensor) nor a "
                     "SIB checkpoint with 'netFeat' and 'SIB' entries (it holds a "
                     f"{type(obj).__name__}{' with keys ' + keys if keys else ''}).")
