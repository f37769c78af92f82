"""Few-shot episodes: seeded index sampling and the reference fixed-episode JSON files.

Episodes are index arrays into a dataset, never pixels: the model side gathers
``images[support_idx]``, so the same sampler serves any dataset and any device layout.

Episode ``(seed, step, b)`` is a pure function of those three integers. Resuming at a
step, or letting each host build only its slice ``b in [start, start + k)`` of a global
batch, therefore needs no sampler state at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError

EpisodePaths = tuple[list[list[str]], list[list[str]]]  # (support, query), one list per class


@dataclasses.dataclass(frozen=True)
class EpisodeShape:
    """An n_way-way n_shot-shot task with n_query query images per class."""

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
        return self.n_way * self.n_shot

    @property
    def query_size(self) -> int:
        return self.n_way * self.n_query


# eq=False: field-wise == on numpy arrays is ambiguous and would raise; compare fields instead.
@dataclasses.dataclass(frozen=True, eq=False)
class Episodes:
    """A batch of B episodes as int32 index and label arrays.

    ``*_idx`` index the sampler's dataset; ``*_labels`` are episode-local, 0..n_way-1, with
    label i meaning the i-th class drawn for that episode.
    """

    support_idx: np.ndarray  # (B, n_way * n_shot)
    support_labels: np.ndarray  # (B, n_way * n_shot)
    query_idx: np.ndarray  # (B, n_way * n_query)
    query_labels: np.ndarray  # (B, n_way * n_query)

    @property
    def batch_size(self) -> int:
        return self.support_idx.shape[0]

    def __len__(self) -> int:
        return self.batch_size


def check_episode_shape(
    labels_or_dataset: np.ndarray | ImageDataset, shape: EpisodeShape, split_name: str
) -> None:
    """Raise DataError unless every ``shape`` episode can be drawn from these labels.

    Classes are the labels that occur (for a dataset: all of its classes, so an empty
    class is reported rather than ignored).
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

    Each episode draws n_way classes without replacement, then n_shot + n_query distinct
    images of each; support and query are then shuffled independently (as the reference
    does) so a model cannot rely on label order.
    """

    def __init__(
        self,
        labels: np.ndarray | ImageDataset,
        shape: EpisodeShape,
        seed: int,
        split_name: str = "train",
    ) -> None:
        check_episode_shape(labels, shape, split_name)
        labels, _ = _labels_and_names(labels)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"episode seed must be a non-negative integer, got {seed!r}.")
        self.shape = shape
        self.seed = int(seed)
        classes = np.unique(labels)
        self._class_members = [np.flatnonzero(labels == c).astype(np.int32) for c in classes]

    @property
    def num_classes(self) -> int:
        return len(self._class_members)

    def sample(self, step: int, batch_size: int, *, first_episode: int = 0) -> Episodes:
        """Episodes ``first_episode .. first_episode + batch_size - 1`` of ``step``."""
        if batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}.")
        return batch_episodes(
            [self.episode(step, b) for b in range(first_episode, first_episode + batch_size)]
        )

    def episode(self, step: int, b: int) -> Episodes:
        """Episode ``b`` of ``step`` as a batch of one."""
        if step < 0 or b < 0:
            raise DataError(f"step and episode index must be non-negative, got {step}, {b}.")
        rng = np.random.default_rng([self.seed, int(step), int(b)])
        n_way, n_shot, n_query = self.shape.n_way, self.shape.n_shot, self.shape.n_query
        chosen = rng.choice(self.num_classes, size=n_way, replace=False)
        picked = np.stack(
            [
                rng.choice(self._class_members[c], size=n_shot + n_query, replace=False)
                for c in chosen
            ]
        )  # (n_way, n_shot + n_query); row i is episode class i
        way = np.arange(n_way, dtype=np.int32)
        support_idx = picked[:, :n_shot].reshape(-1)
        support_labels = np.repeat(way, n_shot)
        query_idx = picked[:, n_shot:].reshape(-1)
        query_labels = np.repeat(way, n_query)
        support_order = rng.permutation(len(support_idx))
        query_order = rng.permutation(len(query_idx))
        return Episodes(
            support_idx=support_idx[support_order][None].astype(np.int32),
            support_labels=support_labels[support_order][None],
            query_idx=query_idx[query_order][None].astype(np.int32),
            query_labels=query_labels[query_order][None],
        )


def batch_episodes(episodes: Sequence[Episodes]) -> Episodes:
    """Concatenate episode batches of one shape along the batch axis."""
    if not episodes:
        raise DataError("batch_episodes needs at least one Episodes batch.")
    fields = [f.name for f in dataclasses.fields(Episodes)]
    shapes = {tuple(getattr(e, f).shape[1:] for f in fields) for e in episodes}
    if len(shapes) > 1:
        raise DataError(
            "batch_episodes got episodes of different way/shot/query sizes; batch only "
            "episodes of one EpisodeShape."
        )
    return Episodes(**{f: np.concatenate([getattr(e, f) for e in episodes]) for f in fields})


# --- Fixed episodes in the reference JSON format -------------------------------------------
#
# [{"Support": [[path, ...] for each class], "Query": [[path, ...] for each class]}, ...]
# Class i of an episode has label i; paths are relative to an image root (a split folder).


def fixed_episodes_to_json(
    episodes: Episodes | Sequence[Episodes], image_paths: Sequence[str]
) -> list[dict]:
    """Reference-format records for sampled episodes; ``image_paths[i]`` names image i."""
    batches = [episodes] if isinstance(episodes, Episodes) else list(episodes)
    records = []
    for batch in batches:
        for b in range(batch.batch_size):
            n_way = int(max(batch.support_labels[b].max(), batch.query_labels[b].max())) + 1
            records.append(
                {
                    "Support": _paths_per_class(
                        batch.support_idx[b], batch.support_labels[b], n_way, image_paths
                    ),
                    "Query": _paths_per_class(
                        batch.query_idx[b], batch.query_labels[b], n_way, image_paths
                    ),
                }
            )
    return records


def _paths_per_class(
    indices: np.ndarray, labels: np.ndarray, n_way: int, image_paths: Sequence[str]
) -> list[list[str]]:
    return [[image_paths[i] for i in indices[labels == way]] for way in range(n_way)]


def save_episodes_json(path: str | os.PathLike, records: list[dict]) -> None:
    """Validate and write records; written to a temporary file first so a crash never
    leaves a half-written episode file behind."""
    path = Path(path)
    _check_records(records, f"episode records for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(records))
    partial.replace(path)


def load_episodes_json(path: str | os.PathLike) -> list[dict]:
    """Read and validate a reference-format episode file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"episode file {path} does not exist; check the path or create it with "
            "save_episodes_json."
        )
    try:
        records = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"episode file {path} is not valid JSON ({error}); regenerate or re-download it."
        ) from error
    _check_records(records, f"episode file {path}")
    return records


