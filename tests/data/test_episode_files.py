"""Tests for metaunlab.data.episode_files (reference-format episode files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaunlab.data.episode_files import (
    fixed_episodes_to_json,
    load_episodes_json,
    resolve_episode_paths,
    save_episodes_json,
)
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.data.errors import DataError


def test_json_round_trip_and_resolution(tmp_path: Path, interleaved_labels) -> None:
    labels = interleaved_labels(num_classes=6, per_class=5)
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


def test_links_out_of_the_image_root_deep_nesting_and_overlaps_are_refused_or_flagged(tmp_path):
    import warnings

    from metaunlab.data.episode_files import episodes_from_records

    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"")
    (tmp_path / "outside.png").write_bytes(b"")
    (root / "a" / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "a" / "passwd.png").symlink_to("/etc/passwd")
    (root / "a" / "inside.png").symlink_to(root / "a" / "x.png")  # a link within is fine
    for name in ("link.png", "passwd.png"):
        records = [{"Support": [[f"a/{name}"]], "Query": [["a/x.png"]]}]
        with pytest.raises(DataError, match=rf"names 'a/{name}', a link to .* outside the "
                                            r"image root"):
            resolve_episode_paths(records, root)
    resolve_episode_paths([{"Support": [["a/inside.png"]], "Query": [["a/x.png"]]}], root)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nests its lists too deeply"):
        load_episodes_json(deep)
    with pytest.warns(UserWarning, match=r"1 episode\(s\) of f\.json \(the first: episode 1\) "
                                         "use support images as queries too"):
        episodes_from_records([{"Support": [["p"], ["q"]], "Query": [["r"], ["s"]]},
                               {"Support": [["p"], ["q"]], "Query": [["q"], ["s"]]}],
                              {"p": 0, "q": 1, "r": 2, "s": 3}, "f.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # disjoint episodes: no warning
        episodes_from_records([{"Support": [["p"], ["q"]], "Query": [["r"], ["s"]]}],
                              {"p": 0, "q": 1, "r": 2, "s": 3}, "f.json")


def test_imbalanced_and_variable_query_sets_round_trip(tmp_path: Path) -> None:
    """Dirichlet episodes (a class may have no query) and padded ones written to a file and
    read back: same queries per class, padded to one shape with a mask where totals differ."""
    import numpy as np

    from metaunlab.data.episode_files import read_episode_file

    labels = np.repeat(np.arange(8), 12)
    image_paths = [f"c{label}/{i:03d}.png" for i, label in enumerate(labels)]
    root = tmp_path / "test"
    for rel in image_paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    fixed = EpisodeSampler(labels, EpisodeShape(4, 1, 3), seed=0,
                           query_distribution="dirichlet:1").sample(0, 6)
    varied = EpisodeSampler(labels, EpisodeShape(4, 1, 3), seed=1, query_totals=(5, 12),
                            query_distribution="dirichlet:2").sample(0, 6)
    records = fixed_episodes_to_json([fixed, varied], image_paths)
    assert any(len(q) == 0 for r in records for q in r["Query"])  # an absent class
    save_episodes_json(tmp_path / "e.json", records)
    read = read_episode_file(tmp_path / "e.json", root)
    by_position = {}
    for shape, (positions, episodes) in read.groups.items():
        assert shape.n_way == 4 and shape.n_shot == 1
        assert episodes.query_idx.shape[1] == 4 * shape.n_query
        for row, position in enumerate(positions):
            by_position[position] = episodes.query_counts()[row]
    expected = np.concatenate([fixed.query_counts(), varied.query_counts()])
    for position, counts in by_position.items():
        np.testing.assert_array_equal(counts, expected[position])
    assert len(by_position) == 12


def test_a_record_without_any_query_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "episodes.json"
    path.write_text('[{"Support": [["a.png"], ["b.png"]], "Query": [[], []]}]')
    with pytest.raises(DataError, match=r'episode 0 in .* has no query image in "Query"'):
        load_episodes_json(path)
    path.write_text('[{"Support": [["a.png"], ["b.png"]], "Query": [[], ["c.png"]]}]')
    assert load_episodes_json(path)[0]["Query"][0] == []  # an absent class is allowed
