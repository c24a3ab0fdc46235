"""The service's settings, validated once: every limit the server enforces lives here."""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from slm.errors import ConfigError

LONG_TEXT_POLICIES = ("truncate", "reject")
# Model names appear in URLs and metric labels: keep them to a safe alphabet.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_SUPPORT_DB = Path("slm-support.sqlite")  # the support assistants' conversation log, in the current folder
DEFAULT_FEEDBACK_DB = "slm-feedback.sqlite"  # feedback (slm.serving.feedback): made on the first one


def default_workers() -> int:
    """One batch in flight per core, plus one (each ONNX run uses one thread).

    The extra batch computes while another holds the GIL for its Python steps (tokens to arrays,
    decoding). Measured on 2 cores, 32 clients, int8 MiniLM: 3 workers 627-719 requests/s, 2 workers
    581-663, one 2-thread worker about 400.
    """
    return max(1, min((os.cpu_count() or 1) + 1, 8))


@dataclass(frozen=True)
class DriftSettings:
    """When the drift monitor (:mod:`slm.serving.drift`) raises an alert; ``slm serve --drift-*``.

    Every test is one-sided at ``alpha`` and also needs a change of practical size, so sampling noise of a
    ``window``-text window (77 labels, 500 texts: a PSI of about 0.16 with no drift at all) raises nothing.
    """

    enabled: bool = True
    window: int = 500  # recent predicted texts per model
    every: int = 25  # texts between two checks of the alert rule
    warmup: int = 1_000  # texts taken as the reference when the bundle records none
    psi: float | None = None  # None: 0.25 plus what sampling noise explains at alpha (labels and window)
    low_confidence: float = 0.5  # a top-label probability under this is a low-confidence answer
    low_confidence_rise: float = 0.10  # alert when the low-confidence rate is this far over the reference's
    confidence_drop: float = 0.10  # alert when the mean confidence is this far under the reference's
    feedback_error: float = 0.30  # alert when the feedback error rate is over this
    feedback_window: int = 200  # recent feedback records per model
    min_feedback: int = 30  # fewest feedback records that can alert
    alpha: float = 1e-4  # one-sided level of every test (checked every `every` texts on overlapping windows)
    webhook: str | None = None  # POST each alert here (at least once while the server runs)

    def validated(self) -> DriftSettings:
        for name in ("window", "every", "warmup", "feedback_window", "min_feedback"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--drift-{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        for name in ("low_confidence", "low_confidence_rise", "confidence_drop", "feedback_error"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(
                    f"--drift-{name.replace('_', '-')} must be between 0 and 1 (got {getattr(self, name)})"
                )
        if self.psi is not None and not self.psi > 0:
            raise ConfigError(f"--drift-psi must be positive (got {self.psi})")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"the drift tests' alpha must be between 0 and 0.5 (got {self.alpha})")
        if self.webhook is not None and not re.match(r"^https?://[^\s/]+", self.webhook):
            raise ConfigError(f"--drift-webhook must be an http:// or https:// URL (got {self.webhook})")
        return self


@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``slm serve``; :meth:`validated` refuses impossible values with one clear line."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 0.0
    max_queue: int = 128
    workers: int = field(default_factory=default_workers)
    threads: int = 1
    # Niceness of the batch threads (0: as the event loop). The event loop parses, admits and answers every
    # request; when the batches hold both cores it falls behind and even a 503 waits. Measured in scratch runs of
    # bench/serving_client.py's open loop at 4x overload on 2 cores: 503 p50 56-72 ms and p99 0.3-1.3 s at 0;
    # 0.8-0.9 ms and 47-99 ms at 10, with more requests answered 200 (511-550 against 460-489 a second). The price:
    # on a machine busy with other work, the batches also yield to that work.
    batch_nice: int = 10
    backend: str | None = None  # the transformer's engine: "onnx", "openvino", "torch"; None: each bundle's default
    max_body_bytes: int = 1_048_576
    max_texts: int = 64
    max_chars: int = 2_000
    long_texts: str = "truncate"
    top_k: int = 5
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    watch: bool = False
    watch_interval: float = 1.0
    graceful_timeout: float = 30.0
    max_connections: int = 2048
    # A request head must arrive whole within header_timeout seconds of the connection (or of its first byte on
    # a kept-alive one) and hold at most max_header_bytes; its body within body_timeout seconds of the head.
    # Uvicorn has neither timeout (https://github.com/Kludex/uvicorn/issues/157): slm.serving.protocol adds them.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 16_384  # h11's and Node's default; gunicorn allows 8,190 per header line
    insecure: bool = False  # listen on a non-loopback address without API keys
    access_log: bool = True
    support_db: Path = DEFAULT_SUPPORT_DB
    support_retention: float = 90 * 86400.0  # turns older than this are deleted at start and hourly
    # Personal data (e-mail addresses, phone, card, IBAN and ID numbers, ...) in every text the server stores
    # (support log, feedback) is replaced by placeholders before it is written (slm.privacy).
    redact_stored: bool = True
    # Feedback (POST /v1/models/{name}/feedback): where it is stored (a database URL or a SQLite file), how long
    # a stored row lives, and how long and how much of recent requests' texts stay in memory for recall by id.
    feedback: bool = True
    feedback_db: str = DEFAULT_FEEDBACK_DB
    feedback_retention: float = 90 * 86400.0
    feedback_recall_seconds: float = 3600.0
    feedback_recall_mb: float = 16.0
    drift: DriftSettings = field(default_factory=DriftSettings)

    def validated(self) -> ServeConfig:
        positive = {
            "max_batch": self.max_batch, "max_queue": self.max_queue, "workers": self.workers,
            "threads": self.threads, "max_body_bytes": self.max_body_bytes, "max_texts": self.max_texts,
            "max_chars": self.max_chars, "top_k": self.top_k, "max_connections": self.max_connections,
            "max_header_bytes": self.max_header_bytes,
        }  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535 (got {self.port})")
        if not 0 <= self.batch_nice <= 19:
            raise ConfigError(f"--batch-nice must be between 0 and 19 (got {self.batch_nice})")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms cannot be negative (got {self.max_wait_ms})")
        if self.watch_interval <= 0:
            raise ConfigError(f"--watch-interval must be positive (got {self.watch_interval})")
        for name, seconds in (("header_timeout", self.header_timeout), ("body_timeout", self.body_timeout)):
            if not seconds > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of seconds (got {seconds})")
        if not self.feedback_retention > 0 or not self.feedback_recall_seconds > 0:
            raise ConfigError("--feedback-retention and --feedback-recall must be positive durations")
        if not self.support_retention > 0:
            raise ConfigError("--support-retention must be a positive duration")
        if not self.feedback_recall_mb >= 0:
            raise ConfigError(f"--feedback-recall-mb cannot be negative (got {self.feedback_recall_mb})")
        if self.graceful_timeout < 0:
            raise ConfigError(f"--graceful-timeout cannot be negative (got {self.graceful_timeout})")
        if self.long_texts not in LONG_TEXT_POLICIES:
            raise ConfigError(f"--long-texts must be one of {', '.join(LONG_TEXT_POLICIES)} (got {self.long_texts})")
        if self.max_queue < self.max_texts:
            raise ConfigError(
                f"--max-queue ({self.max_queue}) must hold at least one full request (--max-texts {self.max_texts})"
            )
        self.drift.validated()
        return self

    def key_is_valid(self, candidate: str | None) -> bool:
        """Constant-time check of ``candidate`` against every configured key (all are compared, always)."""
        given = (candidate or "").encode("utf-8")
        found = False
        for key in self.api_keys:
            found |= hmac.compare_digest(given, key.encode("utf-8"))
        return found and bool(given)


def check_exposure(config: ServeConfig) -> None:
    """Refuse to listen beyond this machine without API keys, unless ``--insecure`` says so.

    Anyone who reaches such a port could use (and load) every served model; a loopback address, or a
    reverse proxy in front that authenticates, is the safe default. Resolves ``config.host`` the way
    :func:`slm.serving.server.bind` does, before anything is bound.
    """
    if config.api_keys or config.insecure or is_loopback(config.host):
        return
    raise ConfigError(
        f"--host {config.host} is reachable from other machines and no --api-key-file is given: add one, "
        "or pass --insecure to serve without keys (e.g. behind a proxy that authenticates)"
    )


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback one (an unresolvable host is left to bind)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # binding it fails with its own clear error
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}  # fe80::1%eth0: no scope
    return all(_loopback(address) for address in addresses)


def _loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def read_api_keys(path: Path) -> tuple[str, ...]:
    """API keys from a file: one per line, blank lines and ``#`` comments ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"API key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc}") from None
    keys = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ConfigError(f"API key file {path} holds no key (one key per line)")
    short = [i for i, key in enumerate(keys, 1) if len(key) < 16]
    if short:
        raise ConfigError(f"API key file {path}: key {short[0]} is shorter than 16 characters; use long random keys")
    return keys


def parse_model_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """``[NAME=]PATH`` arguments as ``(name, path)``; the name defaults to the directory's name."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if sep and rest and "/" not in name:  # NAME=PATH (a path with '=' in a folder name stays a path)
            path = Path(rest)
        else:
            path = Path(spec)
            name = path.resolve().name if path.name in ("", ".", "..") else path.name
        if not NAME_PATTERN.match(name):
            raise ConfigError(
                f"model name '{name}' (from {spec}) must be letters, digits, '.', '_' or '-': serve it as NAME={spec}"
            )
        if any(name == seen for seen, _ in out):
            raise ConfigError(f"two bundles are named '{name}': give one another name with NAME=PATH")
        out.append((name, path))
    if not out:
        raise ConfigError("name at least one bundle to serve")
    return out
