"""SIB on tieredImageNet with WRN-28-10, the miniImageNet recipe at the same 84 px.

    python -m experiments.tiered_imagenet --workdir=W --data_dir=DATA/tiered-imagenet \
        --config=experiments/configs/tiered_imagenet.py:1shot      # or :5shot

Data: DATA/tiered-imagenet/{train,val,test}_images.npz and {train,val,test}_labels.pkl
(Ren et al. 2018 split, 351/97/160 classes, 84x84; see metaunlab/data/tiered_imagenet.py).
Uncompressed .npz files are memory-mapped, so the 12.5 GB of train images are not read
into memory at start.

Hardware and time: an accelerator (WRN-28-10, 50,000 meta-training iterations); not run here,
so no wall time is measured.

Expected: the SIB paper reports no tieredImageNet result, so there is no published number
to match; the settings are the miniImageNet ones (WRN-28-10, pretraining with the
miniImageNet augmentation, K = 3, 50,000 meta-training iterations). Not reproduced here.
"""

from metaunlab.experiments.configs.common import published_config


def get_config(variant: str = "1shot"):
    c = published_config("tiered_imagenet", 84, variant)
    c.data.transform = "miniimagenet"  # same image size and statistics of natural images
    return c
