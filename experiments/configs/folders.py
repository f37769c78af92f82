"""SIB on your own images: a folder of class folders split into train / val / test classes.

    python -m experiments.folders --workdir=W --data_dir=MY_DATA \
        --config.data.image_size=84 --config.settings=5way_1shot,5way_5shot

Data: MY_DATA/{train,val,test}/<class>/<image>, or MY_DATA/<class>/<image> plus
MY_DATA/splits.json ({"train": [...], "val": [...], "test": [...]}) or splits.txt
([train] / [val] / [test] sections of class names); --config.data.split_file points at a
split file elsewhere. Images of any size and channel count are converted to RGB
(--config.data.channels=1 for greyscale) and resized to data.image_size. Each split needs
at least n_way classes of at least n_shot + n_query images (15 queries by default), which
is checked before training starts.

Hardware and time: the defaults (Conv-4, the miniImageNet augmentation, a shorter schedule
than the paper's) are sized for a few thousand images on a CPU or one accelerator; the wall
time depends on the data and is not measured here.

Expected: no fixed accuracy; it depends on your data.
"""

from metaunlab.experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.backbone = "conv4"
    c.settings = "5way_1shot"
    c.data.name = "folders"
    c.data.image_size = 84
    c.data.transform = "miniimagenet"
    c.data.split_file = ""  # "" = MY_DATA/splits.json or splits.txt when present
    c.data.channels = 3
    c.val_episodes = 300
    c.pretrain.epochs = 30
    c.pretrain.warmup_steps = 500
    c.pretrain.decay_epochs = (25,)
    c.metatrain.iterations = 5000
    c.metatrain.val_every = 500
    c.test.episodes = 1000
    return c
