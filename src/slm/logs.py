"""slm's messages: standard ``logging`` under the ``slm`` logger, rendered for the terminal by the CLI.

The library never writes to stdout or stderr itself. Modules log with ``logging.getLogger(__name__)``;
``slm/__init__.py`` gives the ``slm`` logger a ``NullHandler``, so a program that imports slm and
configures no logging sees nothing (not even warnings through logging's last-resort handler), and one
that does configure logging gets slm's records like any other library's. The root logger is never touched.

The CLI calls :func:`attach_cli_handler` once at start-up: each record is then one line on the shared
Rich console (stderr), exactly as the commands always printed their notes and progress lines. A record's
leading label ("note: ...", "warning: ...") is coloured by level, or by the ``extra`` of its call:
``HEADING`` (bold, e.g. "data: ...") or ``DONE`` (green, e.g. "bundle written: ...").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

LOGGER = "slm"
STYLE_ATTRIBUTE = "cli_style"

# ``extra=`` for records whose leading label (the text before the first ": ") the CLI emphasises.
HEADING = {STYLE_ATTRIBUTE: "bold"}
DONE = {STYLE_ATTRIBUTE: "green"}

_LEVEL_STYLES = ((logging.ERROR, "red"), (logging.WARNING, "yellow"))


class CliHandler(logging.Handler):
    """One line per record on :data:`slm.console.console` (stderr): the message alone, no time or level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from slm.console import console

            message = self.format(record)
            # render_str without markup: a path or text holding "[...]" prints as it is, numbers still highlighted.
            text = console.render_str(message, markup=False)
            style = getattr(record, STYLE_ATTRIBUTE, None) or _level_style(record.levelno)
            label_end = message.find(": ")
            if style and label_end > 0:
                text.stylize(style, 0, label_end)
            console.print(text)
        except Exception:  # logging's contract: a failing handler reports itself, it never raises
            self.handleError(record)


def _level_style(level: int) -> str | None:
    return next((style for floor, style in _LEVEL_STYLES if level >= floor), None)


def attach_cli_handler(level: int = logging.INFO) -> logging.Handler:
    """Show slm's log records at ``level`` and above on the terminal (the CLI's start-up; idempotent).

    Sets the level of the ``slm`` logger only; returns the handler (already attached: the same one).
    """
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    handler = cli_handler()
    if handler is None:
        handler = CliHandler()
        logger.addHandler(handler)
    return handler


def progress_lines(logger: logging.Logger, enabled: bool) -> Callable[..., None]:
    """``logger.info`` when the caller asked for progress (``show_progress``), else a no-op: for the lines that
    narrate a long step alongside its progress bar, and like it are left out when progress is not wanted."""
    return logger.info if enabled else _discard


def _discard(*args: Any, **kwargs: Any) -> None:
    """Log nothing."""


def cli_handler() -> logging.Handler | None:
    """The handler :func:`attach_cli_handler` attached, or None."""
    return next((h for h in logging.getLogger(LOGGER).handlers if isinstance(h, CliHandler)), None)


def cli_level() -> int | None:
    """The level the CLI shows messages at, or None without the CLI handler: what a spawned worker process
    (which starts with no handlers) passes to :func:`attach_cli_handler` to talk like its parent."""
    return logging.getLogger(LOGGER).getEffectiveLevel() if cli_handler() is not None else None


def detach_cli_handler() -> None:
    """Undo :func:`attach_cli_handler`: the handler removed and the ``slm`` logger's level reset."""
    logger = logging.getLogger(LOGGER)
    handler = cli_handler()
    if handler is not None:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars (imports transformers: call it only when training).

    slm reports what matters itself; transformers' own chatter (weight-initialisation notices, download bars)
    would otherwise reach stderr whatever the caller asked for.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
