"""Few-shot episodes: their shapes, index batches and a seeded, stateless sampler.

Episodes are index arrays into a dataset, never pixels, so the same sampler serves any
dataset and device layout (episode files: ``metaunlab.data.episode_files``). Episode
``(seed, step, b)`` is a pure function of those three integers: resuming at a step, or
each host building only its slice of a global batch, needs no sampler state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError
from metaunlab.data.query_sets import QueryDistribution


@dataclasses.dataclass(frozen=True)
class EpisodeShape:
    """An n_way-way n_shot-shot task with n_query query images per class.

    Attributes:
      n_way: classes per episode.
      n_shot: support images per class.
      n_query: query images per class (balanced query sets), or the number of query slots
        per class (n_way * n_query in all) for other query distributions.

    Raises:
      DataError: a field is not a positive integer.
    """

    n_way: int
    n_shot: int
    n_query: int

    def __post_init__(self) -> None:
        for name in ("n_way", "n_shot", "n_query"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise DataError(f"{name} must be a positive integer, got {value!r}.")

    @property
    def support_size(self) -> int:
        """Ns = n_way * n_shot."""
        return self.n_way * self.n_shot

    @property
    def query_size(self) -> int:
        """Query slots per episode, n_way * n_query."""
        return self.n_way * self.n_query


# eq=False: field-wise == on numpy arrays is ambiguous and would raise; compare fields instead.
@dataclasses.dataclass(frozen=True, eq=False)
class Episodes:
    """A batch of B episodes as int32 index and label arrays.

    ``*_idx`` index the sampler's dataset; ``*_labels`` are episode-local, 0..n_way-1, with
    label i meaning the i-th class drawn for that episode.

    Attributes:
      support_idx: (B, Ns) int32 indices of the support images.
      support_labels: (B, Ns) int32 episode-local labels.
      query_idx: (B, Nq) int32 indices of the query images (Nq slots).
      query_labels: (B, Nq) int32 episode-local labels.
      query_mask: (B, Nq) bool, or None when no episode is padded (below).

    ``query_mask`` (B, Nq) bool marks the real queries of episodes whose query sets have
    different sizes: they are padded to one number of slots, so a batch of them is one
    static shape and compiles once. A padded slot repeats a real query's index with label
    0 and must be ignored by whatever reads it (every method takes the mask). None: every
    slot is a real query.
    """

    support_idx: np.ndarray  # (B, n_way * n_shot)
    support_labels: np.ndarray  # (B, n_way * n_shot)
    query_idx: np.ndarray  # (B, Nq), Nq = n_way * n_query query slots
    query_labels: np.ndarray  # (B, Nq)
    query_mask: np.ndarray | None = None  # (B, Nq) bool, or None: no padding

    @property
    def mask_or_ones(self) -> np.ndarray:
        """``query_mask``, or all True when there is none."""
        if self.query_mask is None:
            return np.ones(self.query_idx.shape, bool)
        return self.query_mask

    def query_counts(self) -> np.ndarray:
        """(B, n_way) real queries of each class of each episode."""
        n_way = self.n_way
        one_hot = self.query_labels[..., None] == np.arange(n_way)
        return np.sum(one_hot & self.mask_or_ones[..., None], axis=1)

    @property
    def batch_size(self) -> int:
        """B, the number of episodes."""
        return self.support_idx.shape[0]

    @property
    def n_way(self) -> int:
        """Classes per episode (labels are 0..n_way-1)."""
        return int(self.support_labels.max()) + 1

    def __len__(self) -> int:
        return self.batch_size


def check_episode_shape(
    labels_or_dataset: np.ndarray | ImageDataset, shape: EpisodeShape, split_name: str
) -> None:
    """Raise DataError unless every ``shape`` episode can be drawn from these labels.

    Classes are the labels that occur (for a dataset: all of its classes, so an empty
    class is reported rather than ignored).

    Args:
      labels_or_dataset: (N,) int class labels, or an `ImageDataset`.
      shape: the episode shape to check.
      split_name: the split's name, for the message.

    Raises:
      DataError: fewer than n_way classes, or a class with fewer than n_shot + n_query
        images.
    """
    labels, names = _labels_and_names(labels_or_dataset)
    counts = _class_counts(labels, names)
    if shape.n_way > len(counts):
        raise DataError(
            f"split {split_name!r} has {len(counts)} classes but n_way={shape.n_way}; lower "
            f"n_way to at most {len(counts)} or use a split with more classes."
        )
    needed = shape.n_shot + shape.n_query
    short = [(name, count) for name, count in counts.items() if count < needed]
    if short:
        name, count = short[0]
        others = f" (and {len(short) - 1} other classes)" if len(short) > 1 else ""
        raise DataError(
            f"class {name!r}{others} in split {split_name!r} has {count} images but "
            f"n_shot={shape.n_shot} + n_query={shape.n_query} needs {needed}; lower n_shot or "
            "n_query, or drop the small classes."
        )


def _labels_and_names(
    labels_or_dataset: np.ndarray | ImageDataset,
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    if isinstance(labels_or_dataset, ImageDataset):
        return labels_or_dataset.labels, labels_or_dataset.class_names
    labels = np.asarray(labels_or_dataset)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"episode labels must be a 1-D integer array, got {labels.dtype} of shape "
            f"{labels.shape}."
        )
    return labels, None


def _class_counts(labels: np.ndarray, names: tuple[str, ...] | None) -> dict:
    """Image count per class, keyed by class name when known, else by label."""
    if names is not None:
        counts = np.bincount(labels, minlength=len(names))
        return {name: int(c) for name, c in zip(names, counts, strict=True)}
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts, strict=True)}


class EpisodeSampler:
    """Deterministic, stateless episode sampler over a label array.

    Each episode draws n_way classes without replacement, then n_shot + (its query count)
    distinct images of each; support and query are then shuffled independently (as the
    reference does) so a model cannot rely on label order.

    Query sets hold n_way * n_query queries, split between the classes by
    `query_distribution` ("balanced": n_query each; "dirichlet:ALPHA": Dirichlet class
    proportions, `metaunlab.data.query_sets`). With `query_totals=(lo, hi)` each episode's
    total is drawn uniformly in [lo, hi] (hi <= n_way * n_query) and the query arrays are
    padded to n_way * n_query slots with a `query_mask` (when an episode has fewer).
    Episode (seed, step, b) has the same classes and support set under every query
    distribution and total: those query sets are drawn from the class's other images by a
    second stream, so a comparison of distributions is paired episode by episode.

    With `groups` (one group id per class label, indexed by label: e.g. the alphabet of each
    Omniglot character) every episode first draws one group, uniformly among the groups that
    have at least n_way classes, then its n_way classes from that group only: the
    within-alphabet episodes of Lake et al.'s one-shot runs. Groups with fewer classes are
    never drawn from at that way count; `eligible_groups` names the ones that are.

    Args:
      labels: (N,) int class labels of the images episodes index, or an `ImageDataset`.
      shape: the episode shape.
      seed: a non-negative integer; with (step, b) it fixes every episode.
      split_name: the split's name, for error messages.
      groups: None, or one group id per class label (episodes within one group).
      query_distribution: "balanced", "dirichlet:ALPHA" or a `QueryDistribution`.
      query_totals: None (n_way * n_query queries per episode), or (lo, hi): each
        episode's number of queries drawn uniformly in [lo, hi].

    Raises:
      DataError: the labels cannot give such episodes (`check_episode_shape`), or an
        argument is out of range.
    """

    def __init__(
        self,
        labels: np.ndarray | ImageDataset,
        shape: EpisodeShape,
        seed: int,
        split_name: str = "train",
        groups: Sequence[int] | np.ndarray | None = None,
        query_distribution: str | QueryDistribution = "balanced",
        query_totals: tuple[int, int] | None = None,
    ) -> None:
        check_episode_shape(labels, shape, split_name)
        labels, _ = _labels_and_names(labels)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"episode seed must be a non-negative integer, got {seed!r}.")
        self.shape = shape
        self.seed = int(seed)
        self.query_distribution = QueryDistribution.parse(query_distribution)
        self.query_totals = _check_query_totals(query_totals, shape)
        classes = np.unique(labels)
        self._class_members = [np.flatnonzero(labels == c).astype(np.int32) for c in classes]
        self._group_classes = None if groups is None else _classes_by_group(
            classes, groups, shape.n_way, split_name)

    @property
    def eligible_groups(self) -> list[int] | None:
        """The group ids episodes are drawn from (None without groups)."""
        return None if self._group_classes is None else sorted(self._group_classes)

    @property
    def num_classes(self) -> int:
        """The number of classes in the labels."""
        return len(self._class_members)

    def sample(self, step: int, batch_size: int, *, first_episode: int = 0) -> Episodes:
        """Episodes ``first_episode .. first_episode + batch_size - 1`` of ``step``.

        Args:
          step: the training step (or any non-negative index) the episodes belong to.
          batch_size: B, the number of episodes.
          first_episode: the index b of the first one within the step.

        Returns:
          `Episodes` of B episodes, with a `query_mask` when any query set is padded.
        """
        if batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}.")
        return batch_episodes(
            [self.episode(step, b) for b in range(first_episode, first_episode + batch_size)]
        )

    def episode(self, step: int, b: int) -> Episodes:
        """Episode ``b`` of ``step`` as a batch of one.

        Args:
          step: a non-negative step index.
          b: a non-negative episode index within the step.

        Returns:
          `Episodes` with B = 1, a pure function of (seed, step, b).
        """
        if step < 0 or b < 0:
            raise DataError(f"step and episode index must be non-negative, got {step}, {b}.")
        rng = np.random.default_rng([self.seed, int(step), int(b)])
        n_way, n_shot = self.shape.n_way, self.shape.n_shot
        slots = self.shape.query_size
        if self._group_classes is None:
            chosen = rng.choice(self.num_classes, size=n_way, replace=False)
        else:
            group_ids = sorted(self._group_classes)
            members = self._group_classes[group_ids[rng.integers(len(group_ids))]]
            chosen = rng.choice(members, size=n_way, replace=False)
        picked = np.stack([
            rng.choice(self._class_members[c], size=n_shot + self.shape.n_query, replace=False)
            for c in chosen])  # (n_way, n_shot + n_query); row i is episode class i
        way = np.arange(n_way, dtype=np.int32)
        support_idx = picked[:, :n_shot].reshape(-1)
        support_order = rng.permutation(len(support_idx))
        support = dict(support_idx=support_idx[support_order][None].astype(np.int32),
                       support_labels=np.repeat(way, n_shot)[support_order][None])
        if self.query_distribution.is_balanced and self.query_totals is None:
            query_idx = picked[:, n_shot:].reshape(-1)
            query_labels = np.repeat(way, self.shape.n_query)
            query_order = rng.permutation(len(query_idx))
            return Episodes(**support, query_idx=query_idx[query_order][None].astype(np.int32),
                            query_labels=query_labels[query_order][None])
        # Other query sets come from a stream of their own, after the same classes and
        # support images: every distribution is evaluated on the same support sets.
        rng = np.random.default_rng([self.seed, int(step), int(b), _QUERY_STREAM])
        total = slots if self.query_totals is None else int(
            rng.integers(self.query_totals[0], self.query_totals[1] + 1))
        remaining = [np.setdiff1d(self._class_members[c], row[:n_shot]) for c, row in
                     zip(chosen, picked, strict=True)]
        counts = self.query_distribution.counts(rng, n_way, total,
                                                np.array([len(r) for r in remaining]))
        query_idx = np.concatenate([rng.choice(r, size=k, replace=False)
                                    for r, k in zip(remaining, counts, strict=True)])
        query_labels = np.repeat(way, counts).astype(np.int32)
        query_order = rng.permutation(len(query_idx))
        episode = Episodes(**support, query_idx=query_idx[query_order][None].astype(np.int32),
                           query_labels=query_labels[query_order][None])
        return pad_episodes(episode, slots) if total < slots else episode


_QUERY_STREAM = 0x5155  # seeds the draws of imbalanced or variable-size query sets


def _check_query_totals(query_totals, shape: EpisodeShape) -> tuple[int, int] | None:
    if query_totals is None:
        return None
    try:
        lo, hi = (int(v) for v in query_totals)
    except (TypeError, ValueError):
        raise DataError(f"query_totals must be a pair (lo, hi) of integers, got "
                        f"{query_totals!r}.") from None
    if not 1 <= lo <= hi <= shape.query_size:
        raise DataError(f"query_totals=({lo}, {hi}) must satisfy 1 <= lo <= hi <= n_way * "
                        f"n_query = {shape.query_size} (the number of query slots).")
    return lo, hi


def pad_episodes(episodes: Episodes, slots: int) -> Episodes:
    """Pad the query arrays of a batch to a number of slots, with a mask.

    Args:
      episodes: a batch with Nq query slots.
      slots: the padded number of query slots, >= Nq.

    Returns:
      `Episodes` with (B, slots) query arrays and a `query_mask`; a padded slot repeats
      the episode's first query index with label 0 (see `Episodes`).
    """
    have = episodes.query_idx.shape[1]
    if slots < have:
        raise DataError(f"cannot pad {have} query slots down to {slots}.")
    pad = slots - have
    mask = np.concatenate([episodes.mask_or_ones, np.zeros((len(episodes), pad), bool)], 1)
    first = episodes.query_idx[:, :1]
    return Episodes(
        support_idx=episodes.support_idx, support_labels=episodes.support_labels,
        query_idx=np.concatenate([episodes.query_idx, np.repeat(first, pad, 1)], 1),
        query_labels=np.concatenate([episodes.query_labels,
                                     np.zeros((len(episodes), pad), episodes.query_labels.dtype)],
                                    1),
        query_mask=mask)


def _classes_by_group(classes: np.ndarray, groups, n_way: int,
                      split_name: str) -> dict[int, np.ndarray]:
    """{group id: positions in `classes` of its classes}, for groups of >= n_way classes."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or not np.issubdtype(groups.dtype, np.integer):
        raise DataError(f"episode groups must be a 1-D integer array (one group per class "
                        f"label), got {groups.dtype} of shape {groups.shape}.")
    if classes.size and (classes.min() < 0 or classes.max() >= len(groups)):
        raise DataError(f"split {split_name!r} has class labels up to {int(classes.max())} "
                        f"but only {len(groups)} group ids; give one group id per class label.")
    by_group: dict[int, list[int]] = {}
    for position, label in enumerate(classes):
        by_group.setdefault(int(groups[label]), []).append(position)
    eligible = {g: np.asarray(m) for g, m in by_group.items() if len(m) >= n_way}
    if not eligible:
        largest = max(len(m) for m in by_group.values())
        raise DataError(f"no group of split {split_name!r} has {n_way} classes for "
                        f"within-group episodes (the largest has {largest}); lower n_way to "
                        f"at most {largest} or sample episodes across groups.")
    return eligible


def batch_episodes(episodes: Sequence[Episodes]) -> Episodes:
    """Concatenate episode batches of one shape along the batch axis.

    Args:
      episodes: one or more `Episodes` with the same array shapes past the batch axis.

    Returns:
      One `Episodes`, with a `query_mask` where any batch has one.

    Raises:
      DataError: no batches, or batches of different shapes.
    """
    if not episodes:
        raise DataError("batch_episodes needs at least one Episodes batch.")
    fields = ["support_idx", "support_labels", "query_idx", "query_labels"]
    shapes = {tuple(getattr(e, f).shape[1:] for f in fields) for e in episodes}
    if len(shapes) > 1:
        raise DataError(
            "batch_episodes got episodes of different way/shot/query sizes; batch only "
            "episodes of one EpisodeShape (or pad their queries to one size: pad_episodes)."
        )
    arrays = {f: np.concatenate([getattr(e, f) for e in episodes]) for f in fields}
    if any(e.query_mask is not None for e in episodes):
        arrays["query_mask"] = np.concatenate([e.mask_or_ones for e in episodes])
    return Episodes(**arrays)