def _check_records(records: object, source: str) -> None:
    if not isinstance(records, list) or not records:
        raise DataError(
            f"{source} must hold a non-empty JSON list of "
            '{"Support": [...], "Query": [...]} episodes.'
        )
    for index, record in enumerate(records):
        problem = _record_problem(record)
        if problem:
            raise DataError(f"episode {index} in {source} {problem}; fix or regenerate it.")


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict) or not {"Support", "Query"} <= record.keys():
        return 'is not an object with "Support" and "Query" keys'
    support, query = record["Support"], record["Query"]
    for key, per_class in (("Support", support), ("Query", query)):
        if not isinstance(per_class, list) or not per_class:
            return f'has a "{key}" that is not a non-empty list of per-class path lists'
        for way, paths in enumerate(per_class):
            if (
                not isinstance(paths, list)
                or not paths
                or not all(isinstance(p, str) for p in paths)
            ):
                return f'has a "{key}" entry for class {way} that is not a non-empty list of paths'
    if len(support) != len(query):
        return f'has {len(support)} classes in "Support" but {len(query)} in "Query"'
    return None


def resolve_episode_paths(
    records: list[dict], image_root: str | os.PathLike, source: str = "episode records"
) -> list[EpisodePaths]:
    """Absolute (support, query) paths per episode, each file checked to exist inside
    ``image_root``; ``source`` names the records (e.g. their file) in error messages."""
    root = Path(image_root).absolute()
    if not root.is_dir():
        raise DataError(
            f"image root {root} for {source} does not exist; point it at the split folder the "
            "episode paths are relative to."
        )
    _check_records(records, source)
    resolved: dict[str, str] = {}  # episode files reuse images heavily; check each once

    def resolve(path: str, index: int) -> str:
        if path not in resolved:
            pure = PurePosixPath(path)
            # Reject rather than normalise: a path that leaves the root would read files
            # the episode file's author never meant to expose.
            windows = PureWindowsPath(path)
            if pure.is_absolute() or windows.drive or windows.root or ".." in windows.parts:
                raise DataError(
                    f"episode {index} in {source} names {path!r}, which is not inside the image "
                    f"root {root}; paths must be relative, without '..'."
                )
            full = root.joinpath(*pure.parts)
            if not full.is_file():
                raise DataError(
                    f"episode {index} in {source} names {path!r} but {full} does not exist; "
                    "check the image root or the data download."
                )
            resolved[path] = str(full)
        return resolved[path]

    return [
        (
            [[resolve(p, i) for p in paths] for paths in record["Support"]],
            [[resolve(p, i) for p in paths] for paths in record["Query"]],
        )
        for i, record in enumerate(records)
    ]


