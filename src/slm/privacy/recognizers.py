"""The rule recognizers: one function per PII type, each ``(text) -> list[Span]``, English and Chinese.

Every recognizer works on the *folded* text (full-width digits and letters such as ``１３８`` mapped one to
one onto ASCII, so offsets are those of the original) and validates what it finds with a maintained library
where the type has a checksum or a grammar: ``stdnum.luhn`` (cards), ``stdnum.iban``, ``stdnum.cn.ric``
(Chinese resident ID), ``ipaddress``, ``phonenumbers``. A candidate that fails its check is dropped: an
order number that looks like a card number but fails Luhn is not redacted.

Each recognizer starts with a cheap pre-check (a character that must be present), and the Redactor skips
them all for a text without a digit, ``@``, ``.`` or ``:``: the server redacts every text it stores.
"""

from __future__ import annotations

import bisect
import functools
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

# Full-width digits, Latin letters, "+", "@", "-" and "." (not the sentence end 。), and the ideographic
# space, mapped one to one onto ASCII: Chinese text often writes numbers and addresses full-width. One
# character for one character, so spans index the original. Full-width punctuation (，：；（）！？)
# is left alone: folded to ASCII, "，" let a URL run on into the Chinese sentence after it
# ("http://x.cn/a，1967年8月26号下的单").
_FOLD = {code: code - 0xFEE0 for code in [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B)]}
_FOLD.update({0xFF0B: ord("+"), 0xFF20: ord("@"), 0xFF0D: ord("-"), 0xFF0E: ord("."), 0x3000: ord(" ")})


def fold(text: str) -> str:
    """``text`` with full-width digits, letters, ``+@-.`` replaced by ASCII (same length, same offsets)."""
    return text.translate(_FOLD)


def mask(length: int) -> str:
    """What stands for a placeholder, or for a span already found, while recognizers look at a text: same
    length (offsets hold), no digit, ``@`` or ``.``, and ``<``/``>`` at its ends as a placeholder has."""
    return "<" + "X" * (length - 2) + ">" if length >= 2 else "X"


_MASKED = re.compile(r"<X+>")
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

_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&*+,;=%()]"
# Top-level domains a bare host (no scheme, no www.) may end in. Those that are also English words (it, no,
# at, me, be, in, us, co, so...) count only with a path after them: "shop.example.it/u/7", not "do.it".
_TLDS = (
    "com|net|org|edu|gov|mil|info|biz|io|app|dev|xyz|online|site|shop|cn|uk|de|fr|nl|es|ru|jp|kr|hk|tw|sg|"
    "au|ca|br|ch|se|dk|fi|pl|ie|nz|eu"
)
_WORD_TLDS = "it|no|at|me|be|in|us|co|ai|tv|cc|int|so|to|is|am|do|go|my|id"
_URL = re.compile(
    r"(?:(?<![A-Za-z0-9])(?:https?|ftp)://|(?<![A-Za-z0-9.@-])www\.)"
    + _URL_CHARS
    + r"+"
    # A bare host (no scheme, no www.) only with a known top-level domain, so "e.g." or "file.txt" stay.
    + r"|(?<![A-Za-z0-9.@/-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:(?:"
    + _TLDS
    + r")(?![A-Za-z0-9-])(?:/"
    + _URL_CHARS
    + r"*)?|(?:"
    + _WORD_TLDS
    + r")/"
    + _URL_CHARS
    + r"*)",
    re.IGNORECASE,
)
_URL_TRAILING = ".,;:!?)]"


def _ticker_like(bare: str) -> bool:
    """A bare host with no path that is a stock ticker or two sentences run together, not an address:
    ``2882.TW``, ``0700.HK`` (digits before the suffix), ``BMW.DE``, ``slump.US`` (a two-letter suffix in
    capitals). Measured on fin_tweets, where these were the bare "URLs" that were not addresses."""
    if "/" in bare:
        return False
    name, _, tld = bare.rpartition(".")
    return name.replace(".", "").isdigit() or (len(tld) == 2 and tld.isupper())


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
        host = value.partition("://")[2] if "://" in value else value
        if not host or ("://" not in value and "." not in host):  # with a scheme any host counts: localhost
            continue
        if "://" not in value and not value.lower().startswith("www.") and _ticker_like(value):
            continue
        spans.append(Span(start, end, "URL"))
    return spans


# ---------------------------------------------------------------- IP addresses

_IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\.?[0-9])")
_VERSION_BEFORE = re.compile(r"(?:\bversion|\bver\.?|\bv|版本)\s*$", re.IGNORECASE)  # "version 1.2.3.4", "v1.2.3.4"
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}|:)?(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![0-9A-Fa-f:])"
)


