"""slm.durations: the one parser for '90s', '15m', '1.5h', '1d' and bare numbers in the caller's unit."""

from __future__ import annotations

import math

import pytest

from slm.durations import parse_duration
from slm.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("90 sec", 90), ("15m", 900), ("15min", 900), ("1.5h", 5400), ("1d", 86400), (" 2H ", 7200),
     (".5m", 30)],
)  # fmt: skip
def test_explicit_units_mean_the_same_for_every_caller(text: str, seconds: float) -> None:
    assert parse_duration(text, bare_unit="s") == seconds
    assert parse_duration(text, bare_unit="m") == seconds


def test_a_bare_number_takes_the_callers_unit() -> None:
    assert parse_duration("3", bare_unit="m") == 180  # slm tune --budget 3: minutes
    assert parse_duration("3", bare_unit="s") == 3  # monitor window: "3" is seconds
    assert parse_duration(3600, bare_unit="s") == 3600  # monitor window: 3600 (YAML number)
    assert parse_duration(2.5, bare_unit="m") == 150


@pytest.mark.parametrize("bad", ["soon", "m", "-5m", "5 x", "1h30m", "nanm", "1e3", "", True])
def test_unreadable_durations_are_one_line_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(bad, bare_unit="m", what="budget")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and message.startswith("cannot read budget") and "a bare number is minutes" in message


@pytest.mark.parametrize("bad", ["0", "0m", 0, -3, math.inf, math.nan])
def test_zero_negative_and_infinite_durations_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="window must be positive"):
        parse_duration(bad, bare_unit="s", what="window")  # type: ignore[arg-type]


def test_the_bare_unit_must_be_a_known_unit() -> None:
    with pytest.raises(ValueError, match="bare_unit"):
        parse_duration("3", bare_unit="hours")


def test_tune_budget_and_monitor_window_keep_their_documented_meaning() -> None:
    from slm.apps.monitor.config import MonitorConfig
    from slm.training.tune import parse_budget

    assert parse_budget("3") == 180 and parse_budget("90s") == 90
    window = {"sentiment": {"bundle": "b"}}
    assert MonitorConfig(**window, window="90").window_seconds == 90
    assert MonitorConfig(**window, window=3600).window_seconds == 3600
    assert MonitorConfig(**window).window_seconds == 3600  # the default "1h"
