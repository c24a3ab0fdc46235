"""Find and replace personal data: the Redactor, its overlap rule, placeholders and keyed pseudonyms."""

from __future__ import annotations

import bisect
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence

import phonenumbers

from slm.errors import ConfigError
from slm.privacy import recognizers as rec
from slm.privacy.recognizers import Span

log = logging.getLogger(__name__)

NameFinder = Callable[[str], Iterable[tuple[int, int]]]  # text -> (start, end) of each person name

# Most specific first: when two candidates cover the same characters, the longer wins, and at equal length
# the one earlier here (a checksummed type before a pattern-only one).
TYPES: tuple[str, ...] = ("CN_ID", "IBAN", "CARD", "EMAIL", "IP", "DOB", "PHONE", "URL", "PERSON")
DEFAULT_TYPES: tuple[str, ...] = tuple(t for t in TYPES if t != "PERSON")  # PERSON needs spaCy: opt in
MODES = ("placeholder", "pseudonym")
# National formats (no "+") read as these countries' numbers. CN with US and GB: bench/redaction.py missed
# Chinese landlines written in English text (0755-2110 0905) with US and GB alone, and adding CN found no
# false positive on the set or on 25,000 real texts (BANKING77, waimai_10k) at the same speed.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "CN")
DEFAULT_LENIENCY = "strict_grouping"  # chosen by bench/redaction.py: see docs/privacy.md
PSEUDONYM_LETTERS = 8  # 26**8 ~ 2e11 values: two different e-mails share a pseudonym with odds ~1e-11 per pair

