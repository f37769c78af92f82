"""What the command-line scripts share: log verbosity, and user errors as one sentence.

A `DataError` or `ConfigError` (bad data, a bad flag or config field, an unusable work dir)
ends the script with its one-sentence message and exit status 2; any other exception is a bug
and shows its traceback. Every file or folder a script writes where a flag says is checked
before any work and written by `metaunlab.outputs`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from absl import flags, logging

from metaunlab.data.errors import DataError
from metaunlab.errors import ConfigError

USER_ERROR_EXIT_STATUS = 2


def set_default_verbosity() -> None:
    """WARNING unless `--verbosity` was given: orbax logs every checkpoint step at INFO, and
    the progress bars already say what happens."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def fail(message: str) -> None:
    """End the script with `message` and the user-error exit status."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_STATUS)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one sentence and exit status 2."""
    try:
        yield
    except (DataError, ConfigError) as error:
        fail(str(error))

