"""tieredImageNet: npz images (memory-mapped or not) + Python-2 label pickles."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.tiered_imagenet import (
    load_tiered_imagenet,
    load_tiered_split,
    mmap_npz_member,
)

SPLITS = ("train", "val", "test")


def test_uncompressed_npz_is_memory_mapped_and_py2_labels_are_read(tmp_path, write_tiered_imagenet):
    written = write_tiered_imagenet(tmp_path)
    splits = load_tiered_imagenet(tmp_path)
    for split in SPLITS:
        images, labels = written[split]
        dataset = splits[split]
        assert isinstance(dataset.images, np.memmap)  # no copy into memory
        np.testing.assert_array_equal(dataset.images, images)
        np.testing.assert_array_equal(dataset.labels, labels)
        assert dataset.class_names == ("n00_café", "n01_café", "n02_café")


def test_compressed_npz_is_read_into_memory(tmp_path, write_tiered_imagenet):
    written = write_tiered_imagenet(tmp_path, compressed=True)
    dataset = load_tiered_split(tmp_path, "val")
    assert not isinstance(dataset.images, np.memmap)
    np.testing.assert_array_equal(dataset.images, written["val"][0])


def test_unpacked_npy_beside_the_npz_is_used_instead(tmp_path, write_tiered_imagenet):
    write_tiered_imagenet(tmp_path, compressed=True)
    unpacked = np.full((12, 8, 8, 3), 7, np.uint8)
    np.save(tmp_path / "test_images.npy", unpacked)
    dataset = load_tiered_split(tmp_path, "test")
    assert isinstance(dataset.images, np.memmap) and (dataset.images == 7).all()


def test_mmap_reads_zip64_style_local_headers(tmp_path):
    """The data offset comes from the local header, whose extra field can be longer than
    the central directory's (np.savez writes zip64 extras for large members)."""
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    path = tmp_path / "x.npz"
    np.savez(path, images=images)
    raw = bytearray(path.read_bytes())
    # Grow the first local header's extra field by 8 bytes of padding (id 0xCAFE) and
    # shift the central directory offsets accordingly.
    name_len, extra_len = struct.unpack_from("<HH", raw, 26)
    insert_at = 30 + name_len + extra_len
    pad = struct.pack("<HH", 0xCAFE, 4) + b"\0" * 4
    raw[insert_at:insert_at] = pad
    struct.pack_into("<H", raw, 28, extra_len + len(pad))
    eocd = raw.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", raw, eocd + 16)[0]
    struct.pack_into("<I", raw, eocd + 16, cd_offset + len(pad))
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(mmap_npz_member(path), images)


def test_resize_on_request(tmp_path, write_tiered_imagenet):
    write_tiered_imagenet(tmp_path, size=84)
    assert load_tiered_split(tmp_path, "train", image_size=16).images.shape == (12, 16, 16, 3)


def test_missing_and_misplaced_files(tmp_path, write_tiered_imagenet):
    write_tiered_imagenet(tmp_path / "data" / "tiered-imagenet")
    with pytest.raises(DataError, match=r"train_images.npz is missing but .*tiered-imagenet"):
        load_tiered_imagenet(tmp_path / "data")
    (tmp_path / "data" / "tiered-imagenet" / "val_labels.pkl").unlink()
    with pytest.raises(DataError, match=r"val_labels.pkl is missing next to val_images.npz"):
        load_tiered_imagenet(tmp_path / "data" / "tiered-imagenet")
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "train_images_png.pkl").write_bytes(b"")
    with pytest.raises(DataError, match=r"original PNG-encoded release"):
        load_tiered_split(tmp_path / "png", "train")


def test_broken_files_are_named(tmp_path, write_tiered_imagenet):
    write_tiered_imagenet(tmp_path)
    (tmp_path / "train_images.npz").write_text("<html><body>Too many users</body></html>")
    with pytest.raises(DataError, match=r"train_images.npz is an HTML page"):
        load_tiered_split(tmp_path, "train")
    (tmp_path / "train_images.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"train_images.npz is not a readable numpy file"):
        load_tiered_split(tmp_path, "train")
    np.savez(tmp_path / "val_images.npz", pixels=np.zeros((12, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"not images.npy"):
        load_tiered_split(tmp_path, "val")
    np.savez(tmp_path / "test_images.npz", images=np.zeros((5, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"12 labels but .* 5 images"):
        load_tiered_split(tmp_path, "test")


def test_labels_file_checks(tmp_path, write_tiered_imagenet):
    write_tiered_imagenet(tmp_path)
    (tmp_path / "val_labels.pkl").write_bytes(pickle.dumps({"labels": [0] * 12}))
    with pytest.raises(DataError, match=r"lacks label_specific"):
        load_tiered_split(tmp_path, "val")
    (tmp_path / "val_labels.pkl").write_bytes(pickle.dumps(
        {"label_specific": np.full(12, 3), "label_specific_str": ["a", "b", "c"]}))
    with pytest.raises(DataError, match=r"do not index its 3 label_specific_str"):
        load_tiered_split(tmp_path, "val")
