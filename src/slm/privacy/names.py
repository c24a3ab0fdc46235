"""Person names, only where spaCy and one of its trained pipelines are installed (the user's choice).

Names have no checksum or grammar that a pattern can check: finding them offline takes a trained
named-entity model. slm adds no dependency for it; a user who wants names redacted installs spaCy and a
pipeline (``pip install spacy`` and, e.g., ``python -m spacy download en_core_web_sm`` or
``zh_core_web_sm``) and asks for ``PERSON``. Without them, asking for ``PERSON`` is a one-line error,
never a silent no-op.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from slm.errors import ConfigError

DEFAULT_MODEL = "en_core_web_sm"
_LABELS = frozenset({"PERSON", "PER"})  # spaCy's English/Chinese pipelines say PERSON; some others PER
_LOCK = threading.Lock()
_PIPELINES: dict[str, Any] = {}


def _pipeline(model: str) -> Any:
    """The spaCy pipeline ``model`` (loaded once per process, only its NER parts)."""
    with _LOCK:
        if model not in _PIPELINES:
            try:
                spacy = importlib.import_module("spacy")
            except ImportError as exc:
                raise ConfigError(
                    "PERSON redaction needs spaCy and a trained pipeline, which slm does not install: "
                    f"pip install spacy && python -m spacy download {model}"
                ) from exc
            try:
                _PIPELINES[model] = spacy.load(model, exclude=["parser", "lemmatizer", "textcat"])
            except OSError as exc:
                raise ConfigError(
                    f"PERSON redaction: the spaCy pipeline {model!r} is not installed "
                    f"(python -m spacy download {model})"
                ) from exc
        return _PIPELINES[model]


def person_finder(model: str = DEFAULT_MODEL) -> Callable[[str], list[tuple[int, int]]]:
    """A function returning the (start, end) of each person name spaCy's ``model`` finds in a text.

    Loads the pipeline now, so a missing spaCy or model fails when the Redactor is made, not mid-file.
    """
    nlp = _pipeline(model)

    def find(text: str) -> list[tuple[int, int]]:
        return [(ent.start_char, ent.end_char) for ent in nlp(text).ents if ent.label_ in _LABELS]

    return find
