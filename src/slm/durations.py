"""Durations written by people: ``90s``, ``15m``, ``1.5h``, ``1d``, or a bare number in the caller's unit.

One parser for every option and config field that takes a duration. What a bare number means differs
by field and is part of each one's documented interface (``slm tune --budget 3`` is three minutes, a
monitor ``window: 3600`` is an hour in seconds), so the caller names that unit instead of this module
guessing it.
"""

from __future__ import annotations

import math
import re

from slm.errors import ConfigError

# Seconds per unit; the keys are what may follow the number (case-insensitive).
UNITS: dict[str, float] = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_NAMES = {"s": "seconds", "sec": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_duration(value: str | float | int, *, bare_unit: str, what: str = "duration") -> float:
    """Seconds from ``"90s"``, ``"15m"``, ``"1.5h"``, ``"1d"``, or a bare number (``"3"``, ``3``) in ``bare_unit``.

    ``bare_unit`` is one of :data:`UNITS`; ``what`` names the value in the error message ("budget",
    "window"). Raises :class:`~slm.errors.ConfigError` (one line) for anything unreadable, and for a
    duration that is zero, negative or not finite.
    """
    if bare_unit not in UNITS:
        raise ValueError(f"bare_unit must be one of {', '.join(UNITS)}, not {bare_unit!r}")
    if isinstance(value, bool):  # a YAML "yes" is not a duration
        raise ConfigError(f"cannot read {what} {value!r}: {_hint(bare_unit)}")
    if isinstance(value, int | float):
        seconds = float(value) * UNITS[bare_unit]
    else:
        match = _DURATION.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or (unit and unit not in UNITS):
            raise ConfigError(f"cannot read {what} {value!r}: {_hint(bare_unit)}")
        seconds = float(match.group(1)) * UNITS[unit or bare_unit]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return seconds


def _hint(bare_unit: str) -> str:
    return f"use e.g. 90s, 15m, 1.5h or 1d (a bare number is {_UNIT_NAMES[bare_unit]})"


def describe_duration(seconds: float) -> str:
    """``seconds`` in the largest whole unit that fits, as a person writes it: 90d, 12h, 15m, 30s."""
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{suffix}"
    return f"{seconds:g}s"
