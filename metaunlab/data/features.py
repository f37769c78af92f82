"""Bring your own features: one `.npz` file in place of images and a backbone.

`--config.data.format=features --config.data.root=FILE.npz` meta-trains, evaluates and
compares SIB and every baseline on features computed elsewhere. The file holds, for each
split of `train`, `val` and `test`:

    <split>_features  (N, D) float    one row per example, the same D for every split
    <split>_labels    (N,)   int      class ids; each split's classes are its own

written for instance with `np.savez("feats.npz", train_features=..., train_labels=..., ...)`.
The classes of the three splits should be disjoint (few-shot evaluation on classes seen in
meta-training measures memory, not learning); the labels are re-numbered 0..k-1 per split in
the order of their first value, as the image datasets are.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from metaunlab.data.errors import DataError, looks_like_html
from metaunlab.data.npz import read_npz
from metaunlab.files import atomic_path, what_is_at

SPLITS = ("train", "val", "test")
FEATURES_FORMAT = "features"  # the value of config.data.format that reads a features file


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureSplit:
    """The features (N, D) float32 and labels (N,) int32 in 0..k-1 of one split."""

    features: np.ndarray
    labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.labels)


def load_feature_file(path: str | os.PathLike) -> dict[str, FeatureSplit]:
    """`{"train", "val", "test"} -> FeatureSplit` from a features `.npz` (module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"features file {path!r} {what_is_at(path, 'a file')}; point "
                        "--config.data.root at a .npz with train/val/test _features and _labels "
                        "arrays.")
    _check_is_npz(path)
    try:
        arrays = read_npz(path)  # headers checked against the memory budget first
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"features file {path} is not a readable .npz ({error}); write it with "
                        "numpy.savez.") from None
    splits, dim = {}, None
    for split in SPLITS:
        names = (f"{split}_features", f"{split}_labels")
        missing = [n for n in names if n not in arrays]
        if missing:
            raise DataError(f"features file {path} has no {missing[0]!r} (it holds "
                            f"{sorted(arrays)}); it needs {', '.join(_all_names())}.")
        feats, labels = arrays[names[0]], arrays[names[1]]
        if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating) or not feats.size:
            raise DataError(f"{names[0]} in {path} must be a non-empty (N, D) float array (N "
                            f"and D at least 1), got {feats.dtype} of shape {feats.shape}.")
        if labels.shape != (len(feats),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{names[1]} in {path} must be {len(feats)} integers, one per row "
                            f"of {names[0]}, got {labels.dtype} of shape {labels.shape}.")
        if dim is not None and feats.shape[1] != dim:
            raise DataError(f"{names[0]} in {path} has {feats.shape[1]} features per row where "
                            f"train has {dim}; every split needs the same feature dimension.")
        with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf
            as_float32 = np.asarray(feats, np.float32)
        if not np.all(np.isfinite(as_float32)):
            if np.all(np.isfinite(feats)):
                largest = float(np.max(np.abs(feats)))
                raise DataError(f"{names[0]} in {path} holds values beyond float32's range "
                                f"(up to {largest:.3g} in magnitude, where float32 ends at "
                                f"{float(np.finfo(np.float32).max):.3g}); scale those features "
                                "down.")
            raise DataError(f"{names[0]} in {path} holds NaN or infinite values; recompute "
                            "those features.")
        dim = feats.shape[1]
        _, first = np.unique(labels, return_index=True)
        order = labels[np.sort(first)]  # classes in the order they first appear
        index = {int(c): i for i, c in enumerate(order)}
        relabelled = np.fromiter((index[int(c)] for c in labels), np.int32, len(labels))
        splits[split] = FeatureSplit(as_float32, relabelled)
    return splits


# The first bytes of a NumPy archive (a zip: a file's header, or the end of an empty one) and
# of a lone NumPy array.
_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _check_is_npz(path: str) -> None:
    """Refuse, from its first bytes, a file that is not a NumPy .npz archive."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as error:
        raise DataError(f"cannot read the features file {path} ({error.strerror}); check "
                        "its permissions.") from None
    if head.startswith(_NPZ_MAGIC):
        return
    if not head:
        what = "is empty (0 bytes)"
    elif head.startswith(_NPY_MAGIC):
        what = "is a single NumPy array (.npy), not an archive of the six arrays"
    else:
        kind = "an HTML page (a download's error page?), " if looks_like_html(head) else ""
        what = f"is {kind}not a NumPy archive (it starts with {repr(head[:16])[1:]})"
    raise DataError(f"features file {path} is not a readable .npz: it {what}; write it with "
                    f"numpy.savez ({', '.join(_all_names())}).")


def _all_names() -> list[str]:
    return [f"{s}_{kind}" for s in SPLITS for kind in ("features", "labels")]


def save_feature_file(path: str | os.PathLike,
                      splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write a features `.npz` that `load_feature_file` reads (module docstring), atomically.

    Args:
      path: the `.npz` to write.
      splits: `{"train", "val", "test"} -> (features (N, D), labels (N,))`.
    """
    if set(splits) != set(SPLITS):
        raise ValueError(f"splits must be exactly {SPLITS}, got {sorted(splits)}.")
    arrays = {}
    for split, (features, labels) in splits.items():
        arrays[f"{split}_features"] = np.asarray(features, np.float32)
        arrays[f"{split}_labels"] = np.asarray(labels, np.int64)
    # Through a symbolic link to the file it names, as for every output.
    with atomic_path(os.path.realpath(path), suffix=".npz") as partial, \
            open(partial, "wb") as file:
        np.savez(file, **arrays)
