"""The TFDS builders build from fixtures in the real on-disk formats into a temporary data_dir
(array_record, no TensorFlow) and read back exactly what the direct loaders return."""

import hashlib
import pickle
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import metaunlab.data.tfds.builders  # noqa: E402, F401  (registers the builders)
from metaunlab.data import cifar100  # noqa: E402
from metaunlab.data.errors import DataError  # noqa: E402
from metaunlab.data.mini_imagenet import load_mini_imagenet  # noqa: E402
from metaunlab.data.tfds.reading import load_tfds_splits  # noqa: E402
from metaunlab.data.tiered_imagenet import load_tiered_imagenet  # noqa: E402


def _build(name, data_dir, manual_dir):
    builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return builder


def _assert_same(read_back, direct):
    assert set(read_back) == set(direct) == {"train", "val", "test"}
    for split in direct:
        assert read_back[split].class_names == direct[split].class_names
        np.testing.assert_array_equal(read_back[split].labels, direct[split].labels)
        np.testing.assert_array_equal(read_back[split].images, direct[split].images)


@pytest.mark.parametrize("name,loader", [("cifar_fs", cifar100.load_cifar_fs),
                                         ("fc100", cifar100.load_fc100)])
def test_cifar_builders_round_trip(tmp_path, monkeypatch, name, loader, make_cifar100_python):
    fake = make_cifar100_python(tmp_path / "manual", train_per_class=1, test_per_class=1)
    # The builder always verifies the archive; accept the fixture's checksum instead of the
    # official one so the check itself still runs.
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", hashlib.md5(fake.archive.read_bytes()).hexdigest())
    builder = _build(name, tmp_path / "tfds", tmp_path / "manual")
    assert builder.info.splits["train"].num_examples == {"cifar_fs": 64, "fc100": 60}[name] * 2
    assert builder.info.features["image"].shape == (32, 32, 3)
    _assert_same(load_tfds_splits(name, tmp_path / "tfds"), loader(fake.archive))
    assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_cifar_builder_refuses_unofficial_archive(tmp_path, make_cifar100_python):
    make_cifar100_python(tmp_path / "manual", train_per_class=1, test_per_class=0)
    with pytest.raises(DataError, match="MD5"):
        _build("cifar_fs", tmp_path / "tfds", tmp_path / "manual")


def test_missing_manual_dir_shows_instructions(tmp_path):
    # TFDS's own check, which prints the builder's MANUAL_DOWNLOAD_INSTRUCTIONS.
    with pytest.raises(AssertionError, match=r"(?s)does not exist.*cifar-100-python\.tar\.gz"):
        _build("fc100", tmp_path / "tfds", tmp_path / "absent")


def _mini_caches(folder, rng):
    folder.mkdir()
    for split, classes in (("train", 3), ("val", 2), ("test", 2)):
        labels = rng.permutation(np.repeat(np.arange(classes), 2))
        cache = {
            "image_data": rng.integers(0, 256, (len(labels), 84, 84, 3), dtype=np.uint8),
            "class_dict": {f"n0{split}{c}": list(np.flatnonzero(labels == c))
                           for c in range(classes)},
        }
        (folder / f"mini-imagenet-cache-{split}.pkl").write_bytes(pickle.dumps(cache, protocol=4))


def test_mini_imagenet_builder_round_trip(tmp_path):
    _mini_caches(tmp_path / "manual", np.random.default_rng(1))
    _build("mini_imagenet", tmp_path / "tfds", tmp_path / "manual")
    _assert_same(load_tfds_splits("mini_imagenet", tmp_path / "tfds"),
                 load_mini_imagenet(tmp_path / "manual", format="pickle"))


def test_tiered_imagenet_builder_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    manual = tmp_path / "manual"
    manual.mkdir()
    for split, classes in (("train", 3), ("val", 2), ("test", 2)):
        labels = rng.permutation(np.repeat(np.arange(classes), 2))
        np.savez(manual / f"{split}_images.npz",
                 images=rng.integers(0, 256, (len(labels), 84, 84, 3), dtype=np.uint8))
        names = [f"{split}_class_{c}" for c in range(classes)]
        record = {"label_specific": labels, "label_general": np.zeros_like(labels),
                  "label_specific_str": names, "label_general_str": ["all"]}
        (manual / f"{split}_labels.pkl").write_bytes(pickle.dumps(record, protocol=2))
    _build("tiered_imagenet", tmp_path / "tfds", manual)
    _assert_same(load_tfds_splits("tiered_imagenet", tmp_path / "tfds"),
                 load_tiered_imagenet(manual))
