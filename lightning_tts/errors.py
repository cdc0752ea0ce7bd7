"""The user-facing error hierarchy.

Every error a user can cause (bad config, bad data, bad paths) is raised once, at the boundary where
it is detected, as one of these classes with the offending value in its message. The CLI prints the
message on one line and exits with ``exit_code``; anything else is a bug and keeps its traceback.
"""


class LightningTTSError(Exception):
    """Base class of errors caused by user input; printed as one line by the CLI."""

    exit_code = 1


class ConfigError(LightningTTSError):
    """An unknown key, a wrong type or a missing required value in the configuration."""

    exit_code = 2


class DataError(LightningTTSError):
    """A corpus, manifest, split or cache that cannot be used."""


class AudioError(LightningTTSError):
    """An audio file that cannot be read, or holds no usable signal."""


class TextError(LightningTTSError):
    """Text that yields no symbols the model knows."""
