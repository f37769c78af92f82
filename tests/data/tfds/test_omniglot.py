"""Omniglot read from a prepared TFDS ``omniglot`` equals ``load_omniglot`` on the same PNGs."""

import zipfile

import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.omniglot import load_omniglot
from metaunlab.data.tfds.omniglot import load_omniglot_tfds

tfds = pytest.importorskip("tensorflow_datasets")


def _prepare_fake_tfds_omniglot(archive, data_dir):
    """TFDS's own Omniglot builder (name, version, features) with only the download step
    replaced: like the real one it stores each original PNG file's bytes unchanged."""
    from tensorflow_datasets.image_classification.omniglot import Omniglot

    with zipfile.ZipFile(archive) as zf:
        pngs = sorted((n, zf.read(n)) for n in zf.namelist() if n.endswith(".png"))
    alphabets = sorted({n.split("/")[1] for n, _ in pngs})
    characters = sorted({tuple(n.split("/")[1:3]) for n, _ in pngs})

    class FakeSourceOmniglot(Omniglot, skip_registration=True):
        name = "omniglot"

        def _split_generators(self, dl_manager):
            # Both ClassLabels have fixed sizes (50 alphabets, 1623 characters): pad the names.
            self.info.features["alphabet"].names = alphabets + [
                f"unused_{i}" for i in range(50 - len(alphabets))]
            self.info.features["label"].names = [
                f"{a}_{int(c[len('character'):]) - 1}" for a, c in characters
            ] + [f"unused_{i}" for i in range(1623 - len(characters))]
            # small1 repeats part of train, as the real small archives repeat background ones.
            return {"train": self._generate_examples(pngs[20:]),
                    "test": self._generate_examples(pngs[:20]),
                    "small1": self._generate_examples(pngs[:40]),
                    "small2": self._generate_examples(pngs[40:])}

        def _generate_examples(self, members):
            for name, data in members:
                _, alphabet, character, file_name = name.split("/")
                char_id = int(character[len("character"):]) - 1
                yield f"{alphabet}_{char_id}_{file_name}", {
                    "image": data,
                    "alphabet": alphabets.index(alphabet),
                    "alphabet_char_id": char_id,
                    "label": characters.index((alphabet, character)),
                }

    FakeSourceOmniglot(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_omniglot_equals_archive(tmp_path, omniglot_small1, first_characters_archive):
    archive = tmp_path / "images_background.zip"
    first_characters_archive(omniglot_small1, archive, count=3)
    _prepare_fake_tfds_omniglot(archive, tmp_path / "tfds")
    direct = load_omniglot(tmp_path, image_size=28)
    # train + small1 together hold every drawing once after merging the overlap.
    from_tfds = load_omniglot_tfds(["train", "small1"], data_dir=tmp_path / "tfds")
    assert from_tfds.class_names == direct.class_names
    assert from_tfds.images.shape == direct.images.shape == (60, 28, 28, 1)
    # Same images per class (TFDS loses the drawer's file name, so compare as sets).
    for label in range(direct.num_classes):
        ours = sorted(im.tobytes() for im in from_tfds.images[from_tfds.labels == label])
        theirs = sorted(im.tobytes() for im in direct.images[direct.labels == label])
        assert ours == theirs
    assert from_tfds.images.mean() < 128  # strokes bright on a mostly black background
    full = load_omniglot_tfds("test", data_dir=tmp_path / "tfds", image_size=None)
    assert full.images.shape == (20, 105, 105, 1)


def test_unknown_split():
    with pytest.raises(DataError, match="TFDS omniglot splits"):
        load_omniglot_tfds(["validation"])


def test_omniglot_experiment_config_reads_tfds(tmp_path, omniglot_small1, first_characters_archive):
    """`--config.data.format=tfds` gives the same class-disjoint splits as the archives."""
    from experiments.configs.omniglot import get_config
    from metaunlab.data.sources import load_dataset_splits

    archive = tmp_path / "zips" / "images_background.zip"
    archive.parent.mkdir()
    first_characters_archive(omniglot_small1, archive, count=8)
    _prepare_fake_tfds_omniglot(archive, tmp_path / "tfds")
    data = get_config().data
    data.fractions = (0.5, 0.25, 0.25)
    data.rotate_splits = ()
    from_zip, _ = load_dataset_splits(_with(data, root=str(archive.parent)))
    from_tfds, _ = load_dataset_splits(_with(data, root=str(tmp_path / "tfds"), format="tfds",
                                             tfds_splits="train,small1"))
    for split in ("train", "val", "test"):
        assert from_tfds[split].class_names == from_zip[split].class_names
        assert from_tfds[split].images.shape == from_zip[split].images.shape


def _with(config, **fields):
    copy = config.copy_and_resolve_references()
    for key, value in fields.items():
        copy[key] = value
    return copy
