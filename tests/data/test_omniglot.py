"""Tests for metaunlab.data.omniglot (the ImageDataset itself: test_dataset.py)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError
from metaunlab.data.omniglot import (
    DEFAULT_OMNIGLOT_DIR,
    MINIMAL_ALPHABET_FOLDS,
    alphabet_groups,
    default_omniglot_dir,
    load_omniglot,
    mirror_classes,
    rotate_classes,
    split_omniglot,
)

SIZE = 10  # tiny stand-ins for the 105x105 originals


def _png(seed: int) -> bytes:
    """A 1-bit PNG like Omniglot's: white background with a few black stroke pixels."""
    pixels = np.full((SIZE, SIZE), 255, np.uint8)
    pixels[seed % SIZE, :] = 0  # a horizontal "stroke" whose row identifies the drawing
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def _make_zip(path: Path, files: dict[str, bytes]) -> Path:
    """``files`` maps "<Alphabet>/<character>/<file>" to bytes; adds the archive folder."""
    stem = path.stem
    with zipfile.ZipFile(path, "w") as archive:
        folders = set()
        for name in files:
            alphabet, character, _ = name.split("/")
            folders.update({f"{stem}/", f"{stem}/{alphabet}/", f"{stem}/{alphabet}/{character}/"})
        for folder in sorted(folders):
            archive.writestr(folder, b"")
        for name, data in files.items():
            archive.writestr(f"{stem}/{name}", data)
    return path


def _character(alphabet: str, character: str, drawers: int, seed: int) -> dict[str, bytes]:
    return {
        f"{alphabet}/{character}/{1000 + seed}_{k:02d}.png": _png(seed + k) for k in range(drawers)
    }


@pytest.fixture
def two_archives(tmp_path: Path) -> Path:
    """Like the real small1/small2: Greek is shipped identically in both archives."""
    greek = _character("Greek", "character01", 3, 0)
    _make_zip(
        tmp_path / "images_background_small1.zip",
        {
            **greek,
            **_character("Balinese", "character01", 3, 1),
            **_character("Balinese", "character02", 3, 2),
        },
    )
    _make_zip(
        tmp_path / "images_background_small2.zip",
        {**greek, **_character("Tagalog", "character01", 3, 3)},
    )
    return tmp_path


def test_duplicates_across_archives_are_merged(two_archives: Path) -> None:
    ds = load_omniglot(two_archives, image_size=None)
    assert ds.class_names == (
        "Balinese/character01",
        "Balinese/character02",
        "Greek/character01",
        "Tagalog/character01",
    )
    assert np.bincount(ds.labels).tolist() == [3, 3, 3, 3]
    assert ds.images.shape == (12, SIZE, SIZE, 1) and ds.images.dtype == np.uint8
    # Inverted: the black stroke row becomes 255, the white background 0.
    first = ds.images[0, :, :, 0]
    assert first[1].tolist() == [255] * SIZE and first.sum() == 255 * SIZE


def test_resize_and_default_size(two_archives: Path) -> None:
    ds = load_omniglot(two_archives, archives=["images_background_small2.zip"])
    assert ds.images.shape == (6, 28, 28, 1)
    assert ds.num_classes == 2


def test_extracted_folder_matches_zip(two_archives: Path, tmp_path: Path) -> None:
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(two_archives / "images_background_small1.zip") as archive:
        archive.extractall(extracted)
    from_zip = load_omniglot(two_archives, archives=["images_background_small1.zip"])
    from_folder = load_omniglot(extracted)  # finds the images_background_small1/ folder
    assert from_folder.class_names == from_zip.class_names
    np.testing.assert_array_equal(from_folder.images, from_zip.images)
    np.testing.assert_array_equal(from_folder.labels, from_zip.labels)


def test_conflicting_duplicate_names_both_archives(tmp_path: Path) -> None:
    _make_zip(tmp_path / "images_a.zip", {"Greek/character01/1_01.png": _png(0)})
    _make_zip(tmp_path / "images_b.zip", {"Greek/character01/1_01.png": _png(5)})
    with pytest.raises(DataError, match=r"images_a\.zip.*images_b\.zip.*different contents"):
        load_omniglot(tmp_path)


def test_html_saved_instead_of_zip(tmp_path: Path) -> None:
    (tmp_path / "images_background.zip").write_text("<!DOCTYPE html><html>quota</html>")
    with pytest.raises(DataError, match=r"images_background.zip is an HTML page.*download"):
        load_omniglot(tmp_path)


def test_truncated_zip(tmp_path: Path) -> None:
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="is not a zip archive"):
        load_omniglot(tmp_path)


def test_corrupt_png_names_archive_and_member(tmp_path: Path) -> None:
    files = _character("Greek", "character01", 2, 0)
    files["Greek/character01/1000_09.png"] = _png(1)[:20]  # truncated
    _make_zip(tmp_path / "images_background.zip", files)
    with pytest.raises(
        DataError,
        match=r"images_background.zip:images_background/Greek/"
        r"character01/1000_09.png is not a readable image",
    ):
        load_omniglot(tmp_path)


