"""User-facing errors: each carries a one-line message and the exit code the CLI returns."""

from __future__ import annotations

import re


def one_line(message: object) -> str:
    """``message`` as text with line breaks collapsed, so it prints as a single line."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip()


class SlmError(Exception):
    """Base class for errors shown to the user as one line, never as a traceback."""

    exit_code: int = 1

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(message))


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
