"""User-facing errors: each carries a one-line message and the exit code the CLI returns."""

from __future__ import annotations


class SlmError(Exception):
    """Base class for errors shown to the user as one line, never as a traceback."""

    exit_code: int = 1


class DataError(SlmError):
    """The input data cannot be used (missing file/column, bad encoding, too few examples...)."""

    exit_code = 2


class ConfigError(SlmError):
    """An option or argument is invalid."""

    exit_code = 2


class ModelError(SlmError):
    """A base model cannot be found, verified or loaded."""

    exit_code = 3


class BundleError(SlmError):
    """A bundle is missing, incomplete or has been tampered with."""

    exit_code = 4
