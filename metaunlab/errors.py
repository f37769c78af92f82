"""Exceptions for problems a user can fix: a bad config field, flag or work directory
(`ConfigError`, here) and bad data (`metaunlab.data.errors.DataError`).

Each message is one sentence naming the file, folder, field or flag and saying what to do;
the experiment scripts print it alone, with exit status 2. Anything else is a bug and ends
with its traceback. Both subclass ValueError, so generic `except ValueError` handlers still
catch them.

A message quotes paths and names a user chose, which may hold control characters (an
escape sequence recolours or clears a terminal, a NUL cuts a line short). `shown` escapes
them, and both exception types pass their message through it, so no message prints them.
"""

from __future__ import annotations

import os
from typing import Any


def shown(text: Any) -> str:
    """`text` (a str, path or bytes path) with each non-printable character escaped as
    Python writes it in a string literal (`\\x1b`, `\\n`, `\\u202e`); printable characters,
    non-ASCII letters among them, are kept as they are.

    Args:
      text: a message, a path or any object (its `str`).

    Returns:
      The text, safe to print to a terminal.
    """
    if isinstance(text, (bytes, os.PathLike)):
        text = os.fsdecode(text)
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class UserError(ValueError):
    """A problem a user can fix (`ConfigError`, `DataError`): its message has its
    non-printable characters escaped (`shown`)."""

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(shown(message) if isinstance(message, str) else message, *args)


class ConfigError(UserError):
    """A config field, flag or work directory is wrong in a way the user can fix."""


class NonFiniteError(ConfigError):
    """A loss, a set of parameters, features or logits became NaN or infinite: a learning
    rate too high for the data, or corrupt inputs."""
