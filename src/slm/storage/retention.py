"""How often stored rows are checked for expiry: every store slm writes keeps rows for a retention only."""

from __future__ import annotations

PURGE_EVERY_S = 3600.0  # expired rows go within an hour of their time (and at every start)


def purge_interval(retention_s: float) -> float:
    """How often to purge rows kept ``retention_s``: hourly, more often for a retention under four hours."""
    return min(PURGE_EVERY_S, retention_s / 4)
