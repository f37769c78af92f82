"""Tests for metaunlab.data.episodes (seeded sampling and reference-format episode files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.episode_files import (
    fixed_episodes_to_json,
    load_episodes_json,
    resolve_episode_paths,
    save_episodes_json,
)
from metaunlab.data.episodes import (
    EpisodeSampler,
    EpisodeShape,
    batch_episodes,
    check_episode_shape,
)
from metaunlab.data.errors import DataError

SHAPE = EpisodeShape(n_way=5, n_shot=2, n_query=3)


def _labels(num_classes: int = 12, per_class: int = 7) -> np.ndarray:
    # Interleaved, not grouped by class, so index bookkeeping bugs cannot hide.
    return np.tile(np.arange(num_classes, dtype=np.int32), per_class)


def _fields(e):
    return (e.support_idx, e.support_labels, e.query_idx, e.query_labels)


def test_shape_sizes() -> None:
    assert (SHAPE.support_size, SHAPE.query_size) == (10, 15)
    with pytest.raises(DataError, match="n_shot must be a positive integer"):
        EpisodeShape(n_way=5, n_shot=0, n_query=1)


def test_same_seed_and_step_give_same_episodes() -> None:
    a = EpisodeSampler(_labels(), SHAPE, seed=7).sample(step=3, batch_size=4)
    b = EpisodeSampler(_labels(), SHAPE, seed=7).sample(step=3, batch_size=4)
    for x, y in zip(_fields(a), _fields(b), strict=True):
        np.testing.assert_array_equal(x, y)
    other_step = EpisodeSampler(_labels(), SHAPE, seed=7).sample(step=4, batch_size=4)
    other_seed = EpisodeSampler(_labels(), SHAPE, seed=8).sample(step=3, batch_size=4)
    assert not np.array_equal(a.support_idx, other_step.support_idx)
    assert not np.array_equal(a.support_idx, other_seed.support_idx)
    assert not np.array_equal(a.support_idx[0], a.support_idx[1])  # episodes differ in a batch


def test_slices_of_a_batch_match_the_whole() -> None:
    sampler = EpisodeSampler(_labels(), SHAPE, seed=1)
    whole = sampler.sample(step=9, batch_size=4)
    halves = batch_episodes(
        [sampler.sample(9, 2, first_episode=0), sampler.sample(9, 2, first_episode=2)]
    )
    single = sampler.episode(9, 3)
    for x, y, z in zip(_fields(whole), _fields(halves), _fields(single), strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x[3:], z)


def test_episode_contents_are_correct() -> None:
    labels = _labels()
    episodes = EpisodeSampler(labels, SHAPE, seed=0).sample(step=0, batch_size=8)
    assert episodes.support_idx.shape == (8, 10) and episodes.query_idx.shape == (8, 15)
    assert all(f.dtype == np.int32 for f in _fields(episodes))
    for b in range(8):
        s_idx, s_lab, q_idx, q_lab = (f[b] for f in _fields(episodes))
        assert np.bincount(s_lab).tolist() == [2] * 5
        assert np.bincount(q_lab).tolist() == [3] * 5
        assert not set(s_idx) & set(q_idx) and len(set(s_idx)) == 10 and len(set(q_idx)) == 15
        # Each episode label maps to exactly one dataset class, distinct across labels.
        classes = [
            set(labels[s_idx[s_lab == w]]) | set(labels[q_idx[q_lab == w]]) for w in range(5)
        ]
        assert all(len(c) == 1 for c in classes) and len(set.union(*classes)) == 5
    # Support is shuffled, not grouped by label (reference behaviour).
    assert any(np.any(np.diff(episodes.support_labels[b]) < 0) for b in range(8))


def test_n_way_too_large() -> None:
    with pytest.raises(DataError, match=r"split 'test' has 12 classes but n_way=20; lower n_way"):
        EpisodeSampler(_labels(), EpisodeShape(20, 1, 1), seed=0, split_name="test")


def test_too_few_images_per_class_names_the_class() -> None:
    labels = np.concatenate([_labels(), np.array([12, 12], np.int32)])
    with pytest.raises(
        DataError,
        match=r"class 12 in split 'train' has 2 images but n_shot=2 "
        r"\+ n_query=3 needs 5",
    ):
        EpisodeSampler(labels, SHAPE, seed=0)
    names = tuple(f"c{i}" for i in range(13))
    ds = ImageDataset(np.zeros((len(labels), 2, 2, 1), np.uint8), labels, names)
    with pytest.raises(DataError, match="class 'c12' in split 'val' has 2 images"):
        check_episode_shape(ds, SHAPE, "val")


def test_json_round_trip_and_resolution(tmp_path: Path) -> None:
    labels = _labels(num_classes=6, per_class=5)
    image_paths = [f"class{label}/img{i:03d}.png" for i, label in enumerate(labels)]
    image_root = tmp_path / "val"
    for rel in image_paths:
        (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (image_root / rel).write_bytes(b"")
    episodes = EpisodeSampler(labels, EpisodeShape(3, 1, 2), seed=0).sample(0, 2)
    records = fixed_episodes_to_json(episodes, image_paths)
    path = tmp_path / "val2Episode_3_way_1_shot.json"
    save_episodes_json(path, records)
    assert load_episodes_json(path) == records == json.loads(path.read_text())

    first = records[0]
    assert len(first["Support"]) == 3 and all(len(s) == 1 for s in first["Support"])
    assert all(len(q) == 2 for q in first["Query"])
    for way in range(3):  # class i of the record is label i of the episode
        expected = episodes.support_idx[0][episodes.support_labels[0] == way]
        assert first["Support"][way] == [image_paths[i] for i in expected]

    resolved = resolve_episode_paths(load_episodes_json(path), image_root)
    support, query = resolved[1]
    assert support[0][0] == str(image_root / records[1]["Support"][0][0])
    assert all(Path(p).is_file() for per_class in query for p in per_class)


def test_files_may_mix_episode_shapes(tmp_path: Path) -> None:
    records = [
        {"Support": [["a.png"], ["b.png"]], "Query": [["a.png"], ["b.png", "b.png"]]},
        {"Support": [["a.png", "b.png"]] * 3, "Query": [["a.png"]] * 3},
    ]
    save_episodes_json(tmp_path / "e.json", records)
    assert load_episodes_json(tmp_path / "e.json") == records


@pytest.mark.parametrize(
    "content, message",
    [
        ("{}", "must hold a non-empty JSON list"),
        (
            '[{"Support": [["a.png"]], "Query": [["a.png"]]}, {"Support": []}]',
            'episode 1 in .* is not an object with "Support" and "Query"',
        ),
        (
            '[{"Support": [["a.png"], ["b.png"]], "Query": [["a.png"]]}]',
            'episode 0 in .* has 2 classes in "Support" but 1 in "Query"',
        ),
        (
            '[{"Support": [["a.png"], []], "Query": [["a.png"], ["b.png"]]}]',
            '"Support" entry for class 1',
        ),
        ("[{", "is not valid JSON"),
    ],
)
def test_malformed_episode_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "episodes.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_episodes_json(path)


def test_missing_episode_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"episode file .*nope\.json does not exist"):
        load_episodes_json(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "bad_path", ["../secret.png", "/etc/passwd", "a/../../x.png", "C:\\x.png", "..\\x.png"]
)
def test_paths_escaping_the_root_are_rejected(tmp_path: Path, bad_path: str) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    records = [{"Support": [["a.png"]], "Query": [[bad_path]]}]
    with pytest.raises(DataError, match=r"episode 0 in .* is not inside the image root"):
        resolve_episode_paths(records, tmp_path)


def test_missing_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    records = [
        {"Support": [["a.png"]], "Query": [["a.png"]]},
        {"Support": [["a.png"]], "Query": [["gone.png"]]},
    ]
    with pytest.raises(
        DataError,
        match=r"episode 1 in eps.json names 'gone.png' but .* does "
        "not exist",
    ):
        resolve_episode_paths(records, tmp_path, source="eps.json")
