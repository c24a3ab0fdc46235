"""The rule recognizers: one function per PII type, each ``(text) -> list[Span]``, English and Chinese.

Every recognizer works on the *folded* text (full-width ASCII forms such as ``１３８`` mapped one to one
onto ASCII, so offsets are those of the original) and validates what it finds with a maintained library
where the type has a checksum or a grammar: ``stdnum.luhn`` (cards), ``stdnum.iban``, ``stdnum.cn.ric``
(Chinese resident ID), ``ipaddress``, ``phonenumbers``. A candidate that fails its check is dropped: an
order number that looks like a card number but fails Luhn is not redacted.

Each recognizer starts with a cheap pre-check (a character that must be present) so that a text without
digits, ``@`` or ``.`` costs a few ``in`` tests: the server redacts every text it stores.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.cn import ric as _ric


@dataclass(frozen=True, order=True)
class Span:
    """One piece of personal data: its type (``EMAIL``, ``PHONE``...) and where it sits, ``text[start:end]``.

    The matched value itself is not kept, so a Span can be logged without leaking what it found.
    """

    start: int
    end: int
    type: str


Recognizer = Callable[[str], list[Span]]

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space, mapped one to one onto ASCII: Chinese text
# often writes digits and @ full-width. One character for one character, so spans index the original.
_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FOLD[0x3000] = 0x20


def fold(text: str) -> str:
    """``text`` with full-width ASCII forms replaced by ASCII (same length, same offsets)."""
    return text.translate(_FOLD)


_NOT_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_ALNUM_AFTER = r"(?![0-9A-Za-z])"

# ---------------------------------------------------------------- e-mail

_EMAIL = re.compile(
    _NOT_ALNUM_BEFORE
    + r"[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@"
    + r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    + r"(?![A-Za-z0-9-])"
)


def find_emails(text: str) -> list[Span]:
    """Addresses ``local@domain.tld`` (ASCII; the TLD letters only, so ``a@b.c3`` is not one)."""
    if "@" not in text:
        return []
    return [Span(m.start(), m.end(), "EMAIL") for m in _EMAIL.finditer(text)]


# ---------------------------------------------------------------- URLs

_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&*+,;=%()']"
_TLDS = (
    "com|net|org|edu|gov|mil|int|info|biz|io|co|ai|app|dev|me|tv|cc|xyz|online|site|shop|cn|uk|us|de|fr|"
    "nl|it|es|ru|jp|kr|hk|tw|sg|au|ca|in|br|ch|se|no|dk|fi|pl|be|at|ie|nz|eu"
)
_URL = re.compile(
    r"(?:(?<![A-Za-z0-9])(?:https?|ftp)://|(?<![A-Za-z0-9.@-])www\.)"
    + _URL_CHARS
    + r"+"
    # A bare host (no scheme, no www.) only with a known top-level domain, so "e.g." or "file.txt" stay.
    + r"|(?<![A-Za-z0-9.@/-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:"
    + _TLDS
    + r")(?![A-Za-z0-9-])(?:/"
    + _URL_CHARS
    + r"*)?",
    re.IGNORECASE,
)
_URL_TRAILING = ".,;:!?)]'"


def find_urls(text: str) -> list[Span]:
    """``http(s)://``, ``ftp://`` and ``www.`` addresses, and bare hosts with a common top-level domain.

    Trailing sentence punctuation is not part of the URL; a closing parenthesis is kept only when the URL
    opened one (``.../Foo_(bar)``).
    """
    if "." not in text and "://" not in text:
        return []
    spans = []
    for m in _URL.finditer(text):
        start, end = m.start(), m.end()
        value = m.group()
        while value and value[-1] in _URL_TRAILING:
            if value[-1] == ")" and value.count("(") >= value.count(")"):
                break
            value = value[:-1]
            end -= 1
        if "." in value[value.find("//") + 2 if "//" in value else 0 :]:
            spans.append(Span(start, end, "URL"))
    return spans


# ---------------------------------------------------------------- IP addresses

_IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\.?[0-9])")
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}|:)?(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![0-9A-Fa-f:])"
)


def find_ips(text: str) -> list[Span]:
    """IPv4 and IPv6 addresses, each checked by ``ipaddress`` (``999.1.1.1`` and ``10:30:45`` are not)."""
    spans = []
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            spans.append(Span(m.start(), m.end(), "IP"))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            try:
                ipaddress.IPv6Address(m.group())
            except ValueError:
                continue
            spans.append(Span(m.start(), m.end(), "IP"))
    return spans


# ---------------------------------------------------------------- payment cards

# Runs of digit groups separated by one space or dash: "4111 1111 1111 1111", "3782-822463-10005".
_DIGIT_GROUPS = re.compile(_NOT_ALNUM_BEFORE + r"[0-9]+(?:[ -][0-9]+)*" + _NOT_ALNUM_AFTER)
_GROUP = re.compile(r"[0-9]+")
# The issuer prefixes of the networks in use (Visa 4, Mastercard 51-55/2221-2720, Amex 34/37, Diners 30/36/38,
# Discover 6011/64/65, UnionPay 62, JCB 35, Maestro 50/56-69): a Luhn-valid number with another first digit is
# far more often an account or order number than a card.
_CARD_PREFIX = re.compile(r"4|5[0-9]|2[2-7]|3[0478]|35|6")
# How cards are printed and typed: one unbroken number, fours (4-4-4-4, 4-4-4-4-3, 4-4-4-1), or Amex/Diners
# 4-6-5 / 4-6-4. Without this, "+44 20 7946 0958 4111 1111 1111 1111" gave a Luhn-valid 17-digit window
# across the phone number and the card (one in ten windows passes Luhn by chance).
_CARD_GROUPING = re.compile(r"[0-9]+|(?:[0-9]{4}[ -]){2,4}[0-9]{1,4}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}")


def find_cards(text: str) -> list[Span]:
    """Card numbers: 13 to 19 digits, grouped by spaces or dashes or not, Luhn-valid, a known issuer prefix.

    Within a run of groups (``card 4111 1111 1111 1111 2 items``) the longest valid window of whole groups
    is the card, so a neighbouring number does not hide it.
    """
    if sum(text.count(d) for d in "0123456789") < 13:
        return []
    spans = []
    for run in _DIGIT_GROUPS.finditer(text):
        groups = [(g.start() + run.start(), g.end() + run.start()) for g in _GROUP.finditer(run.group())]
        found = _longest_card(text, groups)
        if found is not None:
            spans.append(Span(found[0], found[1], "CARD"))
    return spans


def _longest_card(text: str, groups: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The longest window of whole digit groups that is a valid card number, or None."""
    best: tuple[int, int] | None = None
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):
            digits += text[groups[j][0] : groups[j][1]]
            if len(digits) > 19:
                break
            window = (groups[i][0], groups[j][1])
            if len(digits) < 13 or (best is not None and window[1] - window[0] <= best[1] - best[0]):
                continue
            if (
                _CARD_PREFIX.match(digits)
                and _luhn.is_valid(digits)
                and _CARD_GROUPING.fullmatch(text[window[0] : window[1]])
            ):
                best = window
    return best


