"""``GET /v1/models/{name}/drift`` and the drift monitor's place in the app (:mod:`slm.serving.drift`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from slm.serving.drift import DriftMonitor
from slm.serving.responses import ApiError
from slm.serving.schemas import ErrorResponse
from slm.serving.service import ModelService


def install_drift(app: FastAPI, service: ModelService) -> DriftMonitor | None:
    """Watch ``service``'s predictions for drift (unless ``--no-drift``) and answer /v1/models/{name}/drift.

    The monitor is registered on ``service.observers``; the service closes it (its webhook sender) on shutdown.
    """
    settings = service.config.drift
    monitor = DriftMonitor(service, settings) if settings.enabled else None
    if monitor is not None:
        service.observers.add(monitor)

    @app.get(
        "/v1/models/{name}/drift",
        summary="Drift and quality signals of one model: window, reference, thresholds, alerts",
        responses={404: {"model": ErrorResponse}},
    )
    async def drift(name: str) -> dict[str, Any]:
        if service.get(name) is None:
            if service.find(name) is not None:
                raise ApiError(404, "unknown_model", f"'{name}' is not a classification model: drift is "
                               "watched for the models at /v1/models/{name}/predict only")  # fmt: skip
            known = ", ".join(service.names)
            raise ApiError(404, "unknown_model", f"no model named '{name}' is served here (served: {known})")
        if monitor is None:
            raise ApiError(404, "drift_off", "drift monitoring is off on this server (slm serve --no-drift)")
        return monitor.report(name)

    return monitor
