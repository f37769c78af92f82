"""Omniglot from a prepared TFDS ``omniglot`` dataset, in the same form as ``load_omniglot``.

TFDS stores each drawing's original PNG file unchanged (its builder passes the file path), so
reading the encoded bytes (``SkipDecoding``) and decoding them with ``omniglot_format`` gives
exactly the arrays ``load_omniglot`` makes from the zip archives: greyscale, Lanczos-resized to
``image_size``, strokes bright (255) on black. (TFDS's own decoding would instead give
105x105x3 with dark strokes on white.)

Splits: ``train`` = images_background, ``test`` = images_evaluation, ``small1``/``small2`` =
the small background subsets. Classes are named ``"<Alphabet>/characterNN"`` like the archive
folders (TFDS's ``alphabet`` name and 0-based ``alphabet_char_id``). TFDS does not keep the
drawer's file name, so within a class images are ordered by their PNG bytes rather than by
drawer; the set of images per class is the same. Drawings present in several requested splits
(small1/small2 overlap) are kept once, as ``load_omniglot`` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from metaunlab.data.dataset import ImageDataset
from metaunlab.data.decode import decode_image
from metaunlab.data.errors import DataError
from metaunlab.data.omniglot import omniglot_format
from metaunlab.data.tfds.reading import iterate_split, prepared_builder

TFDS_SPLITS = ("train", "test", "small1", "small2")


def load_omniglot_tfds(
    splits: Sequence[str] = ("train", "test"),
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = 28,
) -> ImageDataset:
    """The drawings of the given TFDS splits as one dataset, one class per character."""
    if isinstance(splits, str):
        splits = [splits]
    unknown = [s for s in splits if s not in TFDS_SPLITS]
    if unknown or not splits:
        raise DataError(
            f"TFDS omniglot splits {list(splits)} are not valid; choose from {TFDS_SPLITS}."
        )
    builder = prepared_builder("omniglot", data_dir)
    alphabets = builder.info.features["alphabet"].names
    drawings: dict[str, set[bytes]] = {}
    for split in splits:
        for example in iterate_split(builder, split, skip_decoding=("image",)):
            name = f"{alphabets[int(example['alphabet'])]}/character"
            name += f"{int(example['alphabet_char_id']) + 1:02d}"
            drawings.setdefault(name, set()).add(bytes(example["image"]))
    fmt = omniglot_format(image_size)
    class_names = sorted(drawings)
    images, labels = [], []
    for label, name in enumerate(class_names):
        for data in sorted(drawings[name]):
            images.append(decode_image(data, f"TFDS omniglot {name}", fmt))
            labels.append(label)
    return ImageDataset(
        images=np.stack(images), labels=np.array(labels, np.int32), class_names=class_names
    )