# ---------------------------------------------------------------- IBAN

# Country code, check digits, then 11 to 30 letters/digits, optionally in space-separated groups.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")


def find_ibans(text: str) -> list[Span]:
    """IBANs, spaced in groups or not, valid by ``stdnum.iban`` (ISO 13616 mod 97 and the country's format).

    A candidate that runs on into following words (``GB82 WEST 1234 5698 7654 32 THANKS``) is cut back at
    a space until it is valid.
    """
    spans = []
    for m in _IBAN.finditer(text):
        value = m.group()
        while True:
            if _iban.is_valid(value):
                spans.append(Span(m.start(), m.start() + len(value), "IBAN"))
                break
            cut = value.rfind(" ")
            if cut < 15:
                break
            value = value[:cut]
    return spans


# ---------------------------------------------------------------- Chinese resident ID

_CN_ID = re.compile(
    _NOT_ALNUM_BEFORE
    + r"[1-9][0-9]{5} ?(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]) ?[0-9]{3}[0-9Xx]"
    + _NOT_ALNUM_AFTER
)


def find_cn_ids(text: str) -> list[Span]:
    """Chinese resident identity numbers (18 characters), valid by ``stdnum.cn.ric``: checksum, birth date,
    and a region code that existed in the birth year. The 15-digit pre-1999 form has no checksum and is not
    detected."""
    spans = []
    for m in _CN_ID.finditer(text):
        if _ric.is_valid(m.group().replace(" ", "")):
            spans.append(Span(m.start(), m.end(), "CN_ID"))
    return spans


# ---------------------------------------------------------------- phone numbers

