"""Read an already-prepared TFDS dataset into NumPy, without TensorFlow where possible.

A dataset prepared with ``--file_format=array_record`` is read with ``tfds.data_source``
(random access, NumPy decoding with Pillow, no TensorFlow). One prepared in the default
``tfrecord`` format can only be read through TensorFlow; if it is not installed the user is
told how to rebuild. Nothing here ever downloads: ``download=False`` throughout.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError

SPLITS = ("train", "val", "test")


def default_tfds_dir() -> Path:
    """``$TFDS_DATA_DIR`` if set, else TFDS's own default ``~/tensorflow_datasets``."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "reading TFDS datasets needs tensorflow-datasets; install it with "
            "pip install 'metaunlab[tfds]'."
        ) from None
    return tfds


def prepared_builder(name: str, data_dir: str | os.PathLike | None):
    """The TFDS builder of ``name`` in ``data_dir``, which must already be prepared."""
    tfds = _import_tfds()
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_tfds_dir()
    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    except Exception as error:  # TFDS raises several types for "not registered/not found"
        raise DataError(
            f"TFDS dataset {name!r} cannot be opened in {data_dir} ({error}); prepare it with "
            f"`tfds build {name} --data_dir={data_dir} --file_format=array_record`."
        ) from error
    if not builder.is_prepared():
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {data_dir}; prepare it with "
            f"`tfds build {name} --data_dir={data_dir} --file_format=array_record`, or pass "
            "the folder that holds it as tfds_data_dir."
        )
    return builder


def iterate_split(
    builder, split: str, skip_decoding: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """Every example of ``split`` as a dict of NumPy values, in the stored order.

    Features named in ``skip_decoding`` come back as their encoded bytes (e.g. the original
    PNG file of an image), so callers can decode them exactly as their own loaders do.
    """
    tfds = _import_tfds()
    if split not in builder.info.splits:
        raise DataError(
            f"TFDS dataset {builder.name!r} has no split {split!r} (it has "
            f"{sorted(builder.info.splits)}); choose one of those."
        )
    decoders = {key: tfds.decode.SkipDecoding() for key in skip_decoding} or None
    file_format = builder.info.file_format
    if file_format is not None and file_format.name in ("ARRAY_RECORD", "PARQUET"):
        source = builder.as_data_source(split=split, decoders=decoders)
        for index in range(len(source)):
            yield source[index]
        return
    try:
        import tensorflow  # noqa: F401  (only to know whether the tfrecord path can work)
    except ImportError:
        raise DataError(
            f"TFDS dataset {builder.name!r} in {builder.data_dir} is stored as tfrecord, "
            "which needs TensorFlow to read; install tensorflow-cpu or rebuild it with "
            f"`tfds build {builder.name} --file_format=array_record`."
        ) from None
    dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    yield from tfds.as_numpy(dataset)


def load_tfds_splits(
    name: str, data_dir: str | os.PathLike | None = None
) -> dict[str, ImageDataset]:
    """A dataset built by one of this package's builders, as ``{"train", "val", "test"} ->
    ImageDataset`` equal to what the direct loader returns: same images in the same order,
    each split's labels 0..k-1 in its own class order."""
    import metaunlab.data.tfds.builders  # noqa: F401  (registers them for tfds.builder)

    builder = prepared_builder(name, data_dir)
    all_names = builder.info.features["label"].names
    result, offset = {}, 0
    for split in SPLITS:
        examples = sorted(iterate_split(builder, split), key=lambda ex: int(ex["index"]))
        labels = np.array([int(ex["label"]) for ex in examples], dtype=np.int64)
        # The builder numbers classes train, then val, then test: a split's classes are the
        # contiguous range that starts where the previous split's ended.
        count = int(labels.max()) + 1 - offset if len(labels) else 0
        result[split] = ImageDataset(
            images=np.stack([np.asarray(ex["image"], np.uint8) for ex in examples]),
            labels=(labels - offset).astype(np.int32),
            class_names=tuple(all_names[offset : offset + count]),
        )
        offset += count
    return result
