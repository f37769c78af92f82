"""Checks of config values: each a `(check, what it must be)` pair, `check(value) -> bool`.

`config_schema` gives each field its check; `config_checks.check_config` applies them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def integer(minimum: int, maximum: int | None = None) -> tuple[Check, str]:
    def check(v):
        return (isinstance(v, int) and not isinstance(v, bool) and v >= minimum
                and (maximum is None or v <= maximum))

    upper = "" if maximum is None else f" and <= {maximum}"
    return check, f"an integer >= {minimum}{upper}"


# The synthetic steps are unrolled into the compiled step: the reference uses 3, its paper
# up to 5, and far more only makes compilation hang.
MAX_SIB_STEPS = 100


def real(minimum: float, *, strict: bool, maximum: float | None = None) -> tuple[Check, str]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if v < minimum or (strict and v == minimum):
            return False
        return maximum is None or v < maximum

    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    upper = f" and < {maximum:g}" if maximum is not None else ""
    return check, f"a finite number {bound}{upper}"


def one_of(*choices: str) -> tuple[Check, str]:
    return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


def flag() -> tuple[Check, str]:
    return (lambda v: isinstance(v, bool)), "True or False"


def integers(minimum: int) -> tuple[Check, str]:
    return (lambda v: isinstance(v, (list, tuple)) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= minimum for x in v),
        f"a list of integers >= {minimum}")


def count_list() -> tuple[Check, str]:
    def check(v):
        if not isinstance(v, str):
            return False
        parts = [p.strip() for p in v.split(",")] if v.strip() else []
        return all(p.isdigit() and int(p) >= 1 for p in parts)

    return check, "empty or positive integers separated by commas, e.g. '1,5,15'"


def query_distribution() -> tuple[Check, str]:
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


def scale_list() -> tuple[Check, str]:
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


COUNT, NON_NEGATIVE = integer(1), integer(0)
RATE = real(0.0, strict=True)
MOMENTUM = real(0.0, strict=False, maximum=1.0)
DECAY = real(0.0, strict=False)
DTYPE = one_of("float32", "bfloat16")