_RANK = {t: i for i, t in enumerate(TYPES)}
# A placeholder or pseudonym slm wrote: never detected again, so redact(redact(x)) == redact(x). Pseudonyms
# are letters only (no digit, "@" or "."), so no recognizer can fire inside one either.
PLACEHOLDER = re.compile(r"<(?:" + "|".join(TYPES) + r")(?:_[a-z]{" + str(PSEUDONYM_LETTERS) + r"})?>")
_CJK = re.compile(r"[\u3400-\u9fff]")
# Every rule recognizer needs a digit, "@", "." or "://" in the text: without one (most chat texts), only
# PERSON can find anything, and the rest is skipped with one search.
_SIGNAL = re.compile(r"[0-9@.:]")


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep non-overlapping spans: the longest first, then the most specific type; in text order.

    A URL holding an IP address or an e-mail holding a phone-like local part is kept whole; an IBAN
    is kept rather than the card-like digits inside it. The kept spans stay sorted, so each candidate is
    checked against its two neighbours only (checking all kept spans took 4 minutes on a 1 MB text).
    """
    starts: list[int] = []
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start - s.end, _RANK.get(s.type, len(TYPES)), s.start)):
        i = bisect.bisect_left(starts, span.start)
        if i < len(chosen) and chosen[i].start < span.end:
            continue  # the next kept span starts inside this one
        if i > 0 and chosen[i - 1].end > span.start:
            continue  # the previous kept span runs into this one
        starts.insert(i, span.start)
        chosen.insert(i, span)
    return chosen


class Redactor:
    """Finds personal data in English and Chinese text and replaces it.

    ``types``: the PII types to find (default: all but ``PERSON``, which needs spaCy and a model).
    ``mode``: ``"placeholder"`` writes ``<EMAIL>``, ``<PHONE>``...; ``"pseudonym"`` writes
    ``<EMAIL_kqzmtfab>``: the same value gives the same pseudonym under the same ``key`` (HMAC-SHA256),
    so rows stay joinable without the value. Without a ``key`` a random one is drawn for this Redactor:
    pseudonyms are then consistent only within it. ``phone_regions``: the countries whose national formats
    (no ``+`` prefix) are read as phone numbers (numbers with ``+`` or ``00`` and a country code are found
    whatever the regions); Chinese mobiles are always found, and ``CN`` is added for texts in Chinese.
    ``phone_leniency``: ``phonenumbers``' leniency (``possible|valid|strict_grouping|exact_grouping``).
    ``person_model``: for ``PERSON``, the name of a spaCy pipeline (default ``en_core_web_sm``), or any
    function ``text -> [(start, end), ...]`` that finds names (another NER library of your choice).
    Thread-safe: holds no state that changes after construction.
    """

    def __init__(
        self,
        types: Iterable[str] | None = None,
        mode: str = "placeholder",
        key: bytes | None = None,
        *,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
        phone_leniency: str = DEFAULT_LENIENCY,
        person_model: str | NameFinder | None = None,
    ) -> None:
        self.types = _check_types(types)
        if mode not in MODES:
            raise ConfigError(f"unknown redaction mode {mode!r}: use one of {', '.join(MODES)}")
        if phone_leniency not in rec.LENIENCIES:
            raise ConfigError(f"unknown phone leniency {phone_leniency!r}: use one of {', '.join(rec.LENIENCIES)}")
        if key is not None and not isinstance(key, bytes | bytearray):
            raise ConfigError("the pseudonym key must be bytes")
        self.mode = mode
        self._key = bytes(key) if key is not None else os.urandom(32)
        self.phone_regions = tuple(r.upper() for r in phone_regions)
        for region in self.phone_regions:
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ConfigError(f"unknown phone region {region!r}: use ISO 3166 codes such as US, GB, CN")
        zh_regions = self.phone_regions if "CN" in self.phone_regions else (*self.phone_regions, "CN")
        self._finders = self._build(phone_leniency, person_model)
        self._zh_phone = rec.phone_finder(zh_regions, phone_leniency) if "PHONE" in self.types else None

    def _build(
        self, leniency: str, person_model: str | NameFinder | None
    ) -> list[tuple[str, Callable[[str], list[Span]]]]:
        table: dict[str, Callable[[str], list[Span]]] = {
            "EMAIL": rec.find_emails,
            "URL": rec.find_urls,
            "IP": rec.find_ips,
            "CARD": rec.find_cards,
            "IBAN": rec.find_ibans,
            "CN_ID": rec.find_cn_ids,
            "PHONE": rec.phone_finder(self.phone_regions, leniency),
            "DOB": rec.find_dobs,
        }
        finders = [(t, table[t]) for t in self.types if t in table]
        if "PERSON" in self.types:
            from slm.privacy.names import DEFAULT_MODEL, person_finder

            names = person_model if callable(person_model) else person_finder(person_model or DEFAULT_MODEL)
            finders.append(("PERSON", lambda text: [Span(s, e, "PERSON") for s, e in names(text)]))
        return finders

    def find(self, text: str) -> list[Span]:
        """The personal data in ``text``: non-overlapping spans in text order, each with its type.

        Phone numbers are looked for last, in the text with everything found so far masked as a
        placeholder would be: ``phonenumbers`` missed "+44 20 7946 0958" right before a card number (it
        reads both as one candidate), and found it once the card was ``<CARD>``, which broke
        redact(redact(x)) == redact(x).
        """
        if not text:
            return []
        folded = rec.fold(text)
        if "<" in folded:
            folded = PLACEHOLDER.sub(lambda m: rec.mask(len(m.group())), folded)  # never detected again
        signal = _SIGNAL.search(folded) is not None
        candidates: list[Span] = []
        for kind, finder in self._finders:
            if kind not in ("PHONE", "PERSON") and signal:
                candidates.extend(finder(folded))
        found = resolve_overlaps(candidates)
        for kind, finder in self._finders:
            if kind == "PHONE" and signal:
                if self._zh_phone is not None and _CJK.search(folded):
                    finder = self._zh_phone  # the national formats of CN too, for text written in Chinese
                found.extend(finder(_masked(folded, found)))
            elif kind == "PERSON":
                found.extend(finder(folded))
        return resolve_overlaps(found)

    def redact_spans(self, text: str) -> tuple[str, list[Span]]:
        """``text`` with each span replaced, and the spans replaced (for counting by type)."""
        spans = self.find(text)
        if not spans:
            return text, spans
        pieces: list[str] = []
        at = 0
        for span in spans:
            pieces.append(text[at : span.start])
            pieces.append(self.replacement(span.type, text[span.start : span.end]))
            at = span.end
        pieces.append(text[at:])
        return "".join(pieces), spans

    def redact(self, text: str) -> str:
        """``text`` with its personal data replaced by placeholders or pseudonyms (idempotent)."""
        return self.redact_spans(text)[0]

    def replacement(self, kind: str, value: str) -> str:
        """What replaces ``value`` of type ``kind``: ``<KIND>`` or ``<KIND_pseudonym>``."""
        if self.mode == "placeholder":
            return f"<{kind}>"
        digest = hmac.new(self._key, f"{kind}\x00{_normalise(kind, value)}".encode(), hashlib.sha256).digest()
        number = int.from_bytes(digest[:8], "big")
        letters = []
        for _ in range(PSEUDONYM_LETTERS):
            number, index = divmod(number, 26)
            letters.append(chr(ord("a") + index))
        return f"<{kind}_{''.join(letters)}>"


def _masked(text: str, spans: Sequence[Span]) -> str:
    """``text`` with each span overwritten by a placeholder-like mask of the same length."""
    if not spans:
        return text
    pieces, at = [], 0
    for span in spans:
        pieces += [text[at : span.start], rec.mask(span.end - span.start)]
        at = span.end
    pieces.append(text[at:])
    return "".join(pieces)


def _check_types(types: Iterable[str] | None) -> tuple[str, ...]:
    if types is None:
        return DEFAULT_TYPES
    if isinstance(types, str):
        types = [t for t in re.split(r"[,\s]+", types) if t]
    wanted = tuple(dict.fromkeys(t.strip().upper() for t in types))
    unknown = [t for t in wanted if t not in _RANK]
    if unknown or not wanted:
        raise ConfigError(f"unknown PII type {', '.join(unknown) or '(none given)'}: use some of {', '.join(TYPES)}")
    return wanted


def _normalise(kind: str, value: str) -> str:
    """One spelling per value, so ``+86 138 1234 5678`` and ``13812345678`` get one pseudonym."""
    value = rec.fold(value)
    if kind == "EMAIL":
        return value.lower()
    if kind in ("CARD", "IBAN", "CN_ID"):
        return re.sub(r"[^0-9A-Za-z]", "", value).upper()
    if kind == "PHONE":
        digits = re.sub(r"[^0-9]", "", value)
        if value.lstrip().startswith(("+", "00")) or len(digits) != 11 or not digits.startswith("1"):
            try:
                number = phonenumbers.parse(value, "US")
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            except phonenumbers.NumberParseException:
                return digits
        return "+86" + digits  # a Chinese mobile written without its country code
    if kind == "IP":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    if kind == "URL":
        return value.rstrip("/").lower()
    return re.sub(r"\s+", " ", value).strip().casefold()


@functools.lru_cache(maxsize=16)
def _cached(
    types: tuple[str, ...] | None, mode: str, key: bytes | None, regions: tuple[str, ...], leniency: str
) -> Redactor:
    return Redactor(types, mode, key, phone_regions=regions, phone_leniency=leniency)


def redact(
    text: str,
    *,
    types: Iterable[str] | None = None,
    mode: str = "placeholder",
    key: bytes | None = None,
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    phone_leniency: str = DEFAULT_LENIENCY,
) -> str:
    """``text`` redacted by a Redactor with these settings (built once per distinct settings and reused).

    Pseudonym mode without a ``key`` uses one random key per process.
    """
    wanted = None if types is None else tuple([types] if isinstance(types, str) else types)
    return _cached(wanted, mode, key, tuple(phone_regions), phone_leniency).redact(text)
