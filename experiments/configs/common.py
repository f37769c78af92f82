"""Fields shared by every experiment config; each experiment overrides a few of them."""

import ml_collections

from metaunlab.errors import ConfigError
from metaunlab.train import metatrain_config


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.backbone = "conv4"
    c.settings = "5way_1shot"  # comma-separated "<N>way_<K>shot" settings to meta-train and test
    c.eval_checkpoint = "last"  # the published numbers use the last checkpoint; or "best"
    c.val_seed = 1
    c.val_episodes = 1000

    c.data = ml_collections.ConfigDict()
    c.data.name = ""
    c.data.root = ""
    c.data.image_size = ml_collections.FieldReference(None, field_type=int)
    c.data.transform = ""
    # The on-disk form where a data set has several (metaunlab/data/sources.py lists them);
    # "auto" picks it by the files present.
    c.data.format = "auto"
    # Expected checksums, "<file>=sha256:<hex>,..." relative to data.root; checked first.
    c.data.checksums = ""
    # Check the published MD5 of cifar-100-python (CIFAR-FS, FC100); off only for fixtures.
    c.data.verify_checksum = True

    # Backbone pretraining: cosine classifier on the base classes.
    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.seed = 0
    c.pretrain.epochs = 60
    c.pretrain.batch_size = 64  # global: split over all devices, so a multiple of their count
    c.pretrain.lr = 0.1
    c.pretrain.warmup_steps = 6000
    c.pretrain.decay_epochs = (50,)
    c.pretrain.decay_factor = 0.1
    c.pretrain.momentum = 0.9
    c.pretrain.weight_decay = 5e-4
    c.pretrain.val_every_epochs = 1
    c.pretrain.val_n_way = 5
    c.pretrain.val_n_shot = 1
    c.pretrain.val_n_query = 15
    c.pretrain.log_every = 50
    # A preset of metaunlab.data.augment for pretraining only ("" = data.transform).
    c.pretrain.transform = ""
    # Save the full state this often (steps; 0 = only at validation and on SIGTERM).
    c.pretrain.checkpoint_every = 1000
    # Memory levers: recompute each residual block in the backward pass (wrn28_10, resnet12),
    # and the backbone's compute dtype ("float32" or "bfloat16"; parameters stay float32).
    c.pretrain.backbone_remat = False
    c.pretrain.backbone_dtype = "float32"

    # SIB meta-training on the frozen backbone (the reference's published settings; each
    # field's meaning beside its default in metaunlab/train/metatrain_config.py).
    c.metatrain = metatrain_config.default_config()

    c.test = ml_collections.ConfigDict()
    c.test.episodes = 2000
    c.test.n_query = 15
    c.test.seed = 2
    # More query counts to meta-test each setting at ("1,5"): results.json keys
    # "<setting>_<q>query" beside "<setting>" (test.n_query), with the same test seed.
    c.test.extra_query_counts = ""
    # "" (the reference): SIB steps by metatrain.inner_lr whatever the query set. Multiples
    # of that step ("0.25,0.5,1,2,4"): for each meta-tested query count, the multiple with
    # the best accuracy on seeded validation episodes of that count is chosen
    # (metaunlab.research.step_tuning) and results.json adds "sib_tuned" beside "sib" and "k0".
    c.test.step_scales = ""
    c.log_every = 100
    return c


def published_config(dataset: str, image_size: int, variant: str) -> ml_collections.ConfigDict:
    """The SIB paper's WRN-28-10 setting for `dataset`, 5-way `variant` ("1shot"/"5shot")."""
    shots = {"1shot": 1, "5shot": 5}
    if variant not in shots:
        raise ConfigError(f"--config variant {variant!r} is not one of {sorted(shots)}.")
    c = base_config()
    c.backbone = "wrn28_10"
    c.settings = f"5way_{shots[variant]}shot"
    c.data.name = dataset
    c.data.image_size = image_size
    c.data.transform = dataset
    return c
