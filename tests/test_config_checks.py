"""Config values are checked, in one place, before a work dir stores anything."""

import math

import pytest

from experiments.configs.omniglot import get_config
from metaunlab.errors import ConfigError
from metaunlab.train.config_checks import check_config, unknown_field_message
from metaunlab.train.pipeline import train_and_evaluate


@pytest.mark.parametrize("field,value,message", [
    ("metatrain.sib_steps", -1, r"--config\.metatrain\.sib_steps=-1 is not allowed; it must "
                                r"be an integer >= 0 and <= 100\."),
    ("metatrain.sib_steps", 10**7, r"sib_steps=10000000 is not allowed"),
    ("metatrain.lr", math.nan, r"--config\.metatrain\.lr=nan .* a finite number > 0"),
    ("metatrain.inner_lr", math.nan, r"--config\.metatrain\.inner_lr=nan"),
    ("metatrain.iterations", 0, r"--config\.metatrain\.iterations=0 .* integer >= 1"),
    ("metatrain.iterations", -5, r"iterations=-5"),
    ("metatrain.val_every", 0, r"--config\.metatrain\.val_every=0"),
    ("metatrain.log_every", 0, r"--config\.metatrain\.log_every=0"),
    ("test.episodes", 0, r"--config\.test\.episodes=0 .* integer >= 1"),
    ("pretrain.lr", math.inf, r"--config\.pretrain\.lr=inf"),
    ("metatrain.source", "cache", r"source='cache' .* one of 'auto', 'images', 'features'"),
    ("eval_checkpoint", "first", r"eval_checkpoint='first'"),
    ("settings", "1way_1shot", r"needs at least 2 ways"),
])
def test_each_bad_value_is_refused_before_the_work_dir_stores_anything(tmp_path, field, value,
                                                                       message):
    config = get_config()
    node = config
    *parents, leaf = field.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError, match=message):
        check_config(config)
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "config.json").exists()  # the work dir stays resumable


def test_the_published_and_demo_configs_pass():
    from experiments.configs import cifar_fs, features, miniimagenet, omniglot

    for config in (omniglot.get_config(), omniglot.get_config("any_way"),
                   miniimagenet.get_config("1shot"),
                   cifar_fs.get_config("5shot"), features.get_config()):
        check_config(config)


def test_an_unknown_field_names_the_closest_ones():
    config = get_config()
    assert unknown_field_message("metatrain.lrr", config) == (
        "--config.metatrain.lrr is not a config field (did you mean --config.metatrain.lr?); "
        "--print_config lists every field.")
    assert "did you mean --config.metatrain?" in unknown_field_message("metatrian.lr", config)
    assert "did you mean" not in unknown_field_message("zzz", config)
