"""Which config changes a work dir accepts on resumption."""

import json

import pytest

from experiments.configs.omniglot import get_config
from metaunlab.train.workdir import save_config


def test_schedule_length_data_location_and_new_fields_may_change_on_resume(tmp_path):
    config = get_config()
    save_config(str(tmp_path), config)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["metatrain"]["checkpoint_every"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(stored))
    config.metatrain.iterations += 1000
    config.data.root = "/elsewhere/omniglot"
    config.test.episodes = 10
    save_config(str(tmp_path), config)  # accepted


@pytest.mark.parametrize("field,value", [("metatrain.lr", 0.5), ("metatrain.n_query", 3),
                                         ("backbone", "resnet12"), ("data.image_size", 32)])
def test_what_is_trained_may_not_change_on_resume(tmp_path, field, value):
    config = get_config()
    save_config(str(tmp_path), config)
    *parents, leaf = field.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError, match=f"different config \\({field} changed\\)"):
        save_config(str(tmp_path), config)


def test_a_workdir_of_protocol_runs_names_them(tmp_path):
    from metaunlab.errors import ConfigError
    from metaunlab.train.workdir import load_config

    for protocol in ("character", "within_alphabet"):
        (tmp_path / protocol).mkdir()
        (tmp_path / protocol / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"holds the runs .*character, .*within_alphabet; pass"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("flag", ["query_scaled_step", "learned_step_size"])
def test_a_stored_removed_flag_loads_when_off_and_is_refused_when_on(tmp_path, flag):
    """metatrain.query_scaled_step (and the like) is gone: a run stored with it off (its
    default) loads and resumes; one trained with it on is refused, naming the field."""
    from metaunlab.errors import ConfigError
    from metaunlab.train.workdir import load_config

    config = get_config()
    save_config(str(tmp_path), config)
    stored = json.loads((tmp_path / "config.json").read_text())
    stored["metatrain"][flag] = False  # as written while the option existed
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert flag not in load_config(str(tmp_path)).metatrain
    save_config(str(tmp_path), config)  # resumes
    stored["metatrain"][flag] = True
    (tmp_path / "config.json").write_text(json.dumps(stored))
    for read in (load_config, lambda w: save_config(w, config)):
        with pytest.raises(ConfigError, match=rf"metatrain\.{flag}=True"):
            read(str(tmp_path))