# Chinese mobile numbers: 1[3-9]x xxxx xxxx, with or without +86 / 0086 / (+86), spaces or dashes between.
_CN_MOBILE = re.compile(
    r"(?<![0-9A-Za-z+])(?:(?:\(?(?:\+|00)86\)?)[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}" + _NOT_ALNUM_AFTER
)

LENIENCIES = {
    "possible": phonenumbers.Leniency.POSSIBLE,
    "valid": phonenumbers.Leniency.VALID,
    "strict_grouping": phonenumbers.Leniency.STRICT_GROUPING,
    "exact_grouping": phonenumbers.Leniency.EXACT_GROUPING,
}
_SEVEN_DIGITS = re.compile(r"[0-9](?:[^0-9]{0,3}[0-9]){6}")


def find_cn_mobiles(text: str) -> list[Span]:
    """Chinese mobile numbers (11 digits starting 13-19), a format ``phonenumbers`` finds only with region
    CN; this pattern finds them in any text."""
    return [Span(m.start(), m.end(), "PHONE") for m in _CN_MOBILE.finditer(text)]


def phone_finder(regions: Sequence[str], leniency: str) -> Recognizer:
    """A recognizer of international and national phone numbers: ``phonenumbers.PhoneNumberMatcher`` once
    per region (a national number such as ``020 7946 0958`` is only valid read as its country's), plus the
    Chinese mobile pattern."""
    level = LENIENCIES[leniency]

    def find_phones(text: str) -> list[Span]:
        if not _SEVEN_DIGITS.search(text):
            return []
        spans = find_cn_mobiles(text)
        for region in regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=level):
                spans.append(Span(match.start, match.end, "PHONE"))
        return spans

    return find_phones


# ---------------------------------------------------------------- dates of birth

_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:3[01]|[12][0-9]|0?[1-9])"
_MONTH = r"(?:1[0-2]|0?[1-9])"
_YEAR = r"(?:19|20)[0-9]{2}"
_DATE = re.compile(
    r"(?<![0-9])(?:"
    + "|".join(
        [
            rf"{_YEAR}\s*年\s*{_MONTH}\s*月\s*{_DAY}\s*[日号]?",  # 1985年5月12日
            rf"{_YEAR}([-/.]){_MONTH}\1{_DAY}",  # 1985-05-12, 1985/5/12, 1985.5.12
            rf"{_DAY}([-/.]){_MONTH}\2{_YEAR}|{_MONTH}([-/.]){_DAY}\3{_YEAR}",  # 12/05/1985 (either order)
            rf"{_DAY}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS},?\s+{_YEAR}",  # 5 March 1985, 5th of Mar 1985
            rf"{_MONTHS}\s+{_DAY}(?:st|nd|rd|th)?,?\s+{_YEAR}",  # March 5, 1985
        ]
    )
    + r")(?![0-9])",
    re.IGNORECASE,
)
_BIRTH_CUE = re.compile(
    r"\b(?:born|birth\s*date|date\s+of\s+birth|d\.?o\.?b\.?|birthday|b-day)\b|出生|生日|生于|诞生",
    re.IGNORECASE,
)
_DATE_AFTER_CUE = 40  # most characters from a cue to the date it introduces: "born on", "DOB:", "my birthday is"
_DATE_BEFORE_CUE = 12  # "1985年5月12日出生": Chinese may put the cue after the date


def find_dobs(text: str) -> list[Span]:
    """Dates (with a year; English and Chinese formats) next to a birth cue: the nearest date after it, or,
    for the Chinese cues, just before it (``1985年5月12日出生``), whichever is closer.

    A date alone is not personal data (``transferred on 12/05/2023``); the date a cue such as "born", "DOB",
    "date of birth", "birthday", "出生" or "生日" introduces is. Other dates in the text are left alone.
    """
    if not _BIRTH_CUE.search(text):
        return []
    dates = [(m.start(), m.end()) for m in _DATE.finditer(text)]
    if not dates:
        return []
    found: set[tuple[int, int]] = set()
    for cue in _BIRTH_CUE.finditer(text):
        # (gap in characters, is-before, date): the closest wins, a date before the cue on a tie.
        near = [(d[0] - cue.end(), 1, d) for d in dates if 0 <= d[0] - cue.end() <= _DATE_AFTER_CUE]
        if not cue.group()[0].isascii():
            near += [(cue.start() - d[1], 0, d) for d in dates if 0 <= cue.start() - d[1] <= _DATE_BEFORE_CUE]
        if near:
            found.add(min(near)[2])
    return [Span(start, end, "DOB") for start, end in sorted(found)]