def find_ips(text: str) -> list[Span]:
    """IPv4 and IPv6 addresses, each checked by ``ipaddress`` (``999.1.1.1`` and ``10:30:45`` are not); IPv6
    with at least two groups (``::`` alone is not redacted)."""
    spans = []
    if "." in text:
        for m in _IPV4.finditer(text):
            if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                continue
            # ipaddress refuses leading zeros (192.168.001.001), which people write: check the numbers.
            if all(int(part) <= 255 for part in m.group().split(".")):
                spans.append(Span(m.start(), m.end(), "IP"))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            groups = [g for g in re.split(r"[:.]", m.group()) if g]
            # "::" and "::A" are valid addresses but, in text, a ticker or a C++ name ("Stock::A" in
            # fin_tweets): at least three groups, or two with a digit ("fe80::1").
            if len(groups) < 2 or (len(groups) == 2 and not any(c.isdigit() for c in m.group())):
                continue
            try:
                ipaddress.IPv6Address(m.group())
            except ValueError:
                continue
            spans.append(Span(m.start(), m.end(), "IP"))
    return spans


# ---------------------------------------------------------------- payment cards

# Runs of digit groups separated by one space or dash: "4111 1111 1111 1111", "3782-822463-10005".
# Not after "+": "+4916091833841" is a phone number even where its digits pass Luhn.
_DIGIT_GROUPS = re.compile(r"(?<![0-9A-Za-z+])[0-9]+(?:[ -][0-9]+)*" + _NOT_ALNUM_AFTER)
_GROUP = re.compile(r"[0-9]+")
# The issuer prefixes of the networks in use and the lengths each issues (Visa 4: 13/16/19; Mastercard
# 51-55/2221-2720: 16; Amex 34/37: 15; Diners 30/36/38: 14/16; JCB 35, Discover 6011/64/65, UnionPay 62:
# 16-19; Maestro 50/56-69: 13-19). A Luhn-valid number outside these (one in ten random numbers passes
# Luhn) is far more often an account, order or ID number: 18-digit Chinese resident IDs starting 4 or 5 with
# a mistyped check character were taken for cards until lengths were checked.
_CARD_BRANDS = [
    (re.compile(r"4"), {13, 16, 19}),
    (re.compile(r"5[1-5]|2(?:22[1-9]|2[3-9][0-9]|[3-6][0-9]{2}|7[01][0-9]|720)"), {16}),
    (re.compile(r"3[47]"), {15}),
    (re.compile(r"3[068]"), {14, 16}),
    (re.compile(r"35|6011|6[45]|62"), set(range(16, 20))),
    (re.compile(r"5[06-9]|6"), set(range(13, 20))),
]
# An 18-digit number shaped like a Chinese resident ID (region, birth date, sequence) is an ID, its check
# character mistyped or not, and not a Maestro card: "500103199401010223" failed the ID's check and passed Luhn.
# An IBAN's head ("CH91 "): the digit groups after it are the IBAN's, not a card, even when the IBAN's
# check digits fail (then it is not redacted at all: a mistyped IBAN is not a card number).
_IBAN_HEAD = re.compile(r"[A-Z]{2}[0-9]{2} ?$")


def _card_brand_ok(digits: str) -> bool:
    for prefix, lengths in _CARD_BRANDS:
        if prefix.match(digits):
            return len(digits) in lengths
    return False


# How cards are printed and typed: one unbroken number, fours (4-4-4-4, 4-4-4-4-3, 4-4-4-1), or Amex/Diners
# 4-6-5 / 4-6-4. Without this, "+44 20 7946 0958 4111 1111 1111 1111" gave a Luhn-valid 17-digit window
# across the phone number and the card (one in ten windows passes Luhn by chance).
_CARD_GROUPING = re.compile(r"[0-9]+|(?:[0-9]{4}[ -]){2,4}[0-9]{1,4}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}")


def find_cards(text: str) -> list[Span]:
    """Card numbers: 13 to 19 digits, grouped by spaces or dashes or not, Luhn-valid, a known issuer prefix
    and a length that issuer uses.

    Within a run of groups (``card 4111 1111 1111 1111 2 items``) the longest valid window of whole groups
    is the card, so a neighbouring number does not hide it.
    """
    if sum(text.count(d) for d in "0123456789") < 13:
        return []
    spans = []
    for run in _DIGIT_GROUPS.finditer(text):
        if _IBAN_HEAD.search(text, max(0, run.start() - 5), run.start()):
            continue
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
            # A window never cuts at a dash: "6269-4632-0115-1746-094" is one 19-digit number, not a card
            # and 094 (spaces also separate words, so "4111 1111 1111 1111 2 items" may be cut).
            if text[window[0] - 1 : window[0]] == "-" or text[window[1] : window[1] + 1] == "-":
                continue
            if (
                _card_brand_ok(digits)
                and _luhn.is_valid(digits)
                and not (len(digits) == 18 and _CN_ID.fullmatch(text, window[0], window[1]))
                and _CARD_GROUPING.fullmatch(text[window[0] : window[1]])
            ):
                best = window
    return best


