"""Drift and quality signals of the served models, and the alerts they raise.

:class:`DriftMonitor` watches every answered predict request (a
:class:`~slm.serving.observers.PredictionObserver`) and every feedback record. Per model, over a sliding
window of the last ``window`` predicted texts, it compares what the model says now with its reference
(:mod:`slm.bundle.drift_reference`: the training label counts and the validation confidence, recorded in
the manifest; for a bundle without one, the first ``warmup`` texts the server predicts):

- ``psi``: the population stability index of the predicted-label distribution against the reference's
  label shares, both smoothed by half a text per label. With no drift at all it is about
  ``(labels - 1) * (1/window + 1/reference texts)`` (0.16 for 77 labels and 500 texts: sampling noise,
  more than the usual 0.1 "small shift"), so the automatic threshold is the usual 0.25 "major shift" plus
  the chi-square allowance for that noise at ``alpha``.
- ``low_confidence``: the share of texts whose top label is under ``low_confidence``, against the
  reference's share: a one-sided two-proportion test at ``alpha`` and a rise of at least
  ``low_confidence_rise``.
- ``mean_confidence``: the mean top-label probability, against the reference's: a one-sided z test at
  ``alpha`` and a drop of at least ``confidence_drop``.
- ``feedback_error``: the share of the last ``feedback_window`` feedback records that said the served
  label was wrong, once there are ``min_feedback`` of them: over ``feedback_error``.

An alert is raised once when a signal breaches (a warning log event without any text, the
``slm_drift_alerts_total`` counter, and a webhook POST with ``--drift-webhook``), and the signal is
re-armed once a whole window of texts (or of feedback records) has gone by without a breach. A new version
of a model (a hot reload) starts a new window and takes its own reference. Everything runs in the event
loop after each request: O(texts) list work per request, and the numpy arithmetic over the labels once
every ``every`` texts (about 30 microseconds for 77 labels).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

from slm.bundle.drift_reference import rate_below
from slm.bundle.schema import DriftReference
from slm.errors import ConfigError
from slm.serving import log
from slm.serving.config import DriftSettings
from slm.serving.metrics import ServiceMetrics
from slm.serving.service import ModelService

SIGNALS = ("psi", "low_confidence", "mean_confidence", "feedback_error")
SMOOTHING = 0.5  # pseudo-texts per label on both sides of the PSI (Jeffreys): an empty label is not log(0)
PSI_MAJOR_SHIFT = 0.25  # the usual rule of thumb: a PSI over 0.25 is a major shift
RECENT_ALERTS = 20
OUTBOX_CAPACITY = 100


def z_quantile(alpha: float) -> float:
    """The standard normal value a one-sided test at level ``alpha`` must exceed."""
    return NormalDist().inv_cdf(1.0 - alpha)


def chi2_quantile(alpha: float, dof: int) -> float:
    """The chi-square value with ``dof`` degrees of freedom exceeded with probability ``alpha``.

    Wilson and Hilferty's cube-root approximation (within 1% for 10+ degrees of freedom; no scipy in the
    server's install).
    """
    k = max(dof, 1)
    return float(k * (1 - 2 / (9 * k) + z_quantile(alpha) * math.sqrt(2 / (9 * k))) ** 3)


def psi(counts: np.ndarray, reference: np.ndarray) -> float:
    """The population stability index of label ``counts`` against ``reference`` counts (both smoothed)."""
    p = (counts + SMOOTHING) / (counts.sum() + SMOOTHING * counts.size)
    q = (reference + SMOOTHING) / (reference.sum() + SMOOTHING * reference.size)
    return float(np.sum((p - q) * np.log(p / q)))


def psi_threshold(labels: int, window: int, reference_texts: int, alpha: float) -> float:
    """0.25 plus the PSI sampling noise alone exceeds with probability ``alpha`` (PSI ~ chi-square / n)."""
    return PSI_MAJOR_SHIFT + chi2_quantile(alpha, labels - 1) * (1 / window + 1 / max(reference_texts, 1))


@dataclass(frozen=True)
class Reference:
    """What the window is compared with: label counts (in the served version's label order) and confidence."""

    source: str  # "manifest" or "warm-up"
    counts: np.ndarray
    mean: float
    std: float
    low_rate: float
    texts: int  # texts behind the confidence figures
    component: str | None = None

    @classmethod
    def from_manifest(
        cls, record: DriftReference | None, labels: list[str], component: str, low_threshold: float
    ) -> Reference | None:
        """The manifest's reference for the served component; None when the bundle records none for it."""
        profile = record.confidence.get(component) if record is not None else None
        if record is None or profile is None:
            return None
        counts = np.array([record.label_counts.get(label, 0) for label in labels], dtype=np.float64)
        return cls("manifest", counts, profile.mean, profile.std, rate_below(profile, low_threshold),
                   profile.texts, component)  # fmt: skip

    @classmethod
    def from_sample(cls, labels: list[int], confidences: list[float], n_labels: int, low_threshold: float) -> Reference:
        """The reference of the first texts served (a bundle without one of its own)."""
        values = np.asarray(confidences, dtype=np.float64)
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_labels).astype(np.float64)
        return cls("warm-up", counts, float(values.mean()), float(values.std()),
                   float((values < low_threshold).mean()), int(values.size))  # fmt: skip