@pytest.mark.parametrize("member, data, message", [
    pytest.param("Greek/character02/", b"", r"Greek/character02 .* holds no PNG images",
                 id="empty_character_folder"),
    pytest.param("Greek/notes.txt", b"hi", r"unexpected file .*notes\.txt",
                 id="unexpected_member_is_reported_not_skipped"),
])
def test_a_member_beside_the_characters_is_refused(tmp_path: Path, member, data,
                                                    message) -> None:
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as archive:
        archive.writestr("images_background/Greek/character01/1_01.png", _png(0))
        archive.writestr(f"images_background/{member}", data)
    with pytest.raises(DataError, match=message):
        load_omniglot(tmp_path)


def test_missing_dir_says_what_to_put_where(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"does not exist; put images_background_small1.zip .*"
        r"METAUNLAB_OMNIGLOT_DIR .*--data_dir",
    ):
        load_omniglot(tmp_path / "nowhere")


def test_dir_without_archives(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing here")
    with pytest.raises(DataError, match="holds no Omniglot archives"):
        load_omniglot(tmp_path)


def test_default_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METAUNLAB_OMNIGLOT_DIR", str(tmp_path))
    assert default_omniglot_dir() == tmp_path
    monkeypatch.delenv("METAUNLAB_OMNIGLOT_DIR")
    project_root = Path(__file__).resolve().parents[2]
    assert default_omniglot_dir() == project_root.parent / "shared" / "data" / "omniglot"


@pytest.mark.parametrize("by", ["character", "alphabet"])
def test_split_is_deterministic_and_disjoint(by: str, synthetic_omniglot) -> None:
    ds = synthetic_omniglot()
    first = split_omniglot(ds, by=by, fractions=(0.6, 0.2, 0.2), seed=3)
    again = split_omniglot(ds, by=by, fractions=(0.6, 0.2, 0.2), seed=3)
    other = split_omniglot(ds, by=by, fractions=(0.6, 0.2, 0.2), seed=4)
    assert {k: v.class_names for k, v in first.items()} == {
        k: v.class_names for k, v in again.items()
    }
    assert first["train"].class_names != other["train"].class_names
    names = [set(first[s].class_names) for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set.union(*names) == set(ds.class_names)
    assert sum(len(first[s]) for s in first) == len(ds)
    if by == "alphabet":
        alphabets = [{n.split("/")[0] for n in s} for s in names]
        assert not (
            alphabets[0] & alphabets[1]
            or alphabets[0] & alphabets[2]
            or alphabets[1] & alphabets[2]
        )
    else:
        assert [len(n) for n in names] == [36, 12, 12]
    # Each split is a proper dataset: labels 0..k-1, images still belong to their class.
    train = first["train"]
    for label, indices in enumerate(train.class_indices()):
        original = ds.class_names.index(train.class_names[label])
        np.testing.assert_array_equal(
            train.images[indices], ds.images[ds.class_indices()[original]]
        )


def test_split_keeps_rotations_of_a_character_together(synthetic_omniglot) -> None:
    rotated = rotate_classes(synthetic_omniglot(alphabets=2, characters=5))
    splits = split_omniglot(rotated, fractions=(0.6, 0.2, 0.2), seed=0)
    for split in splits.values():
        bases = {name.split("@")[0] for name in split.class_names}
        assert split.num_classes == 4 * len(bases)


def test_split_errors(synthetic_omniglot) -> None:
    ds = synthetic_omniglot(alphabets=2, characters=2)
    with pytest.raises(DataError, match="give split 'test' no classes"):
        split_omniglot(ds, by="alphabet", fractions=(0.6, 0.2, 0.2))
    with pytest.raises(DataError, match="sum"):
        split_omniglot(ds, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="'character' or 'alphabet'"):
        split_omniglot(ds, by="drawer")


def test_rotate_classes(synthetic_omniglot) -> None:
    ds = synthetic_omniglot(alphabets=1, characters=2, per_class=1)
    images = np.zeros((2, 4, 4, 1), np.uint8)
    images[:, 0, 0] = 255  # a mark in the top-left corner shows the rotation
    ds = ImageDataset(images=images, labels=ds.labels, class_names=ds.class_names)
    rotated = rotate_classes(ds)
    assert rotated.class_names == (
        "Alpha0/character01",
        "Alpha0/character01@rot90",
        "Alpha0/character01@rot180",
        "Alpha0/character01@rot270",
        "Alpha0/character02",
        "Alpha0/character02@rot90",
        "Alpha0/character02@rot180",
        "Alpha0/character02@rot270",
    )
    assert len(rotated) == 8 and np.bincount(rotated.labels).tolist() == [1] * 8
    by_name = dict(zip(rotated.class_names, rotated.class_indices(), strict=True))
    np.testing.assert_array_equal(
        rotated.images[by_name["Alpha0/character02@rot90"]][0],
        np.rot90(images[1], k=1, axes=(0, 1)),
    )
    with pytest.raises(DataError, match="angles"):
        rotate_classes(ds, angles=(0, 45))


@pytest.mark.skipif(
    not DEFAULT_OMNIGLOT_DIR.is_dir(),
    reason=f"real Omniglot archives not found at {DEFAULT_OMNIGLOT_DIR} "
    "(set METAUNLAB_OMNIGLOT_DIR to run this test)",
)
def test_real_small_archives() -> None:
    ds = load_omniglot(DEFAULT_OMNIGLOT_DIR)
    assert ds.images.shape == (4840, 28, 28, 1)
    assert ds.num_classes == 242 == len(set(ds.class_names))
    assert np.bincount(ds.labels).tolist() == [20] * 242
    assert len({name.split("/")[0] for name in ds.class_names}) == 8
    assert ds.images.mean() < 128 and ds.images.max() == 255  # bright strokes on black

    # The alphabet protocol's folds: every alphabet is held out for testing exactly once, no
    # alphabet is in two splits of a fold, and 20-way validation fits one alphabet.
    tested = [a for test, _ in MINIMAL_ALPHABET_FOLDS for a in test]
    assert sorted(tested) == sorted({name.split("/")[0] for name in ds.class_names})
    for test, val in MINIMAL_ALPHABET_FOLDS:
        splits = split_omniglot(ds, by="alphabet", test_alphabets=test, val_alphabets=val)
        alphabets = [{n.split("/")[0] for n in splits[s].class_names}
                     for s in ("train", "val", "test")]
        assert alphabets[2] == set(test) and alphabets[1] == set(val)
        assert not (alphabets[0] & alphabets[1] or alphabets[0] & alphabets[2]
                    or alphabets[1] & alphabets[2])
        assert splits["val"].num_classes >= 20


def test_named_alphabet_split_holds_out_exactly_those_alphabets(synthetic_omniglot) -> None:
    ds = rotate_classes(synthetic_omniglot(alphabets=5, characters=3))
    splits = split_omniglot(ds, by="alphabet", test_alphabets=("Alpha1", "Alpha3"),
                            val_alphabets=("Alpha0",))
    alphabets = {s: {n.split("/")[0] for n in d.class_names} for s, d in splits.items()}
    assert alphabets == {"train": {"Alpha2", "Alpha4"}, "val": {"Alpha0"},
                         "test": {"Alpha1", "Alpha3"}}
    assert sum(d.num_classes for d in splits.values()) == ds.num_classes
    with pytest.raises(DataError, match="'Alpha9' is not in the loaded archives"):
        split_omniglot(ds, by="alphabet", test_alphabets=("Alpha9",), val_alphabets=("Alpha0",))
    with pytest.raises(DataError, match="none in both"):
        split_omniglot(ds, by="alphabet", test_alphabets=("Alpha0",), val_alphabets=("Alpha0",))
    with pytest.raises(DataError, match="leave no alphabet to train on"):
        split_omniglot(ds, by="alphabet", test_alphabets=("Alpha0", "Alpha1", "Alpha2"),
                       val_alphabets=("Alpha3", "Alpha4"))
    with pytest.raises(DataError, match="split_by='alphabet'"):
        split_omniglot(ds, by="character", test_alphabets=("Alpha0",), val_alphabets=("Alpha1",))


def test_alphabet_groups_keep_each_rotation_of_an_alphabet_apart(synthetic_omniglot) -> None:
    ds = rotate_classes(synthetic_omniglot(alphabets=2, characters=3))
    groups, names = alphabet_groups(ds)
    assert len(names) == 8 and "Alpha1@rot90" in names
    for label, name in enumerate(ds.class_names):
        alphabet, _, rotation = name.partition("@")
        assert names[groups[label]] == alphabet.split("/")[0] + ("@" + rotation if rotation else "")


def test_mirror_classes_then_rotations_give_eight_classes_per_character(
        synthetic_omniglot) -> None:
    ds = synthetic_omniglot(alphabets=2, characters=3, per_class=2)
    mirrored = mirror_classes(ds)
    assert mirrored.num_classes == 12 and len(mirrored) == 24
    assert mirrored.class_names[:2] == ("Alpha0/character01", "Alpha0/character01@mirror")
    by_name = dict(zip(mirrored.class_names, mirrored.class_indices(), strict=True))
    original = ds.images[ds.class_indices()[ds.class_names.index("Alpha1/character02")]]
    np.testing.assert_array_equal(mirrored.images[by_name["Alpha1/character02@mirror"]],
                                  original[:, :, ::-1])
    np.testing.assert_array_equal(mirrored.images[by_name["Alpha1/character02"]], original)
    both = rotate_classes(mirrored)
    assert both.num_classes == 8 * ds.num_classes
    assert "Alpha0/character03@mirror@rot270" in both.class_names
    # A mirrored alphabet at each rotation is its own group of within-alphabet episodes, and
    # a character's variants stay on one side of a character split.
    groups, names = alphabet_groups(both)
    assert len(names) == 16 and "Alpha1@mirror@rot90" in names
    label = both.class_names.index("Alpha1/character02@mirror@rot90")
    assert names[groups[label]] == "Alpha1@mirror@rot90"
    splits = split_omniglot(both, fractions=(0.5, 0.25, 0.25), seed=1)
    for split in splits.values():
        assert split.num_classes == 8 * len({n.split("@")[0] for n in split.class_names})
