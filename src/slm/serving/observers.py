"""Watchers of the predictions a server makes and the feedback it receives (drift signals, recall by request id).

An observer is called in the event loop after every answered predict request, so it must be cheap (a few
microseconds per text) and never block; one that raises is logged and skipped, never fails the request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

log = logging.getLogger("slm.serving")


class PredictionObserver(Protocol):
    """What :class:`ObserverList` calls; both methods must return quickly."""

    def predicted(
        self, model: str, version: str, request_id: str, texts: list[str], predictions: list[dict[str, Any]]
    ) -> None:
        """One answered request: its texts (never to be logged) and the predictions sent back."""

    def corrected(self, model: str, version: str | None, correct: bool | None) -> None:
        """One feedback record about ``model``: whether the served label was right (None: unsure)."""


class ObserverList:
    """The observers of one service, called in order; a failing observer is logged (once per kind) and skipped."""

    def __init__(self) -> None:
        self._observers: list[PredictionObserver] = []
        self._failed: set[str] = set()

    def add(self, observer: PredictionObserver) -> None:
        self._observers.append(observer)

    def __iter__(self) -> Iterator[PredictionObserver]:
        return iter(self._observers)

    def predicted(
        self, model: str, version: str, request_id: str, texts: list[str], predictions: list[dict[str, Any]]
    ) -> None:
        for observer in self._observers:
            try:
                observer.predicted(model, version, request_id, texts, predictions)
            except Exception as exc:  # an observer must never fail a request that was answered
                self._report(observer, exc)

    def corrected(self, model: str, version: str | None, correct: bool | None) -> None:
        for observer in self._observers:
            try:
                observer.corrected(model, version, correct)
            except Exception as exc:
                self._report(observer, exc)

    def close(self) -> None:
        """Let the observers that hold something (a webhook sender's thread) release it: the service is stopping."""
        for observer in self._observers:
            close = getattr(observer, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self._report(observer, exc)

    def _report(self, observer: PredictionObserver, exc: Exception) -> None:
        kind = type(observer).__name__
        if kind not in self._failed:
            self._failed.add(kind)
            log.warning("observer %s failed (%s: %s); later failures of it are not logged", kind,
                        type(exc).__name__, exc)  # fmt: skip
