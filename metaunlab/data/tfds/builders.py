"""TFDS builders for the few-shot datasets: `cifar_fs`, `fc100`, `mini_imagenet`,
`tiered_imagenet` (importing this module registers them).

Build one with ``tfds build <name> --imports=metaunlab.data.tfds.builders --manual_dir=...
--file_format=array_record`` and read it back with
``metaunlab.data.tfds.reading.load_tfds_splits``.

Each builder turns a ``{"train", "val", "test"} -> ImageDataset`` (read by the library's own
loader from the manual folder) into a TFDS dataset with splits train/val/test and features

- ``image``: uint8 (H, W, 3), stored as PNG (lossless, encoded with Pillow so that building
  needs no TensorFlow),
- ``label``: ``ClassLabel`` over all classes, train classes first, then val, then test (each
  split's classes in its loader's order), so a split's labels are a contiguous range,
- ``index``: the image's position in its split, so readers can restore the loader's order
  (TFDS shuffles examples on disk).

Build with ``--file_format=array_record`` to read back without TensorFlow.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from metaunlab.data import cifar100
from metaunlab.data.dataset import ImageDataset
from metaunlab.data.errors import DataError
from metaunlab.data.mini_imagenet import load_mini_imagenet
from metaunlab.data.tiered_imagenet import load_tiered_imagenet

SPLITS = ("train", "val", "test")

class FewShotImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the few-shot builders; subclasses set the constants and ``_load_splits``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    IMAGE_SHAPE: tuple[int, int, int] = (32, 32, 3)
    CLASS_NAMES: tuple[str, ...] | None = None  # None: known only once the data is read
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""

    def _info(self) -> tfds.core.DatasetInfo:
        label = (
            tfds.features.ClassLabel(names=list(self.CLASS_NAMES))
            if self.CLASS_NAMES is not None
            else tfds.features.ClassLabel()
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=self.IMAGE_SHAPE, encoding_format="png"),
                "label": label,
                "index": np.int64,
            }),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _load_splits(self, manual_dir: Path) -> dict[str, ImageDataset]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        # TFDS itself stops with MANUAL_DOWNLOAD_INSTRUCTIONS when the folder is missing/empty.
        manual_dir = Path(dl_manager.manual_dir)
        splits = self._load_splits(manual_dir)
        names = [name for split in SPLITS for name in splits[split].class_names]
        if self.CLASS_NAMES is None:
            self.info.features["label"].names = names
        elif tuple(names) != tuple(self.CLASS_NAMES):
            raise DataError(
                f"the data in {manual_dir} has classes {names[:3]}... where {self.name} expects "
                f"{list(self.CLASS_NAMES[:3])}...; this is not the expected release."
            )
        offsets, start = {}, 0
        for split in SPLITS:
            offsets[split], start = start, start + splits[split].num_classes
        return {
            split: self._generate_examples(splits[split], offsets[split]) for split in SPLITS
        }

    def _generate_examples(
        self, dataset: ImageDataset, label_offset: int
    ) -> Iterator[tuple[int, dict]]:
        if dataset.images.shape[1:] != self.IMAGE_SHAPE:
            raise DataError(
                f"{self.name} expects images of shape {self.IMAGE_SHAPE}, got "
                f"{dataset.images.shape[1:]}; load the data at its native size."
            )
        for index in range(len(dataset)):
            yield index, {
                "image": png_bytes(dataset.images[index]),
                "label": int(dataset.labels[index]) + label_offset,
                "index": index,
            }


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="png")
    return buffer.getvalue()


MANUAL_INSTRUCTIONS = """\
Put the official cifar-100-python.tar.gz (MD5 eb9058c3a382ffc7106e4002c42a8d85, from the
CIFAR home page), or the cifar-100-python/ folder it extracts to, in the manual folder
(--manual_dir, default <data_dir>/downloads/manual/).
"""


class CifarFs(FewShotImageBuilder):
    """CIFAR-FS (Bertinetto et al., ICLR 2019), 600 images of 32x32 per class."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS
    IMAGE_SHAPE = (32, 32, 3)
    CLASS_NAMES = tuple(n for s in SPLITS for n in cifar100.split_classes("cifar_fs", s))
    DESCRIPTION = "CIFAR-FS: CIFAR-100 train+test images regrouped into 64/16/20 classes."
    HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
    CITATION = "Bertinetto, Henriques, Torr, Vedaldi. Meta-learning with differentiable " \
        "closed-form solvers. ICLR 2019."

    def _load_splits(self, manual_dir: Path) -> dict[str, ImageDataset]:
        return cifar100.load_cifar_fs(manual_dir, source="archive")


class Fc100(FewShotImageBuilder):
    """FC100 (Oreshkin et al., NeurIPS 2018), 600 images of 32x32 per class."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS
    IMAGE_SHAPE = (32, 32, 3)
    CLASS_NAMES = tuple(n for s in SPLITS for n in cifar100.split_classes("fc100", s))
    DESCRIPTION = "FC100: CIFAR-100 split by superclass into 60/20/20 fine classes."
    HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
    CITATION = "Oreshkin, Rodriguez, Lacoste. TADAM: Task dependent adaptive metric for " \
        "improved few-shot learning. NeurIPS 2018."

    def _load_splits(self, manual_dir: Path) -> dict[str, ImageDataset]:
        return cifar100.load_fc100(manual_dir, source="archive")


class MiniImagenet(FewShotImageBuilder):
    """miniImageNet: 64/16/20 classes of 600 images, 84x84."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put either form in the manual folder (--manual_dir):
  - the pickle caches mini-imagenet-cache-{train,val,test}.pkl, or
  - the SIB reference layout {train,val,test}/<wnid>/<image>.jpg (what `python -m
    metaunlab.data.mini_imagenet_build` writes from ImageNet and the Ravi & Larochelle CSVs).
Images are stored at 84x84 (folder images of another size are resized with the library's
decoder, exactly as the direct loader does).
"""
    IMAGE_SHAPE = (84, 84, 3)
    DESCRIPTION = "miniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split)."
    HOMEPAGE = "https://github.com/twitter-research/meta-learning-lstm"
    CITATION = "Ravi, Larochelle. Optimization as a model for few-shot learning. ICLR 2017."

    def _load_splits(self, manual_dir: Path) -> dict[str, ImageDataset]:
        return load_mini_imagenet(manual_dir, image_size=84)


class TieredImagenet(FewShotImageBuilder):
    """tieredImageNet: 351/97/160 classes, 84x84, images kept as stored (see below)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put {train,val,test}_images.npz (key "images", uint8 (N, 84, 84, 3)) and
{train,val,test}_labels.pkl (the tieredImageNet tools' decompressed form) in the manual folder
(--manual_dir). The npz images are in OpenCV's B, G, R channel order and are stored unchanged,
exactly as the direct loader returns them.
"""
    IMAGE_SHAPE = (84, 84, 3)
    DESCRIPTION = "tieredImageNet (Ren et al. 2018), fine ('specific') labels."
    HOMEPAGE = "https://github.com/renmengye/few-shot-ssl-public"
    CITATION = "Ren et al. Meta-learning for semi-supervised few-shot classification. ICLR 2018."

    def _load_splits(self, manual_dir: Path) -> dict[str, ImageDataset]:
        return load_tiered_imagenet(manual_dir)
