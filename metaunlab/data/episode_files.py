"""Episode files in the reference JSON format, and the one loader for them.

    [{"Support": [[path, ...] for each class], "Query": [[path, ...] for each class]}, ...]

Class i of an episode has label i; paths are relative to an image root (a split folder).
`read_episode_file(path, image_root)` checks a file and every image it names and returns
its episodes grouped by shape, as index arrays into its list of distinct images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from metaunlab.data.episodes import Episodes, EpisodeShape, batch_episodes, pad_episodes
from metaunlab.data.errors import DataError
from metaunlab.files import atomic_path, what_is_at

EpisodePaths = tuple[list[list[str]], list[list[str]]]  # (support, query), one list per class

# The reference's validation files are about 1 MB; anything beyond this is not an episode file.
MAX_EPISODE_FILE_BYTES = 256 * 2**20


@dataclasses.dataclass
class EpisodeFile:
    """An episode file read and checked: `paths` are its distinct images (absolute, sorted);
    `groups` maps each episode shape to the positions of its episodes in the file and
    their `Episodes`, indexing `paths`."""

    source: str
    image_root: str
    num_episodes: int
    paths: list[str]
    groups: dict[EpisodeShape, tuple[list[int], Episodes]]


def read_episode_file(path: str | os.PathLike, image_root: str | os.PathLike) -> EpisodeFile:
    """Read the episode file `path` whose image paths are relative to `image_root`."""
    source = os.fspath(path)
    records = load_episodes_json(source)
    resolved = resolve_episode_paths(records, image_root, source=source)
    unique = sorted({p for support, query in resolved for group in (support, query)
                     for paths in group for p in paths})
    groups = episodes_from_records(resolved, {p: i for i, p in enumerate(unique)}, source)
    return EpisodeFile(source, str(Path(image_root).absolute()), len(records), unique, groups)


def fixed_episodes_to_json(
    episodes: Episodes | Sequence[Episodes], image_paths: Sequence[str]
) -> list[dict]:
    """Reference-format records for sampled episodes; ``image_paths[i]`` names image i."""
    batches = [episodes] if isinstance(episodes, Episodes) else list(episodes)
    records = []
    for batch in batches:
        for b in range(batch.batch_size):
            n_way = int(max(batch.support_labels[b].max(), batch.query_labels[b].max())) + 1
            real = batch.mask_or_ones[b]  # padded query slots are not queries
            records.append(
                {
                    "Support": _paths_per_class(
                        batch.support_idx[b], batch.support_labels[b], n_way, image_paths
                    ),
                    "Query": _paths_per_class(
                        batch.query_idx[b][real], batch.query_labels[b][real], n_way,
                        image_paths
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
    with atomic_path(path) as partial:
        Path(partial).write_text(json.dumps(records))


def load_episodes_json(path: str | os.PathLike) -> list[dict]:
    """Read and validate a reference-format episode file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"episode file {path} {what_is_at(path, 'a file')}; check the path or create it "
            "with save_episodes_json."
        )
    if path.stat().st_size > MAX_EPISODE_FILE_BYTES:
        raise DataError(
            f"episode file {path} is {path.stat().st_size} bytes, more than the "
            f"{MAX_EPISODE_FILE_BYTES // 2**20} MiB an episode file needs; check the path."
        )
    try:
        records = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"episode file {path} is not valid JSON ({error}); regenerate or re-download it."
        ) from error
    except RecursionError:
        raise DataError(
            f"episode file {path} nests its lists too deeply to be an episode file; "
            "regenerate it."
        ) from None
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
            # An imbalanced query set may leave a class without queries; a support may not.
            if (
                not isinstance(paths, list)
                or (key == "Support" and not paths)
                or not all(isinstance(p, str) for p in paths)
            ):
                what = "a non-empty list" if key == "Support" else "a list"
                return f'has a "{key}" entry for class {way} that is not {what} of paths'
    if len(support) != len(query):
        return f'has {len(support)} classes in "Support" but {len(query)} in "Query"'
    if not any(query):
        return 'has no query image in "Query"'
    return None


def resolve_episode_paths(
    records: list[dict], image_root: str | os.PathLike, source: str = "episode records"
) -> list[EpisodePaths]:
    """Absolute (support, query) paths per episode, each file checked to exist inside
    ``image_root``; ``source`` names the records (e.g. their file) in error messages."""
    root = Path(image_root).absolute()
    real_root = root.resolve()
    if not root.is_dir():
        raise DataError(
            f"image root {root} for {source} {what_is_at(root, 'a folder')}; point it at the "
            "split folder the episode paths are relative to."
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
                    f"episode {index} in {source} names {path!r} but {full} "
                    f"{what_is_at(full, 'an image file')}; check the image root or the data "
                    "download."
                )
            # A symbolic link (a downloaded archive can carry them) may point anywhere.
            if not full.resolve().is_relative_to(real_root):
                raise DataError(
                    f"episode {index} in {source} names {path!r}, a link to {full.resolve()} "
                    f"outside the image root {root}; replace the link by the image itself."
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
    of its episodes in ``records`` and their batched ``Episodes``. Every class of an
    episode has the same number of support images; query counts may differ between
    classes (an imbalanced query set, 0 included). An episode of Q queries belongs to the
    shape with n_query = ceil(Q / n_way); the episodes of a shape whose totals differ are
    padded to n_way * n_query query slots with a ``query_mask``.
    """
    groups: dict[EpisodeShape, tuple[list[int], list[Episodes]]] = {}
    overlapping = []
    for position, record in enumerate(records):
        support, query = (
            (record["Support"], record["Query"]) if isinstance(record, dict) else record
        )
        if {p for paths in support for p in paths} & {p for paths in query for p in paths}:
            overlapping.append(position)
        shots = {len(p) for p in support}
        if len(shots) != 1:
            raise DataError(
                f"episode {position} in {source} has classes with different numbers of "
                "support images; give every class the same number of shots."
            )
        counts = [len(p) for p in query]  # per class; load_episodes_json checked the lists
        n_way = len(support)
        shape = EpisodeShape(n_way, shots.pop(), -(-sum(counts) // n_way))

        def rows(per_class: list[list[str]], position: int = position) -> np.ndarray:
            try:
                return np.array([index_of[p] for paths in per_class for p in paths], np.int32)
            except KeyError as missing:
                raise DataError(
                    f"episode {position} in {source} names {missing.args[0]!r}, which is not an "
                    "image of the split; check that the file matches the image folder."
                ) from None

        way = np.arange(n_way, dtype=np.int32)
        episode = Episodes(
            support_idx=rows(support)[None],
            support_labels=np.repeat(way, shape.n_shot)[None],
            query_idx=rows(query)[None],
            query_labels=np.repeat(way, counts)[None],
        )
        if sum(counts) < shape.query_size:
            episode = pad_episodes(episode, shape.query_size)
        positions, batch = groups.setdefault(shape, ([], []))
        positions.append(position)
        batch.append(episode)
    if overlapping:
        warnings.warn(f"{len(overlapping)} episode(s) of {source} (the first: episode "
                      f"{overlapping[0]}) use support images as queries too, so their accuracy "
                      "overstates the method's; regenerate them with disjoint images.",
                      stacklevel=2)
    return {shape: (positions, batch_episodes(batch)) for shape, (positions, batch) in
            groups.items()}
