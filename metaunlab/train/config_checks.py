"""Every config field checked for type and range before anything is stored.

`check_config(config)` raises one `ConfigError` naming the flag (`--config.<field>=<value>`),
what it must be and, for an unknown field, the closest known names. Each field's check sits
beside its default in `config_schema`. The pipeline calls it before it writes the work dir's
config, so a bad value never leaves a work dir that cannot be resumed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from metaunlab.errors import ConfigError
from metaunlab.train.checks import MAX_SIB_STEPS, parse_counts
from metaunlab.train.config_schema import rules

__all__ = ["MAX_SIB_STEPS", "check_config", "parse_counts", "parse_settings",
           "unknown_field_message"]


def _get(config: Mapping, path: str) -> Any:
    node = config
    for part in path.split("."):
        node = node[part]
    return node


_SETTING = re.compile(r"^(\d+)way_(\d+)shot$")


def parse_settings(settings: str) -> list[tuple[int, int]]:
    """"5way_1shot,20way_5shot" -> [(5, 1), (20, 5)]."""
    parsed = []
    for item in (s.strip() for s in settings.split(",") if s.strip()):
        match = _SETTING.match(item)
        if not match:
            raise ConfigError(f"--config.settings entry {item!r} is not of the form "
                             "'<N>way_<K>shot', e.g. '5way_1shot,20way_5shot'.")
        if int(match[1]) < 2 or int(match[2]) < 1:
            raise ConfigError(f"--config.settings entry {item!r} needs at least 2 ways and 1 "
                              "shot, e.g. '5way_1shot'.")
        parsed.append((int(match[1]), int(match[2])))
    if not parsed:
        raise ConfigError("--config.settings is empty; name at least one setting, e.g. 5way_1shot.")
    return parsed


def check_config(config: Mapping) -> None:
    """Raise a ConfigError for the first field of `config` out of its range (its check in
    `config_schema`), or for a `settings` string that is not a list of `<N>way_<K>shot`."""
    if "settings" in config:
        parse_settings(config["settings"])
    for path, (check, what) in rules().items():
        try:
            value = _get(config, path)
        except (KeyError, AttributeError):
            continue  # an experiment without that group (e.g. no pretraining)
        if not check(value):
            raise ConfigError(f"--config.{path}={value!r} is not allowed; it must be {what}.")


def unknown_field_message(path: str, config: Mapping) -> str:
    """The sentence for `--config.<path>` naming no field of `config`, with the close matches
    at the level where the path leaves the config."""
    node, known = config, []
    parts = path.split(".")
    for depth, part in enumerate(parts):
        keys = list(node.keys()) if hasattr(node, "keys") else []
        if part not in keys:
            known = [".".join(parts[:depth] + [k]) for k in _close(part, keys)]
            break
        node = node[part]
    near = f" (did you mean {' or '.join('--config.' + k for k in known)}?)" if known else ""
    return f"--config.{path} is not a config field{near}; --print_config lists every field."


def _close(name: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
