"""Fields shared by every experiment config; each experiment overrides a few of them."""

import ml_collections

from metaunlab.errors import ConfigError
from metaunlab.train import config_schema


def base_config() -> ml_collections.ConfigDict:
    """Every field at its default (`metaunlab.train.config_schema`, where each field's
    meaning and check sit beside it)."""
    return config_schema.default_config()


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
