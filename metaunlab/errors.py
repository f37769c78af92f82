"""Exceptions for problems a user can fix: a bad config field, flag or work directory
(`ConfigError`, here) and bad data (`metaunlab.data.errors.DataError`).

Each message is one sentence naming the file, folder, field or flag and saying what to do;
the experiment scripts print it alone, with exit status 2. Anything else is a bug and ends
with its traceback. Both subclass ValueError, so generic `except ValueError` handlers still
catch them.
"""


class ConfigError(ValueError):
    """A config field, flag or work directory is wrong in a way the user can fix."""


class NonFiniteError(ConfigError):
    """A loss, a set of parameters, features or logits became NaN or infinite: a learning
    rate too high for the data, or corrupt inputs."""
