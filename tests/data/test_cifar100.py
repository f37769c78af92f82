"""CIFAR-FS / FC100: the split lists as facts, the archive and TFDS readers, every user error."""

import hashlib
import pickle
import tarfile

import numpy as np
import pytest

from metaunlab.data import cifar100
from metaunlab.data.errors import DataError


@pytest.fixture(scope="module")
def fake(tmp_path_factory, make_cifar100_python):
    return make_cifar100_python(tmp_path_factory.mktemp("cifar"))


# --- split lists ----------------------------------------------------------------------------


def test_cifar100_fact_lists_agree():
    fine = cifar100.cifar100_fine_label_names()
    groups = cifar100.cifar100_superclasses()
    assert len(fine) == 100 and list(fine) == sorted(fine)  # the meta file's label order
    assert len(groups) == 20 and all(len(members) == 5 for members in groups.values())
    assert sorted(f for members in groups.values() for f in members) == list(fine)
    # Spot checks against the CIFAR-100 table, including the less guessable names.
    assert groups["people"] == ("baby", "boy", "girl", "man", "woman")
    assert "maple_tree" in groups["trees"] and "sweet_pepper" in groups["fruit_and_vegetables"]


@pytest.mark.parametrize("dataset,sizes", [("cifar_fs", (64, 16, 20)), ("fc100", (60, 20, 20))])
def test_split_lists_are_disjoint_and_cover_cifar100(dataset, sizes):
    splits = [cifar100.split_classes(dataset, s) for s in cifar100.SPLIT_NAMES]
    assert tuple(len(s) for s in splits) == sizes
    union = [name for split in splits for name in split]
    assert sorted(union) == sorted(cifar100.cifar100_fine_label_names())  # disjoint, all real


def test_cifar_fs_split_matches_published_lists():
    assert cifar100.split_classes("cifar_fs", "val") == (
        "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish",
        "lamp", "maple_tree", "motorcycle", "otter", "sea", "shark", "television", "tractor")
    assert cifar100.split_classes("cifar_fs", "test") == (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain",
        "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe",
        "whale", "woman", "worm")


def test_fc100_splits_are_whole_superclasses():
    groups = cifar100.cifar100_superclasses()
    expected = {
        # Oreshkin et al. 2018: superclass ids 8, 11, 13, 16 (val) and 0, 7, 12, 14 (test).
        "val": ["large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates",
                "small_mammals"],
        "test": ["aquatic_mammals", "insects", "medium_mammals", "people"],
    }
    expected["train"] = [c for c in groups if c not in expected["val"] + expected["test"]]
    assert len(expected["train"]) == 12
    for split, coarse in expected.items():
        fine = sorted(f for c in coarse for f in groups[c])
        assert list(cifar100.split_classes("fc100", split)) == fine


# --- archive reader -------------------------------------------------------------------------


@pytest.mark.parametrize("loader,dataset", [(cifar100.load_cifar_fs, "cifar_fs"),
                                            (cifar100.load_fc100, "fc100")])
def test_archive_loader_regroups_every_image(fake, loader, dataset):
    splits = loader(fake.archive, source="archive", verify_checksum=False)
    names = cifar100.cifar100_fine_label_names()
    for split, ds in splits.items():
        assert ds.class_names == cifar100.split_classes(dataset, split)
        assert ds.images.shape[1:] == (32, 32, 3) and ds.images.dtype == np.uint8
        for label, name in enumerate(ds.class_names):
            rows = np.flatnonzero(fake.labels == names.index(name))  # train rows, then test
            assert len(rows) == 3
            np.testing.assert_array_equal(ds.images[ds.labels == label], fake.images[rows])


def test_archive_pixels_are_rgb_channel_major(tmp_path, make_cifar100_python):
    fake = make_cifar100_python(tmp_path, train_per_class=1, test_per_class=0)
    full = cifar100.load_cifar100_archive(fake.archive, verify_checksum=False)
    # Row layout of the release: 1024 red values, 1024 green, 1024 blue.
    with tarfile.open(fake.archive) as tar:
        row = pickle.load(tar.extractfile("cifar-100-python/train"), encoding="latin1")["data"][0]
    assert full.images[0, 0, 1, 0] == row[1] and full.images[0, 1, 0, 1] == row[1024 + 32]
    assert full.images[0, 31, 31, 2] == row[3071]


