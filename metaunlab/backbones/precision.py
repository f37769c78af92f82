"""Reduced-precision compute for the backbone.

bfloat16 arithmetic on float32 parameters: optimizer updates and checkpoints stay float32, a
forward pass casts the parameters and its input, and features go back to float32, so the SIB
head and the losses always run in float32. It halves the backbone's activation memory and uses
the bf16 units of TPUs and recent GPUs; on CPU it is slower, so it is off by default.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from metaunlab.errors import ConfigError

__all__ = ["DTYPES", "cast_floats", "compute_dtype"]


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str, flag: str) -> Any:
    """The dtype named by a config field (`flag` names the field in the error)."""
    if name not in DTYPES:
        raise ConfigError(f"{flag}={name!r} is not a supported dtype; use "
                         f"{' or '.join(DTYPES)}.")
    return DTYPES[name]


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Every floating-point leaf of `tree` cast to `dtype`; integer leaves untouched."""
    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)
