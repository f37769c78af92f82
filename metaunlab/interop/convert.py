"""Convert between the PyTorch reference state dicts and this package's Flax trees.

Which torch key goes where: `metaunlab.interop.layouts`.

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

Unknown, missing or mis-shaped keys raise one ``DataError`` that lists all of them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from metaunlab import equivariant_phi
from metaunlab.data.errors import DataError
from metaunlab.interop.layouts import (
    ARCHS,
    CONV4_WIDTH,
    FIRST_CONV,
    Entry,
    backbone_layout,
    canonical_arch,
    first_conv_in_channels,
    flax_shape,
    from_torch_array,
    shape_str,
    sib_layout,
    to_torch_array,
)

_MAX_LISTED = 12

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
        raise DataError(f"{what}: {'; '.join(parts)}.{hint}")


def _hint(keys: list[str], layout: list[Entry], name: str) -> str:
    expected = {e.torch_key for e in layout}
    if keys and not expected.intersection(keys):
        if all(k.startswith("module.") for k in keys):
            return (" Every key starts with 'module.' (saved from nn.DataParallel): strip "
                    "that prefix first.")
        return f" None of the expected keys is present: this is not a {name} state dict."
    return ""


def _convert_from_torch(state_dict: Mapping[str, Any], layout: list[Entry],
                        name: str) -> dict[str, Any]:
    if not isinstance(state_dict, Mapping):
        raise DataError(f"a {name} state dict must be a mapping of names to arrays, "
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
            misshaped.append(f"{key} (expected {shape_str(entry.torch_shape)}, "
                             f"got {shape_str(tuple(value.shape))})")
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
        node[entry.flax_path[-1]] = from_torch_array(entry, arrays[entry.torch_key])
    return tree


def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _flatten(value, (*prefix, str(key)))
    else:
        yield prefix, tree


def _convert_to_torch(tree: Any, layout: list[Entry], name: str) -> OrderedDict[str, Any]:
    if not isinstance(tree, Mapping):
        raise DataError(f"{name} variables must be a nested mapping, got {type(tree).__name__}.")
    by_path = {e.flax_path: e for e in layout if e.flax_path is not None}
    leaves = dict(_flatten(tree))
    unknown = ["/".join(p) for p in leaves if p not in by_path]
    missing = ["/".join(p) for p in by_path if p not in leaves]
    misshaped = []
    for path, value in leaves.items():
        entry = by_path.get(path)
        if entry is not None and tuple(np.shape(value)) != flax_shape(entry):
            misshaped.append(f"{'/'.join(path)} (expected {shape_str(flax_shape(entry))}, "
                             f"got {shape_str(tuple(np.shape(value)))})")
    _raise_mismatch(f"the variables do not match this package's {name}", unknown, missing,
                    misshaped)
    out: OrderedDict[str, Any] = OrderedDict()
    for entry in layout:
        value = None if entry.flax_path is None else _to_numpy(leaves[entry.flax_path])
        out[entry.torch_key] = to_torch_array(entry, value)
    return out


# --------------------------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------------------------


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
    key = FIRST_CONV[arch][0]
    in_channels = first_conv_in_channels(state_dict.get(key) if isinstance(
        state_dict, Mapping) else None)
    return _convert_from_torch(state_dict, backbone_layout(arch, in_channels), arch)


def backbone_to_torch(arch: str, variables: Mapping[str, Any]) -> OrderedDict[str, np.ndarray]:
    """The reference state dict (name -> numpy array, in the reference's key order) of Flax
    backbone variables; ``num_batches_tracked`` buffers are written as int64 0."""
    arch = canonical_arch(arch)
    try:
        first = variables["params"][FIRST_CONV[arch][1]]["kernel"]
    except (KeyError, TypeError):
        first = None
    in_channels = first_conv_in_channels(first, axis=2)
    return _convert_to_torch(variables, backbone_layout(arch, in_channels), arch)


def conv4_torch_feature_order(feat_dim: int, channels: int = CONV4_WIDTH) -> np.ndarray:
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
    hint = _hint([str(k) for k in state_dict], sib_layout(5, 1), "SIB (ClassifierSIB)")
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
        raise DataError("a SIB state dict must be a mapping of names to arrays, "
                         f"got {type(state_dict).__name__}.")
    n_way, feat_dim = _sib_dims(state_dict)
    params = _convert_from_torch(state_dict, sib_layout(n_way, feat_dim), "SIB (ClassifierSIB)")
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
        raise DataError("SIB parameters need grad_net/dense1/kernel (N, 8N) and init/w (D,) "
                         f"to fix their shapes; {error!r} is missing.") from None
    if (any(key in params for key in ("centering", "readout", "power"))
            or equivariant_phi.holds(params["grad_net"])):
        raise DataError("this SIB head was meta-trained with metatrain.center_features, "
                        "metatrain.power_transform, metatrain.balanced_readout or "
                        "metatrain.phi=equivariant, which the "
                        "reference ClassifierSIB does not have; only heads of the reference "
                        "architecture convert.")
    out = _convert_to_torch(params, sib_layout(n_way, feat_dim), "SIB head")
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
            raise DataError("the checkpoint has 'netFeat' and 'SIB' entries, but they are not "
                             "both state dicts (name -> tensor).")
        meta = {"lr": obj.get("lr"), "nbStep": obj.get("nbStep")}
        return feat, head, meta
    if _is_state_dict(obj):
        return obj, None, {"lr": None, "nbStep": None}
    keys = ", ".join(sorted(map(str, obj)))[:200] if isinstance(obj, Mapping) else ""
    raise DataError("the checkpoint is neither a backbone state dict (name -> tensor) nor a "
                     "SIB checkpoint with 'netFeat' and 'SIB' entries (it holds a "
                     f"{type(obj).__name__}{' with keys ' + keys if keys else ''}).")