def episodes_from_records(
    records: Sequence[tuple[list[list[str]], list[list[str]]]] | Sequence[dict],
    index_of: dict[str, int],
    source: str = "episode records",
) -> dict[EpisodeShape, tuple[list[int], Episodes]]:
    """Index episodes for reference-format records, grouped by episode shape.

    ``records`` are JSON records or ``resolve_episode_paths`` output; ``index_of`` maps each
    path to its row in the array of images or features. Returns, per shape, the positions
    of its episodes in ``records`` and their batched ``Episodes``. A class's shot and query
    counts must be the same for every class of an episode.
    """
    groups: dict[EpisodeShape, tuple[list[int], list[Episodes]]] = {}
    for position, record in enumerate(records):
        support, query = (
            (record["Support"], record["Query"]) if isinstance(record, dict) else record
        )
        shots, queries = {len(p) for p in support}, {len(p) for p in query}
        if len(shots) != 1 or len(queries) != 1:
            raise DataError(
                f"episode {position} in {source} has classes with different numbers of "
                "support or query images; give every class the same counts."
            )
        shape = EpisodeShape(len(support), shots.pop(), queries.pop())

        def rows(per_class: list[list[str]], position: int = position) -> np.ndarray:
            try:
                return np.array([index_of[p] for paths in per_class for p in paths], np.int32)
            except KeyError as missing:
                raise DataError(
                    f"episode {position} in {source} names {missing.args[0]!r}, which is not an "
                    "image of the split; check that the file matches the image folder."
                ) from None

        way = np.arange(shape.n_way, dtype=np.int32)
        episode = Episodes(
            support_idx=rows(support)[None],
            support_labels=np.repeat(way, shape.n_shot)[None],
            query_idx=rows(query)[None],
            query_labels=np.repeat(way, shape.n_query)[None],
        )
        positions, batch = groups.setdefault(shape, ([], []))
        positions.append(position)
        batch.append(episode)
    return {shape: (positions, batch_episodes(batch)) for shape, (positions, batch) in
            groups.items()}
