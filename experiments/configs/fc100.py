"""SIB on FC100 with WRN-28-10 at 32 px, the CIFAR-FS recipe.

    python -m experiments.fc100 --workdir=W --data_dir=DATA/cifar100 \
        --config=experiments/configs/fc100.py:1shot      # or :5shot

Data: the cifar-100-python release (DATA/cifar100/cifar-100-python.tar.gz or the extracted
cifar-100-python/ folder), regrouped by superclass into 60/20/20 classes (Oreshkin et al.
2018; lists in metaunlab/data/splits/fc100), or `--config.data.format=tfds` with a data dir
built by `metaunlab.data.tfds.builders` (see docs/data.md).

Hardware and time: an accelerator (WRN-28-10, the CIFAR-FS schedule); not run here, so no
wall time is measured.

Expected: the SIB paper reports no FC100 result, so there is no published number to match;
the settings are the CIFAR-FS ones. Not reproduced here.
"""

from metaunlab.experiments.configs.common import published_config


def get_config(variant: str = "1shot"):
    c = published_config("fc100", 32, variant)
    c.data.transform = "cifar_fs"  # the same CIFAR-100 images and statistics
    return c