def test_extracted_folder_and_parent_folder_work(fake, tmp_path):
    with tarfile.open(fake.archive) as tar:
        tar.extractall(tmp_path, filter="data")
    from_folder = cifar100.load_cifar100(tmp_path, source="archive", verify_checksum=False)
    from_archive = cifar100.load_cifar100(fake.archive.parent, verify_checksum=False)
    np.testing.assert_array_equal(from_folder.images, from_archive.images)
    np.testing.assert_array_equal(from_folder.labels, from_archive.labels)


def test_md5_is_checked_by_default(fake):
    with pytest.raises(DataError, match=r"MD5 .* published cifar-100-python\.tar\.gz has "
                                        + cifar100.ARCHIVE_MD5):
        cifar100.load_cifar_fs(fake.archive)


def test_extracted_members_md5_checked(fake, tmp_path):
    with tarfile.open(fake.archive) as tar:
        tar.extractall(tmp_path, filter="data")
    with pytest.raises(DataError, match=r"published (train|test|meta) has"):
        cifar100.load_cifar100_archive(tmp_path / "cifar-100-python")


def test_md5_matching_archive_passes(fake, monkeypatch):
    digest = hashlib.md5(fake.archive.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", digest)
    assert len(cifar100.load_cifar100_archive(fake.archive)) == len(fake.labels)


def test_missing_archive(tmp_path):
    with pytest.raises(DataError, match=r"no cifar-100-python.tar.gz .* at "):
        cifar100.load_cifar_fs(tmp_path / "nowhere", source="archive")


def test_html_page_in_place_of_archive(tmp_path):
    page = tmp_path / "cifar-100-python.tar.gz"
    page.write_bytes(b"<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    with pytest.raises(DataError, match="is an HTML page"):
        cifar100.load_fc100(tmp_path, verify_checksum=False)


def test_truncated_archive(fake, tmp_path):
    cut = tmp_path / "cifar-100-python.tar.gz"
    cut.write_bytes(fake.archive.read_bytes()[:500])
    with pytest.raises(DataError, match=r"not a readable (tar.gz|pickle)"):
        cifar100.load_cifar100_archive(cut, verify_checksum=False)


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(fake, tmp_path, add_tar_member):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad" / "cifar-100-python.tar.gz"
    bad.parent.mkdir()
    with tarfile.open(fake.archive) as src, tarfile.open(bad, "w:gz") as dst:
        for name in ("train", "test"):
            add_tar_member(dst, f"cifar-100-python/{name}",
                           src.extractfile(f"cifar-100-python/{name}").read())
        add_tar_member(dst, "cifar-100-python/meta",
                       pickle.dumps({"fine_label_names": _RunsShell(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"asks to run (posix|os|nt)\.system"):
        cifar100.load_cifar_fs(bad, verify_checksum=False)
    assert not marker.exists()


def test_meta_without_split_classes(fake, tmp_path, add_tar_member):
    renamed = tmp_path / "cifar-100-python.tar.gz"
    names = list(cifar100.cifar100_fine_label_names())
    names[names.index("whale")] = "orca"
    with tarfile.open(fake.archive) as src, tarfile.open(renamed, "w:gz") as dst:
        for name in ("train", "test"):
            add_tar_member(dst, f"cifar-100-python/{name}",
                           src.extractfile(f"cifar-100-python/{name}").read())
        add_tar_member(dst, "cifar-100-python/meta",
                       pickle.dumps({"fine_label_names": names}, protocol=2))
    with pytest.raises(DataError, match=r"cifar_fs test split names classes \['whale'\]"):
        cifar100.load_cifar_fs(renamed, verify_checksum=False)


def test_bad_source_flag():
    with pytest.raises(DataError, match="source='torchvision' is not supported"):
        cifar100.load_cifar_fs(source="torchvision")


# --- TFDS cifar100 ----------------------------------------------------------------------------


def test_tfds_source_equals_archive(fake, tmp_path, prepare_fake_tfds_cifar100):
    pytest.importorskip("tensorflow_datasets")
    prepare_fake_tfds_cifar100(fake, tmp_path)
    from_tfds = cifar100.load_fc100(source="tfds", tfds_data_dir=tmp_path)
    from_archive = cifar100.load_fc100(fake.archive, verify_checksum=False)
    for split in cifar100.SPLIT_NAMES:
        assert from_tfds[split].class_names == from_archive[split].class_names
        np.testing.assert_array_equal(from_tfds[split].images, from_archive[split].images)
        np.testing.assert_array_equal(from_tfds[split].labels, from_archive[split].labels)


def test_tfds_not_prepared(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match=r"'cifar100' is not prepared in .*tfds build cifar100"):
        cifar100.load_cifar_fs(source="tfds", tfds_data_dir=tmp_path)
