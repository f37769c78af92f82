"""Every config field checked for type and range, in one place, before anything is stored.

`check_config(config)` raises one `ConfigError` naming the flag (`--config.<field>=<value>`),
what it must be and, for an unknown field, the closest known names. The pipeline calls it
before it writes the work dir's config, so a bad value never leaves a work dir that cannot be
resumed.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from metaunlab.errors import ConfigError

Check = Callable[[Any], bool]


def _integer(minimum: int, maximum: int | None = None) -> tuple[Check, str]:
    def check(v):
        return (isinstance(v, int) and not isinstance(v, bool) and v >= minimum
                and (maximum is None or v <= maximum))

    upper = "" if maximum is None else f" and <= {maximum}"
    return check, f"an integer >= {minimum}{upper}"


# The synthetic steps are unrolled into the compiled step: the reference uses 3, its paper
# up to 5, and far more only makes compilation hang.
MAX_SIB_STEPS = 100


def _real(minimum: float, *, strict: bool, maximum: float | None = None) -> tuple[Check, str]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if v < minimum or (strict and v == minimum):
            return False
        return maximum is None or v < maximum

    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    upper = f" and < {maximum:g}" if maximum is not None else ""
    return check, f"a finite number {bound}{upper}"


def _one_of(*choices: str) -> tuple[Check, str]:
    return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


def _flag() -> tuple[Check, str]:
    return (lambda v: isinstance(v, bool)), "True or False"


def _integers(minimum: int) -> tuple[Check, str]:
    return (lambda v: isinstance(v, (list, tuple)) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= minimum for x in v),
        f"a list of integers >= {minimum}")


def _count_list() -> tuple[Check, str]:
    def check(v):
        if not isinstance(v, str):
            return False
        parts = [p.strip() for p in v.split(",")] if v.strip() else []
        return all(p.isdigit() and int(p) >= 1 for p in parts)

    return check, "empty or positive integers separated by commas, e.g. '1,5,15'"


def _query_distribution() -> tuple[Check, str]:
    def check(v):
        from metaunlab.data.errors import DataError
        from metaunlab.data.query_sets import QueryDistribution
        if not isinstance(v, str) or not v.strip():
            return False
        try:
            for part in v.split(","):
                QueryDistribution.parse(part)
        except DataError:
            return False
        return True

    return check, ("'balanced', 'dirichlet:ALPHA' with ALPHA > 0, or several separated by "
                   "commas, e.g. 'balanced,dirichlet:2'")


def _scale_list() -> tuple[Check, str]:
    def check(v):
        from metaunlab.errors import ConfigError
        from metaunlab.research.step_tuning import parse_candidates
        try:
            parse_candidates(v)
        except (ConfigError, AttributeError):
            return False
        return isinstance(v, str)

    return check, "empty or positive numbers separated by commas, e.g. '0.25,0.5,1,2,4'"


def parse_counts(text: str) -> list[int]:
    """"1,5,15" -> [1, 5, 15] (sorted, distinct); "" -> []."""
    return sorted({int(p) for p in text.split(",") if p.strip()})


COUNT, NON_NEGATIVE = _integer(1), _integer(0)
RATE = _real(0.0, strict=True)
MOMENTUM = _real(0.0, strict=False, maximum=1.0)
DECAY = _real(0.0, strict=False)
DTYPE = _one_of("float32", "bfloat16")

# field path -> (check, what it must be); fields not listed (data loader options, names)
# are checked where they are read.
RULES: dict[str, tuple[Check, str]] = {
    "seed": NON_NEGATIVE, "val_seed": NON_NEGATIVE, "val_episodes": COUNT, "log_every": COUNT,
    "eval_checkpoint": _one_of("last", "best"),
    "pretrain.seed": NON_NEGATIVE, "pretrain.epochs": NON_NEGATIVE,
    "pretrain.batch_size": COUNT, "pretrain.lr": RATE, "pretrain.warmup_steps": NON_NEGATIVE,
    "pretrain.decay_epochs": _integers(0), "pretrain.decay_factor": RATE,
    "pretrain.momentum": MOMENTUM, "pretrain.weight_decay": DECAY,
    "pretrain.val_every_epochs": COUNT, "pretrain.val_n_way": _integer(2),
    "pretrain.val_n_shot": COUNT, "pretrain.val_n_query": COUNT, "pretrain.log_every": COUNT,
    "pretrain.checkpoint_every": NON_NEGATIVE, "pretrain.backbone_remat": _flag(),
    "pretrain.backbone_dtype": DTYPE,
    "metatrain.seed": NON_NEGATIVE, "metatrain.iterations": COUNT,
    "metatrain.batch_size": COUNT, "metatrain.n_query": COUNT,
    "metatrain.sib_steps": _integer(0, MAX_SIB_STEPS), "metatrain.inner_lr": RATE,
    "metatrain.lr": RATE,
    "metatrain.momentum": MOMENTUM, "metatrain.weight_decay": DECAY,
    "metatrain.grad_coeff": DECAY, "metatrain.val_every": COUNT, "metatrain.log_every": COUNT,
    "metatrain.source": _one_of("auto", "images", "features"),
    "metatrain.feature_views": NON_NEGATIVE, "metatrain.checkpoint_every": NON_NEGATIVE,
    "metatrain.remat": _flag(), "metatrain.backbone_dtype": DTYPE,
    "metatrain.steps_per_call": NON_NEGATIVE,
    "metatrain.query_counts": _count_list(), "metatrain.within_alphabet": _flag(),
    "metatrain.init_scale": RATE, "metatrain.center_features": _flag(),
    "metatrain.balanced_readout": _flag(), "metatrain.power_transform": _flag(),
    "metatrain.decay_steps": _integers(1), "metatrain.query_distribution": _query_distribution(),
    "test.episodes": COUNT, "test.n_query": COUNT, "test.seed": NON_NEGATIVE,
    "test.extra_query_counts": _count_list(), "test.within_alphabet": _flag(),
    "test.step_scales": _scale_list(),
    "data.alphabet_fold": _integer(-1),
}


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
    """Raise a ConfigError for the first field of `config` out of its range (RULES), or for
    a `settings` string that is not a list of `<N>way_<K>shot`."""
    if "settings" in config:
        parse_settings(config["settings"])
    for path, (check, what) in RULES.items():
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