class AlertRule:
    """Fires once when a signal breaches; re-arms once ``quiet`` clock ticks (texts, feedback records) passed
    without a breach, so a signal that stays high raises one alert, not one per request."""

    def __init__(self, quiet: int) -> None:
        self.quiet = quiet
        self.armed = True
        self.last_breach: int | None = None

    def update(self, breached: bool, clock: int) -> bool:
        """Whether to raise an alert now, given whether the signal breaches at ``clock``."""
        if breached:
            self.last_breach = clock
            fire, self.armed = self.armed, False
            return fire
        if not self.armed and self.last_breach is not None and clock - self.last_breach >= self.quiet:
            self.armed = True
        return False


class Window:
    """The last ``size`` predicted texts of one model version: label index and top probability, with running
    label counts, confidence sum and low-confidence count (O(1) per text)."""

    def __init__(self, size: int, n_labels: int, low_threshold: float) -> None:
        self.size, self.low_threshold = size, low_threshold
        self.labels: deque[int] = deque()
        self.confidences: deque[float] = deque()
        self.counts = [0] * n_labels
        self.total = 0.0
        self.low = 0

    def add(self, label: int, confidence: float) -> None:
        self.labels.append(label)
        self.confidences.append(confidence)
        self.counts[label] += 1
        self.total += confidence
        self.low += confidence < self.low_threshold
        if len(self.labels) > self.size:
            old, old_confidence = self.labels.popleft(), self.confidences.popleft()
            self.counts[old] -= 1
            self.total -= old_confidence
            self.low -= old_confidence < self.low_threshold

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def mean(self) -> float:
        return self.total / len(self.labels) if self.labels else math.nan

    @property
    def low_rate(self) -> float:
        return self.low / len(self.labels) if self.labels else math.nan


def assess(window: Window, reference: Reference, settings: DriftSettings) -> dict[str, dict[str, Any]]:
    """Each prediction signal of ``window`` against ``reference``: value, threshold, whether it breaches."""
    n, z_needed = len(window), z_quantile(settings.alpha)
    counts = np.asarray(window.counts, dtype=np.float64)
    ref_texts = int(reference.counts.sum())
    shift = psi(counts, reference.counts)
    psi_limit = settings.psi or psi_threshold(counts.size, n, ref_texts, settings.alpha)
    noise = (counts.size - 1) * (1 / n + 1 / max(ref_texts, 1))
    # low-confidence rate: a one-sided two-proportion z test (pooled), and a rise of practical size
    rate, ref_rate = window.low_rate, reference.low_rate
    pooled = (window.low + ref_rate * reference.texts) / (n + reference.texts)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / max(reference.texts, 1)))
    z_low = (rate - ref_rate) / spread
    # mean confidence: a one-sided z test with the reference's spread, and a drop of practical size
    mean = window.mean
    mean_spread = max(reference.std, 1e-6) * math.sqrt(1 / n + 1 / max(reference.texts, 1))
    z_mean = (reference.mean - mean) / mean_spread
    return {
        "psi": {"value": shift, "threshold": psi_limit, "noise": noise, "breached": shift > psi_limit},
        "low_confidence": {
            "value": rate, "reference": ref_rate, "z": z_low,
            "threshold": ref_rate + settings.low_confidence_rise,
            "breached": rate - ref_rate >= settings.low_confidence_rise and z_low > z_needed,
        },
        "mean_confidence": {
            "value": mean, "reference": reference.mean, "z": z_mean,
            "threshold": reference.mean - settings.confidence_drop,
            "breached": reference.mean - mean >= settings.confidence_drop and z_mean > z_needed,
        },
    }  # fmt: skip


