"""An in-memory labelled image set: the common currency of every loader."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from metaunlab.data.errors import DataError


# eq=False: field-wise == on numpy arrays is ambiguous and would raise; identity is enough.
@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images with integer labels that index into ``class_names``.

    Loaders build one of these per split; episode samplers only need ``labels``, and the
    model gathers pixels with ``images[indices]``, so nothing here knows about episodes.
    """

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int32 (N,), values 0..num_classes-1
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        # Accept any sequence of names but store a tuple, so the dataclass stays hashable-ish
        # and nobody can mutate the class list behind the labels' back.
        object.__setattr__(self, "class_names", tuple(self.class_names))
        images, labels, names = self.images, self.labels, self.class_names
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(
                f"ImageDataset.images must be a uint8 array of shape (N, H, W, C), got "
                f"{_describe(images)}; convert it with np.asarray(images, np.uint8)."
            )
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
            raise DataError(
                f"ImageDataset.labels must be an int32 array of shape (N,), got "
                f"{_describe(labels)}; convert it with np.asarray(labels, np.int32)."
            )
        if len(labels) != len(images):
            raise DataError(
                f"ImageDataset has {len(images)} images but {len(labels)} labels; "
                "pass exactly one label per image."
            )
        if not all(isinstance(name, str) for name in names):
            raise DataError("ImageDataset.class_names must all be strings; convert them first.")
        if len(set(names)) != len(names):
            duplicate = next(name for name in names if names.count(name) > 1)
            raise DataError(
                f"ImageDataset.class_names lists {duplicate!r} more than once; "
                "class names must be unique."
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise DataError(
                f"ImageDataset.labels span {labels.min()}..{labels.max()} but there are only "
                f"{len(names)} class names; labels must lie in 0..{len(names) - 1}."
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def class_indices(self) -> list[np.ndarray]:
        """Sorted image indices of each class, in label order (empty array for an empty class)."""
        if self.num_classes == 0:
            return []
        # One stable argsort instead of num_classes boolean scans keeps this O(N log N).
        order = np.argsort(self.labels, kind="stable")
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return [chunk.astype(np.int64) for chunk in np.split(order, np.cumsum(counts)[:-1])]

    def select_classes(self, names_or_ids: Iterable[str | int]) -> ImageDataset:
        """The images of the given classes, relabelled 0..k-1 in the order given.

        Images keep their relative order, so a later ``class_indices`` stays sorted.
        """
        wanted = [self._class_id(item) for item in names_or_ids]
        if len(set(wanted)) != len(wanted):
            raise DataError("select_classes was given the same class twice; list each class once.")
        new_label = np.full(self.num_classes, -1, dtype=np.int32)
        new_label[wanted] = np.arange(len(wanted), dtype=np.int32)
        relabelled = new_label[self.labels]
        keep = relabelled >= 0
        return ImageDataset(
            images=self.images[keep],
            labels=relabelled[keep],
            class_names=tuple(self.class_names[i] for i in wanted),
        )

    def _class_id(self, item: str | int) -> int:
        if isinstance(item, str):
            try:
                return self.class_names.index(item)
            except ValueError:
                raise DataError(
                    f"class {item!r} is not in this dataset ({self.num_classes} classes, e.g. "
                    f"{self.class_names[:3]}); check the class name."
                ) from None
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if 0 <= item < self.num_classes:
                return int(item)
            raise DataError(
                f"class id {item} is out of range for a dataset with {self.num_classes} classes; "
                f"use an id in 0..{self.num_classes - 1}."
            )
        raise DataError(f"select_classes expects class names or integer ids, got {item!r}.")


def concat(datasets: Sequence[ImageDataset]) -> ImageDataset:
    """Stack datasets; classes with the same name are the same class.

    The merged class list is the union of names in order of first appearance, so
    concatenating disjoint splits simply appends their classes.
    """
    datasets = list(datasets)
    if not datasets:
        raise DataError("concat needs at least one dataset; pass a non-empty list.")
    shapes = {ds.images.shape[1:] for ds in datasets}
    if len(shapes) > 1:
        raise DataError(
            f"concat got datasets with different image shapes {sorted(shapes)}; "
            "load them with the same image_size and channels."
        )
    names: list[str] = []
    position: dict[str, int] = {}
    relabelled = []
    for ds in datasets:
        for name in ds.class_names:
            if name not in position:
                position[name] = len(names)
                names.append(name)
        mapping = np.array([position[name] for name in ds.class_names], dtype=np.int32)
        relabelled.append(mapping[ds.labels] if len(ds.labels) else ds.labels)
    return ImageDataset(
        images=np.concatenate([ds.images for ds in datasets]),
        labels=np.concatenate(relabelled).astype(np.int32),
        class_names=tuple(names),
    )


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
