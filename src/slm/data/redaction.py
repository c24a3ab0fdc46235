"""Training data with its personal data replaced (``slm train --redact``), before anything learns from it.

Redacted at load time, so every later step sees only placeholders: the splits, the n-gram vocabulary, the
report's examples and "confident mistakes" lists, the data report's warnings (one quotes a duplicate text).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

from slm.data.dataset import TextDataset
from slm.data.report import DataReport
from slm.privacy import Redactor

log = logging.getLogger(__name__)


def redact_dataset(
    ds: TextDataset, report: DataReport, redactor: Redactor | None = None
) -> tuple[TextDataset, DataReport]:
    """``ds`` and ``report`` with the personal data in every text (and warning) replaced by placeholders."""
    redactor = redactor or Redactor()
    found: Counter[str] = Counter()
    texts = []
    for text in ds.texts:
        clean, spans = redactor.redact_spans(text)
        texts.append(clean)
        found.update(span.type for span in spans)
    if found:
        counts = ", ".join(f"{kind} {n:,}" for kind, n in found.most_common())
        log.info("redacted %s: %s", ds.source or "the data", counts)
    warnings = [redactor.redact(warning) for warning in report.warnings]
    return dataclasses.replace(ds, texts=texts), dataclasses.replace(report, warnings=warnings)