def assess_feedback(outcomes: deque[bool], settings: DriftSettings) -> dict[str, Any]:
    """The feedback error rate (share of records saying the served label was wrong) and whether it breaches."""
    n = len(outcomes)
    rate = sum(1 for correct in outcomes if not correct) / n if n else math.nan
    return {"value": rate, "records": n, "threshold": settings.feedback_error,
            "breached": n >= settings.min_feedback and rate > settings.feedback_error}  # fmt: skip


@dataclass
class ModelDrift:
    """The drift state of one served version of one model."""

    version: str
    labels: list[str]
    window: Window
    reference: Reference | None
    settings: DriftSettings
    seen: int = 0  # texts predicted by this version
    checked_at: int = 0
    warm_labels: list[int] = field(default_factory=list)
    warm_confidences: list[float] = field(default_factory=list)
    feedback: deque[bool] = field(default_factory=deque)
    feedback_seen: int = 0
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, AlertRule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.feedback = deque(maxlen=self.settings.feedback_window)
        quiet = {"feedback_error": self.settings.feedback_window}
        self.rules = {signal: AlertRule(quiet.get(signal, self.settings.window)) for signal in SIGNALS}

    def add(self, label: str, confidence: float) -> bool:
        """Count one predicted text; True when the reference was just taken from the warm-up texts."""
        index = self.index.get(label)
        if index is None:
            return False
        self.window.add(index, confidence)
        self.seen += 1
        if self.reference is not None:
            return False
        self.warm_labels.append(index)
        self.warm_confidences.append(confidence)
        if len(self.warm_labels) < self.settings.warmup:
            return False
        self.reference = Reference.from_sample(self.warm_labels, self.warm_confidences, len(self.labels),
                                               self.settings.low_confidence)  # fmt: skip
        self.warm_labels, self.warm_confidences = [], []
        return True

    def due(self) -> bool:
        """Time to check the alert rule: a reference, a full window, ``every`` texts since the last check."""
        return (self.reference is not None and len(self.window) >= self.settings.window
                and self.seen - self.checked_at >= self.settings.every)  # fmt: skip


