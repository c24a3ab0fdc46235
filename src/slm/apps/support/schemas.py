"""Request and response bodies of the support endpoints (pydantic: validated, and documented at /docs)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

CONVERSATION_ID = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_CONTEXT_SLOTS, MAX_SLOT_NAME, MAX_SLOT_VALUE = 32, 64, 1000
SlotValues = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "maxProperties": MAX_CONTEXT_SLOTS, "additionalProperties": {
        "anyOf": [{"type": "string", "maxLength": MAX_SLOT_VALUE}, {"type": "number"}]}}),
]  # fmt: skip


class AnswerRequest(BaseModel):
    """A customer's question to a support assistant; strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(description="The customer's message.", examples=["my new card has not arrived"])
    conversation_id: str | None = Field(
        None, pattern=CONVERSATION_ID, description="The conversation this turn belongs to (new one when absent)."
    )
    context: SlotValues | None = Field(
        None, description="Slot values for the answer templates, e.g. the customer's name.", examples=[{"name": "Ana"}]
    )
    assistant: str | None = Field(None, description="The served assistant; needed only when several are served.")

    @field_validator("context")
    @classmethod
    def _slot_values(cls, context: dict[str, Any] | None) -> dict[str, Any] | None:
        if context is None:
            return None
        if len(context) > MAX_CONTEXT_SLOTS:
            raise ValueError(f"{len(context)} slots, more than {MAX_CONTEXT_SLOTS}")
        for name, value in context.items():
            if not name or len(name) > MAX_SLOT_NAME:
                raise ValueError(f"a slot name must have 1 to {MAX_SLOT_NAME} characters")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"slot '{name}' must be a string or a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"slot '{name}' must be a finite number")
            if isinstance(value, str) and len(value) > MAX_SLOT_VALUE:
                raise ValueError(f"slot '{name}' is longer than {MAX_SLOT_VALUE} characters")
        return context


class IntentFacts(BaseModel):
    label: str
    confidence: float
    score: float = Field(description="In-scope score of the question.")
    distance: float
    in_scope: bool


class FaqFacts(BaseModel):
    id: str
    question: str
    score: float
    similarity: float = Field(description="Cosine similarity of the question and the entry.")
    lexical: float


class AnswerResponse(BaseModel):
    assistant: str
    conversation_id: str
    decision: Literal["intent", "faq", "handoff"]
    answer: str | None = Field(description="What to tell the customer; null when a person takes over.")
    reason: str | None = Field(description="Why: out_of_scope, no_answer, intent_requires_human, "
                               "unsupported_language or missing_slot:NAME.")  # fmt: skip
    intent: IntentFacts
    faq: FaqFacts | None = Field(description="The knowledge-base entry behind an faq answer.")
    path: list[str] = Field(description="The steps of the decision, in order.")
    latency_ms: float = Field(description="Time spent on the request inside the server, queueing included.")


class UnansweredTurn(BaseModel):
    id: int
    ts: str
    conversation_id: str
    assistant: str
    question: str
    reason: str | None
    predicted_intent: str | None
    confidence: float | None


class UnansweredResponse(BaseModel):
    unanswered: list[UnansweredTurn] = Field(description="Handed-off questions, newest first.")
