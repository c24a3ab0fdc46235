"""Answer templates per intent, with slots.

A templates file maps intents to what the assistant does when it recognises them. JSON::

    {
      "card_arrival": {"answer": "Cards arrive within {days} working days, {name}.",
                       "slots": {"days": {"default": "3-5"}, "name": {"default": "there"}}},
      "exchange_rate": {"answer": "Today's rate to {currency} is in the app.",
                        "slots": {"currency": {"pattern": "\\\\b(euros?|dollars?|pounds?)\\\\b",
                                               "prompt": "Which currency do you mean?"}}},
      "lost_or_stolen_card": {"handoff": true}
    }

or a CSV/TSV/JSONL table with ``intent`` and ``answer`` columns (and optional ``handoff``).
A slot's value comes from the request's ``context``, else the first match of its ``pattern`` in
the question (group 1 if it has one), else its ``default``. A missing slot is asked for with its
``prompt`` when it has one; otherwise the question is handed off. Intents without a template
fall back to the knowledge base.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from slm.errors import DataError


@dataclass(frozen=True)
class Slot:
    name: str
    default: str | None = None
    pattern: str | None = None
    prompt: str | None = None

    def find(self, question: str) -> str | None:
        if not self.pattern:
            return None
        match = re.search(self.pattern, question, flags=re.IGNORECASE)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)


@dataclass(frozen=True)
class Template:
    intent: str
    answer: str | None = None
    handoff: bool = False
    slots: dict[str, Slot] = field(default_factory=dict)

    def fields(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.answer or "") if name]

    def fill(self, question: str, context: dict | None) -> tuple[str | None, str | None]:
        """``(answer, None)`` when every slot has a value, else ``(prompt or None, missing slot name)``."""
        values: dict[str, str] = {}
        for name in self.fields():
            slot = self.slots.get(name, Slot(name))
            value = (context or {}).get(name)
            if value is None or str(value).strip() == "":
                value = slot.find(question) or slot.default
            if value is None:
                return slot.prompt, name
            values[name] = str(value)
        return (self.answer or "").format(**values), None

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "handoff": self.handoff,
            "slots": {
                n: {k: v for k, v in vars(s).items() if k != "name" and v is not None} for n, s in self.slots.items()
            },
        }


def _parse_slots(path: Path, intent: str, raw: object) -> dict[str, Slot]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(f"{path}: 'slots' of intent '{intent}' must be an object of slot names")
    slots = {}
    for name, spec in raw.items():
        spec = spec if isinstance(spec, dict) else {"default": spec}
        unknown = set(spec) - {"default", "pattern", "prompt"}
        if unknown:
            raise DataError(f"{path}: slot '{name}' of intent '{intent}' has unknown keys {sorted(unknown)}")
        pattern = spec.get("pattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise DataError(f"{path}: slot '{name}' of intent '{intent}' has a bad pattern: {exc}") from None
        default = spec.get("default")
        slots[name] = Slot(name, None if default is None else str(default), pattern, spec.get("prompt"))
    return slots


def _template(path: Path, intent: str, spec: object) -> Template:
    if isinstance(spec, str):
        spec = {"answer": spec}
    if not isinstance(spec, dict):
        raise DataError(f"{path}: the template of intent '{intent}' must be a string or an object")
    unknown = set(spec) - {"answer", "handoff", "slots"}
    if unknown:
        raise DataError(f"{path}: the template of intent '{intent}' has unknown keys {sorted(unknown)}")
    answer = spec.get("answer")
    handoff = bool(spec.get("handoff", False))
    if not handoff and (not isinstance(answer, str) or not answer.strip()):
        raise DataError(f"{path}: intent '{intent}' needs a non-empty 'answer' (or \"handoff\": true)")
    template = Template(intent, answer, handoff, _parse_slots(path, intent, spec.get("slots")))
    try:
        template.fields()
    except ValueError as exc:
        raise DataError(f"{path}: the answer of intent '{intent}' is not a valid template: {exc}") from None
    return template


def read_templates(path: str | Path) -> dict[str, Template]:
    """Templates keyed by intent, from a JSON object or a table with intent/answer columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"templates file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} is not valid UTF-8 JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path} must hold a JSON object mapping intents to templates")
        return {str(k): _template(path, str(k), v) for k, v in raw.items()}
    from slm.data.loading import _find_column, _read_frame, _resolve_format, cell_text

    frame = _read_frame(path, _resolve_format(path, None))
    columns = list(frame.columns)
    intent_col = _find_column(path, columns, "intent", "intent")
    answer_col = _find_column(path, columns, "answer", "answer")
    out = {}
    for _, row in frame.iterrows():
        intent = cell_text(row[intent_col]).strip()
        if not intent:
            continue
        handoff = "handoff" in columns and cell_text(row["handoff"]).strip().lower() in ("1", "true", "yes")
        answer = cell_text(row[answer_col]).strip() or None
        out[intent] = _template(path, intent, {"answer": answer, "handoff": handoff})
    return out


def templates_from_dict(data: dict) -> dict[str, Template]:
    """Templates as stored in an assistant bundle."""
    return {intent: _template(Path("assistant.json"), intent, spec) for intent, spec in data.items()}
