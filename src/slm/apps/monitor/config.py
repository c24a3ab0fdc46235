"""``monitor.yaml``: what the monitor reads, classifies, stores, and when it alerts.

Example (every field but ``sentiment.bundle`` has a default; relative paths are relative to
the config file)::

    sentiment:
      bundle: runs/fin-sentiment-int8
      negative: ["0"]          # labels counted as negative (default: a label named negative/bearish)
      positive: ["1"]
    topic:
      bundle: runs/fin-topics-int8   # optional
    lexicon: entities.txt            # optional: the industry dictionary of entities
    storage: sqlite:///monitor.db    # or postgresql+psycopg://user:password@host/db
    input: news.jsonl                # or "-" for stdin
    follow: false                    # keep reading a growing file
    batch_size: 64
    window: 1h
    redact: true                     # personal data in stored texts becomes <EMAIL>, <PHONE>, ...
    retention: 90d                   # stored items older than this are deleted
    alerts:
      method: robust_z               # or ewma
      threshold: 4.0
      min_volume: 5
      cooldown: 3                    # windows
      webhook: http://hooks.example/alerts
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slm.apps.monitor.items import DEFAULT_MAX_TEXT_CHARS
from slm.durations import parse_duration
from slm.errors import ConfigError

NEGATIVE_NAMES = ("negative", "neg", "bearish")
POSITIVE_NAMES = ("positive", "pos", "bullish")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SentimentConfig(_Strict):
    bundle: Path
    negative: list[str] | None = None
    positive: list[str] | None = None


class TopicConfig(_Strict):
    bundle: Path


class AlertConfig(_Strict):
    method: Literal["robust_z", "ewma"] = "robust_z"
    threshold: float = Field(4.0, gt=0, description="Score (z) a window's negative count must reach.")
    min_volume: int = Field(5, ge=1, description="Fewest negative items in a window that can alert.")
    min_ratio: float = Field(2.0, ge=1.0, description="Negative count must be at least this times the baseline.")
    history: int = Field(24, ge=3, description="Windows of baseline before the one scored.")
    min_history: int = Field(6, ge=2, description="Windows a series needs seen before it can alert.")
    cooldown: int = Field(3, ge=0, description="Windows after an alert in which the same series stays quiet.")
    ewma_alpha: float = Field(0.2, gt=0, le=1)
    webhook: str | None = None
    retries: int = Field(4, ge=0, description="Webhook attempts after the first one.")
    timeout_seconds: float = Field(5.0, gt=0)
    backoff_seconds: float = Field(0.5, ge=0)


class MonitorConfig(_Strict):
    sentiment: SentimentConfig
    topic: TopicConfig | None = None
    lexicon: Path | None = None
    storage: str = "sqlite:///monitor.db"
    input: str | None = None
    follow: bool = False
    poll_seconds: float = Field(0.5, gt=0)
    batch_size: int = Field(64, ge=1, le=4096)
    max_wait_seconds: float = Field(1.0, gt=0, description="A partial batch is processed after this long.")
    max_text_chars: int = Field(DEFAULT_MAX_TEXT_CHARS, ge=1)
    window: float | str = Field("1h", validate_default=True, description="Window length: 30s, 15m, 1h, 1d.")
    lateness: int = Field(0, ge=0, description="Windows a window stays open after newer items arrive.")
    threads: int | None = Field(None, ge=1)
    alerts: AlertConfig = AlertConfig()
    # Personal data in the stored texts (items, rejected lines' excerpts) is replaced by placeholders (slm.privacy).
    redact: bool = True
    retention: float | str = Field("90d", validate_default=True, description="Stored items older than this go.")

    @field_validator("window")
    @classmethod
    def _window(cls, value: float | str) -> float:
        try:
            return parse_duration(value, bare_unit="s")  # window: 3600 is an hour
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: float | str) -> float:
        try:
            seconds = parse_duration(value, bare_unit="d")  # retention: 30 is a month
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if not seconds > 0:
            raise ValueError("retention must be a positive duration, e.g. 90d")
        return seconds

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(f"'{value}' is not a database URL (e.g. sqlite:///monitor.db)")
        return value

    @model_validator(mode="after")
    def _history(self) -> MonitorConfig:
        if self.alerts.min_history > self.alerts.history:
            raise ValueError("alerts.min_history cannot exceed alerts.history")
        return self

    @property
    def window_seconds(self) -> float:
        return float(self.window)

    @property
    def retention_seconds(self) -> float:
        return float(self.retention)

    def resolved(self, base: Path) -> MonitorConfig:
        """Relative paths (bundles, lexicon, input, SQLite file) made relative to ``base``."""

        def at(path: Path | None) -> Path | None:
            return None if path is None or path.is_absolute() else base / path

        data = self.model_copy(deep=True)
        data.sentiment.bundle = at(data.sentiment.bundle) or data.sentiment.bundle
        if data.topic is not None:
            data.topic.bundle = at(data.topic.bundle) or data.topic.bundle
        if data.lexicon is not None:
            data.lexicon = at(data.lexicon) or data.lexicon
        if data.input not in (None, "-") and not Path(data.input).is_absolute():
            data.input = str(base / data.input)
        prefix = "sqlite:///"
        if data.storage.startswith(prefix) and data.storage != prefix + ":memory:":
            file = Path(data.storage[len(prefix) :])
            if not file.is_absolute():
                data.storage = prefix + str(base / file)
        return data


def load_config(path: str | Path, **overrides: object) -> MonitorConfig:
    """Read and validate ``monitor.yaml``; one-line ConfigError naming the field that is wrong."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of settings")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(data, where=str(path)).resolved(path.resolve().parent)


def validate_config(data: dict, *, where: str = "config") -> MonitorConfig:
    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "config"
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {field}: {message}") from None


def polarity_labels(labels: list[str], chosen: list[str] | None, names: tuple[str, ...], what: str) -> set[str]:
    """The bundle labels counted as ``what`` (negative/positive): the configured ones, or found by name."""
    if chosen is not None:
        unknown = [label for label in chosen if label not in labels]
        if unknown:
            raise ConfigError(f"sentiment.{what}: {', '.join(unknown)} not among the bundle's labels "
                              f"({', '.join(labels)})")  # fmt: skip
        return set(chosen)
    found = {label for label in labels if label.casefold() in names}
    if not found:
        raise ConfigError(f"sentiment.{what}: say which of the bundle's labels ({', '.join(labels)}) count as {what}")
    return found
