"""Personal data (PII) detection and redaction for English and Chinese text.

A foundations package: it imports only slm.errors and libraries (phonenumbers, python-stdnum, both core
dependencies), so every install can redact, and the server redacts what it stores by default::

    from slm.privacy import Redactor, redact
    redact("mail jane@example.com or call +44 20 7946 0958")   # 'mail <EMAIL> or call <PHONE>'
    Redactor(mode="pseudonym", key=b"secret").redact("jane@example.com")   # '<EMAIL_...>' stable per key
"""

from __future__ import annotations

from slm.privacy.recognizers import Span
from slm.privacy.redactor import DEFAULT_TYPES, MODES, PLACEHOLDER, TYPES, Redactor, redact, resolve_overlaps

__all__ = ["DEFAULT_TYPES", "MODES", "PLACEHOLDER", "TYPES", "Redactor", "Span", "redact", "resolve_overlaps"]
