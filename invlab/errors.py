"""Errors a user can fix. The CLI prints them as one sentence, without a traceback."""


class InvlabError(Exception):
    """Base class for errors caused by the user's input or configuration."""


class ShapeError(InvlabError, ValueError):
    """An image or measurement has the wrong shape, channel count or dtype."""


class CheckpointError(InvlabError, FileNotFoundError):
    """A checkpoint is missing, unreadable, or does not fit the data."""


class ConfigError(InvlabError, ValueError):
    """A configuration value is invalid or inconsistent."""


class RunDirError(ConfigError):
    """The run directory cannot take this run (it holds another experiment's results, or cannot be
    written); nothing, not even a failed status, is written into it."""