class DriftMonitor:
    """The drift signals of every classification model a :class:`ModelService` serves (register it on
    ``service.observers``), their Prometheus metrics, and the alerts they raise."""

    def __init__(self, service: ModelService, settings: DriftSettings) -> None:
        self.service, self.settings = service, settings
        self.models: dict[str, ModelDrift] = {}
        self.alerts: dict[str, deque[dict[str, Any]]] = {}
        self._lock = threading.Lock()  # feedback may be recorded from another thread
        self._count = 0
        self._metrics = _DriftMetrics(service.metrics)
        self.outbox = None
        self.sender = None
        if settings.webhook:
            try:
                from slm.storage.webhook import MemoryOutbox, WebhookSender
            except ImportError as exc:  # httpx: in the serve extra since the drift monitor
                raise ConfigError(f"--drift-webhook needs {exc.name}: pip install 'slm[serve]'") from None

            self.outbox = MemoryOutbox(OUTBOX_CAPACITY)
            self.sender = WebhookSender(
                settings.webhook, self.outbox, webhook_payload, describe=lambda alert: str(alert["id"]),
                thread_name="slm-drift-webhook",
            )  # fmt: skip
            self.sender.start()

    # ------------------------------------------------------------------ the observer protocol
    def predicted(
        self, model: str, version: str, request_id: str, texts: list[str], predictions: list[dict[str, Any]]
    ) -> None:
        with self._lock:
            state = self._state(model, version)
            if state is None:
                return
            for prediction in predictions:
                top = prediction["top_k"][0]
                if state.add(top["label"], float(prediction["score"])):
                    log.event("drift_reference", model=model, version=version, source="warm-up",
                              texts=self.settings.warmup)  # fmt: skip
            if state.due():
                self._check(model, state)

    def corrected(self, model: str, version: str | None, correct: bool | None) -> None:
        if correct is None:
            return
        with self._lock:
            state = self.models.get(model)
            if state is None or (version is not None and version != state.version):
                return  # about a version no longer served (or not served yet): not this one's error rate
            state.feedback.append(bool(correct))
            state.feedback_seen += 1
            result = assess_feedback(state.feedback, self.settings)
            state.signals["feedback_error"] = result
            if result["records"]:
                self._metrics.feedback_error.labels(model).set(result["value"])
            if state.rules["feedback_error"].update(result["breached"], state.feedback_seen):
                self._alert(model, state, "feedback_error", result)

    # ------------------------------------------------------------------ state
    def _state(self, model: str, version: str) -> ModelDrift | None:
        """The state of ``model``'s served version; a new one (a new window) when the version is new."""
        state = self.models.get(model)
        if state is not None and state.version == version:
            return state
        served = self.service.get(model)
        if served is None or served.current.version != version:
            return None  # a batch of a version replaced meanwhile: neither the old window nor the new one
        loaded = served.current
        component = loaded.bundle.default_component
        reference = Reference.from_manifest(loaded.bundle.manifest.drift_reference, loaded.labels, component,
                                            self.settings.low_confidence)  # fmt: skip
        state = ModelDrift(version, list(loaded.labels), Window(self.settings.window, len(loaded.labels),
                           self.settings.low_confidence), reference, self.settings)  # fmt: skip
        self.models[model] = state
        self._metrics.reset(model)
        source = "manifest" if reference is not None else f"warm-up ({self.settings.warmup} texts)"
        log.event("drift_window", model=model, version=version, reference=source)
        return state

    def _check(self, model: str, state: ModelDrift) -> None:
        assert state.reference is not None  # due() says so
        state.checked_at = state.seen
        results = assess(state.window, state.reference, self.settings)
        state.signals.update(results)
        self._metrics.record(model, results)
        for signal, result in results.items():
            if state.rules[signal].update(result["breached"], state.seen):
                self._alert(model, state, signal, result)
        for signal, rule in state.rules.items():
            self._metrics.active.labels(model, signal).set(0 if rule.armed else 1)

    def _alert(self, model: str, state: ModelDrift, signal: str, result: dict[str, Any]) -> None:
        self._count += 1
        alert = {
            "id": f"{model}-{state.version}-{self._count}", "type": "drift", "model": model,
            "version": state.version, "signal": signal, "value": _round(result["value"]),
            "threshold": _round(result["threshold"]), "reference": _round(result.get("reference")),
            "window_texts": len(state.window) if signal != "feedback_error" else result["records"],
            "texts_seen": state.seen, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip
        self.alerts.setdefault(model, deque(maxlen=RECENT_ALERTS)).append(alert)
        self._metrics.alerts.labels(model, signal).inc()
        self._metrics.active.labels(model, signal).set(1)
        log.event("drift_alert", level=30, **{k: v for k, v in alert.items() if k != "type"})
        if self.outbox is not None and self.sender is not None:
            self.outbox.add(dict(alert))
            self.sender.wake()

    # ------------------------------------------------------------------ reading
    def report(self, model: str) -> dict[str, Any]:
        """What ``GET /v1/models/{name}/drift`` answers: window, reference, signals, thresholds, recent alerts."""
        with self._lock:
            served = self.service.get(model)
            state = self.models.get(model)
            if state is None and served is not None:
                state = self._state(model, served.current.version)
            assert state is not None, "report() is for served classification models"
            return _report(model, state, self.settings, list(self.alerts.get(model, ())))

    def close(self, flush_seconds: float = 5.0) -> None:
        """Send the alerts still pending (up to ``flush_seconds``), then stop the webhook sender."""
        if self.sender is not None:
            self.sender.stop(flush_seconds)


def webhook_payload(alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON body POSTed for one drift alert (no request text, ever)."""
    return {key: value for key, value in alert.items() if key not in ("attempts", "last_error")}


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) and math.isfinite(value) else None if value is None else value


def _report(model: str, state: ModelDrift, settings: DriftSettings, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    window, reference = state.window, state.reference
    shares: list[dict[str, Any]] = []
    if reference is not None and len(window):
        now = np.asarray(window.counts, dtype=np.float64) / len(window)
        then = reference.counts / max(reference.counts.sum(), 1)
        for i in np.argsort(-np.abs(now - then), kind="stable")[:5]:
            shares.append(
                {"label": state.labels[i], "window": _round(float(now[i])), "reference": _round(float(then[i]))}
            )
    return {
        "model": model,
        "version": state.version,
        "reference": _reference_facts(state, settings),
        "window": {
            "size": settings.window, "texts": len(window), "texts_seen": state.seen,
            "mean_confidence": _round(window.mean), "low_confidence_rate": _round(window.low_rate),
            "largest_label_shifts": shares, "feedback_records": len(state.feedback),
        },
        "signals": {signal: {key: _round(value) for key, value in state.signals[signal].items()}
                    if signal in state.signals else None for signal in SIGNALS},
        "alerting": {signal: not rule.armed for signal, rule in state.rules.items()},
        "thresholds": {
            "window": settings.window, "every": settings.every, "alpha": settings.alpha,
            "psi": settings.psi if settings.psi is not None else "auto",
            "low_confidence": settings.low_confidence, "low_confidence_rise": settings.low_confidence_rise,
            "confidence_drop": settings.confidence_drop, "feedback_error": settings.feedback_error,
            "feedback_window": settings.feedback_window, "min_feedback": settings.min_feedback,
        },
        "alerts": alerts,
    }  # fmt: skip


def _reference_facts(state: ModelDrift, settings: DriftSettings) -> dict[str, Any]:
    reference = state.reference
    if reference is None:
        return {"source": "warm-up", "ready": False, "texts": len(state.warm_labels), "needed": settings.warmup}
    return {"source": reference.source, "ready": True, "component": reference.component,
            "label_texts": int(reference.counts.sum()), "confidence_texts": reference.texts,
            "mean_confidence": _round(reference.mean), "low_confidence_rate": _round(reference.low_rate)}  # fmt: skip


class _DriftMetrics:
    """The monitor's Prometheus series, in the service's registry. Across server processes (Ray replicas) each
    keeps its own window: /metrics then shows the worst replica (``livemax``; ``livemin`` for the confidence)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        r = metrics.registry
        self.psi = Gauge("slm_drift_psi", "PSI of the predicted labels in the window against the reference.",
                         ["model"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.mean_confidence = Gauge("slm_drift_mean_confidence", "Mean top-label probability in the window.",
                                     ["model"], registry=r, multiprocess_mode="livemin")  # fmt: skip
        self.low_confidence = Gauge("slm_drift_low_confidence_rate", "Share of low-confidence answers in the window.",
                                    ["model"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.feedback_error = Gauge("slm_feedback_error_rate", "Share of recent feedback saying the label was wrong.",
                                    ["model"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.active = Gauge("slm_drift_alert_active", "1 while a drift signal is in alert (not yet re-armed).",
                            ["model", "signal"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.alerts = Counter("slm_drift_alerts", "Drift alerts raised, by model and signal.", ["model", "signal"],
                              registry=r)  # fmt: skip

    def record(self, model: str, results: dict[str, dict[str, Any]]) -> None:
        self.psi.labels(model).set(results["psi"]["value"])
        self.mean_confidence.labels(model).set(results["mean_confidence"]["value"])
        self.low_confidence.labels(model).set(results["low_confidence"]["value"])

    def reset(self, model: str) -> None:
        """A new version: its window is empty, so the last version's figures no longer describe anything."""
        for gauge in (self.psi, self.mean_confidence, self.low_confidence, self.feedback_error):
            gauge.labels(model).set(math.nan)
        for signal in SIGNALS:
            self.active.labels(model, signal).set(0)
