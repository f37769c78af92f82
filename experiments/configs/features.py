"""SIB and the baselines on features computed elsewhere: one .npz, no images, no backbone.

    python -m experiments.features --workdir=W --data_dir=FEATS.npz \
        --config.settings=5way_1shot,5way_5shot

FEATS.npz holds train/val/test `_features` (N, D) float and `_labels` (N,) int arrays
(metaunlab/data/features.py); the three splits' classes should be disjoint. Nothing is
pretrained: meta-training and testing read the features as they are. Any experiment reads
features the same way with --config.data.format=features --config.data.root=FEATS.npz.

Hardware and time: a CPU is enough; 4000 iterations of 8 episodes take a few minutes on a
CPU for 640-d features.

Expected: no fixed accuracy; it depends on your features.
"""

from metaunlab.experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.settings = "5way_1shot,5way_5shot"
    c.data.name = "features"
    c.data.format = "features"
    c.val_episodes = 300
    c.metatrain.iterations = 4000
    c.metatrain.batch_size = 8
    c.metatrain.val_every = 500
    c.metatrain.log_every = 50
    c.test.episodes = 2000
    return c
