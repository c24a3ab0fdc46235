"""Request and response bodies of the HTTP API (pydantic: validated, and documented at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class PredictRequest(BaseModel):
    """One text (``text``) or a list (``texts``); strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(None, description="One text to classify.", examples=["my card has not arrived"])
    texts: list[str] | None = Field(None, description="Several texts, answered in order.")
    top_k: int | None = Field(None, ge=1, le=10_000, description="Labels to list per text (server default: 5).")
    probabilities: bool = Field(False, description="Also return every label's probability.")

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list of strings)")
        return self

    @property
    def inputs(self) -> list[str]:
        if self.texts is not None:
            return self.texts
        assert self.text is not None  # _one_input: exactly one of the two
        return [self.text]


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str | list[str] = Field(description="The predicted label (a list of labels for a multi-label model).")
    score: float = Field(description="Probability of the top label.")
    top_k: list[LabelScore]
    probabilities: dict[str, float] | None = Field(None, description="Every label's probability, when asked.")
    truncated: bool = Field(False, description="The text was cut to the server's --max-chars before predicting.")


class PredictResponse(BaseModel):
    model: str
    version: str = Field(description="The bundle version that answered: 12 hex digits of its manifest digest.")
    request_id: str = Field(description="This request's id (also the X-Request-ID header); feedback can name it.")
    predictions: list[Prediction]
    latency_ms: float = Field(description="Time spent on the request inside the server, queueing included.")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def validation_message(exc: ValidationError) -> tuple[str, str]:
    """``(code, one-line message)`` for a body that failed to parse or validate."""
    first = exc.errors(include_url=False)[0]
    if first.get("type") == "json_invalid":
        return "invalid_json", f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return "invalid_request", f"{where}: {message}" if where else message


def request_body_schema(model: type[BaseModel] = PredictRequest) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for endpoints that parse ``model`` (:class:`PredictRequest`) themselves."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