# ---------------------------------------------------------------- IBAN

# Country code, check digits, then 11 to 30 letters/digits, optionally in space-separated groups.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")


@functools.lru_cache(maxsize=256)
def _iban_length(country: str) -> int | None:
    """The length of ``country``'s IBANs from python-stdnum's registry (None: no IBAN country)."""
    from stdnum import numdb

    info = numdb.get("iban").info(country)
    bban = info[0][1].get("bban") if info and info[0][0] == country else None
    return None if not bban else 4 + sum(int(n) for n in re.findall(r"[0-9]+", bban))


def find_ibans(text: str) -> list[Span]:
    """IBANs, spaced in groups or not, valid by ``stdnum.iban`` (ISO 13616 mod 97 and the country's format).

    A country's IBANs have one length, so a candidate that runs on into following words
    (``GB82 WEST 1234 5698 7654 32 THANKS``) is cut to it and checked once.
    """
    spans = []
    at = 0
    while (m := _IBAN.search(text, at)) is not None:
        at = m.start() + 1  # an invalid candidate may have swallowed the start of the next IBAN
        length = _iban_length(m.group()[:2].upper())
        if length is None:
            continue
        end, kept = m.start(), 0
        while kept < length and end < m.end():
            kept += text[end] != " "
            end += 1
        if kept == length and (end == m.end() or text[end] == " ") and _iban.is_valid(text[m.start() : end]):
            spans.append(Span(m.start(), end, "IBAN"))
            at = end
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
            # 12/05/1985 and 12/05/85, day or month first
            rf"{_DAY}([-/.]){_MONTH}\2(?:{_YEAR}|[0-9]{{2}})|{_MONTH}([-/.]){_DAY}\3(?:{_YEAR}|[0-9]{{2}})",
            rf"{_DAY}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS},?\s+{_YEAR}",  # 5 March 1985, 5th of Mar 1985
            rf"{_MONTHS}\s+{_DAY}(?:st|nd|rd|th)?,?\s+{_YEAR}",  # March 5, 1985
        ]
    )
    + r")(?![0-9])",
    re.IGNORECASE,
)
_BIRTH_CUE = re.compile(
    r"\b(?:born|birth\s*date|date\s+of\s+birth|d\.?o\.?b\.?|birthday|b-day)\b"
    r"|出生日期|出生年月日?|出生于|出生|生日|生于|诞生",
    re.IGNORECASE,
)
_CUES_AFTER_DATE = ("出生", "诞生")  # "1985年5月12日出生": these may follow the date they tell of
_DATE_AFTER_CUE = 40  # most characters from a cue to the date it introduces: "born on", "DOB:", "my birthday is"
_DATE_BEFORE_CUE = 12  # "1985年5月12日出生": Chinese may put the cue after the date


def find_dobs(text: str) -> list[Span]:
    """Dates (with a year; English and Chinese formats) next to a birth cue: the nearest date after it, or,
    for 出生/诞生, just before it (``1985年5月12日出生``), whichever is closer.

    A date alone is not personal data (``transferred on 12/05/2023``); the date a cue such as "born", "DOB",
    "date of birth", "birthday", "出生日期" or "生日" introduces is. Other dates in the text are left alone.
    A placeholder nearer to the cue than any date has taken the cue's date already: without this rule,
    redacting "born on 04.03.1992, on 2023-05-17" twice redacted the second date too.
    """
    if not _BIRTH_CUE.search(text):
        return []
    dates = [(m.start(), m.end(), True) for m in _DATE.finditer(text)]
    if not dates:
        return []
    dates = sorted(dates + [(m.start(), m.end(), False) for m in _MASKED.finditer(text)])
    starts = [d[0] for d in dates]
    found: set[tuple[int, int]] = set()
    for cue in _BIRTH_CUE.finditer(text):
        # (gap in characters, is-after, date): the closest wins, a date before the cue on a tie. Found by
        # bisection, so a long text of many cues and dates costs n log n, not cues x dates.
        near = []
        i = bisect.bisect_left(starts, cue.end())
        if i < len(dates) and dates[i][0] - cue.end() <= _DATE_AFTER_CUE:
            near.append((dates[i][0] - cue.end(), 1, dates[i]))
        if cue.group() in _CUES_AFTER_DATE:
            j = bisect.bisect_left(starts, cue.start()) - 1
            if j >= 0 and 0 <= cue.start() - dates[j][1] <= _DATE_BEFORE_CUE:
                near.append((cue.start() - dates[j][1], 0, dates[j]))
        if near and min(near)[2][2]:
            found.add(min(near)[2][:2])
    return [Span(start, end, "DOB") for start, end in sorted(found)]
