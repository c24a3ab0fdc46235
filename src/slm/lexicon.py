"""The industry dictionary: canonical domain terms and their aliases, found in text.

One file format for every use (the monitor's entities now, tokenizer terms later). A text file,
one entry per line, a line starting with ``#`` is a comment::

    AAPL | $AAPL | Apple | Apple Inc. | 苹果
    Federal Reserve | Fed | FOMC
    interest rate swap

The first field is the canonical name and also an alias. CSV/TSV files with ``entity`` and
``alias`` columns, and JSON objects ``{"AAPL": ["$AAPL", "Apple"]}``, hold the same thing.

Matching rules (documented in the README): an alias written without lower-case letters (tickers
and acronyms: ``AAPL``, ``GE``, ``$TSLA``) matches its exact case; any other alias matches any
case. An alias that begins or ends with an ASCII letter or digit must not touch another one there
(``GE`` is not found in ``GENERAL``); Chinese and other scripts without spaces match anywhere.
Overlapping aliases resolve to the leftmost, then longest, one. Aliases are stored with single
space: any whitespace character in the text matches a space of an alias. Matching is one
Aho-Corasick pass (pyahocorasick) over the lower-cased text.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from slm.errors import ConfigError, DataError

MAX_ALIAS_CHARS = 200
_ASCII_WORD = re.compile(r"[A-Za-z0-9]")
_SPACES = {ord(c): " " for c in "\t\n\r\x0b\x0c\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"}
_SPACES.update({code: " " for code in range(0x2000, 0x200B)})  # the Unicode spaces U+2000..U+200A


@dataclass(frozen=True)
class Match:
    """One alias found in a text: the canonical term it stands for and where it is."""

    canonical: str
    alias: str
    start: int
    end: int


class Lexicon:
    """Canonical terms with their aliases, and one compiled pattern that finds them all."""

    def __init__(self, terms: Mapping[str, Iterable[str]]) -> None:
        self.terms: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for canonical, aliases in terms.items():
            canonical = _clean(canonical, "term")
            unique: list[str] = []
            for alias in (canonical, *aliases):
                alias = _clean(alias, f"alias of '{canonical}'")
                key = _fold(alias)
                if key in owner and owner[key] != canonical:
                    raise ConfigError(f"lexicon: alias '{alias}' belongs to both '{owner[key]}' and '{canonical}'")
                if key not in owner:
                    owner[key] = canonical
                    unique.append(alias)
            self.terms[canonical] = (*self.terms.get(canonical, ()), *unique)
        self._owner = owner
        self._automaton = _automaton(self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def __repr__(self) -> str:
        return f"Lexicon({len(self.terms)} terms, {sum(map(len, self.terms.values()))} aliases)"

    @property
    def aliases(self) -> list[str]:
        """Every alias, canonical names included, in file order."""
        return [a for aliases in self.terms.values() for a in aliases]

    def find(self, text: str) -> list[Match]:
        """Every alias occurrence in ``text``, left to right, longest first where they overlap."""
        if self._automaton is None or not text:
            return []
        folded, where = _normalise(text)
        found = []  # (start, -length, canonical, alias) of every alias that fits its case and boundaries
        for last, (key, canonical, exact, ascii_start, ascii_end, alias) in self._automaton.iter(folded):
            first = last - len(key) + 1
            start, end = (first, last + 1) if where is None else (where[first], where[last] + 1)
            original = text[start:end]
            if exact and " ".join(original.split()) != alias:
                continue
            if ascii_start and start > 0 and _ASCII_WORD.match(text[start - 1]):
                continue
            if ascii_end and end < len(text) and _ASCII_WORD.match(text[end]):
                continue
            found.append((start, start - end, canonical, original, end))
        matches, reached = [], 0
        for start, _, canonical, original, end in sorted(found):
            if start >= reached:
                matches.append(Match(canonical, original, start, end))
                reached = end
        return matches

    def entities(self, text: str) -> list[str]:
        """The canonical terms ``text`` mentions, each once, in order of first mention."""
        return list(dict.fromkeys(m.canonical for m in self.find(text)))

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        """Read a lexicon file (.txt, .csv, .tsv or .json); DataError naming the line when it is malformed."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"lexicon {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"lexicon {path} is not UTF-8 text") from None
        suffix = path.suffix.lower()
        try:
            if suffix == ".json":
                terms = _from_json(text)
            elif suffix in (".csv", ".tsv"):
                terms = _from_table(text, "\t" if suffix == ".tsv" else ",")
            else:
                terms = _from_lines(text)
            lexicon = cls(terms)
        except (ConfigError, DataError) as exc:
            raise DataError(f"lexicon {path}: {str(exc).removeprefix('lexicon: ')}") from None
        if not lexicon.terms:
            raise DataError(f"lexicon {path} has no terms")
        return lexicon


def _fold(alias: str) -> str:
    return alias if _exact_case(alias) else alias.casefold()


def _exact_case(alias: str) -> bool:
    return alias != alias.casefold() and not any(c.islower() for c in alias)


def _clean(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{what} must be text, got {type(value).__name__}")
    value = " ".join(value.split())
    if not value:
        raise DataError(f"empty {what}")
    if len(value) > MAX_ALIAS_CHARS:
        raise DataError(f"{what} is longer than {MAX_ALIAS_CHARS} characters: '{value[:40]}...'")
    return value


def _automaton(terms: dict[str, tuple[str, ...]]):
    """An Aho-Corasick automaton over the aliases, lower-cased with single spaces (pyahocorasick)."""
    try:
        import ahocorasick
    except ImportError:
        raise ConfigError("the lexicon needs pyahocorasick: pip install 'slm[monitor]'") from None
    if not any(terms.values()):
        return None
    automaton = ahocorasick.Automaton()
    for canonical, aliases in terms.items():
        for alias in aliases:
            key = _normalise(alias)[0]
            previous = automaton.get(key, None)
            entry = (key, canonical, _exact_case(alias), bool(_ASCII_WORD.match(alias[0])),
                     bool(_ASCII_WORD.match(alias[-1])), alias)  # fmt: skip
            if previous is None or (previous[2] and not entry[2]):  # a case-insensitive alias covers more
                automaton.add_word(key, entry)
    automaton.make_automaton()
    return automaton


def _normalise(text: str) -> tuple[str, list[int] | None]:
    """``text`` lower-cased with every whitespace character as a space, and each character's original
    index (None when they are the same length: all but a few scripts, without a Python loop)."""
    lowered = text.lower().translate(_SPACES)
    if len(lowered) == len(text):
        return lowered, None
    out, where = [], []
    for index, char in enumerate(text):
        lower = " " if char.isspace() else char.lower()
        out.append(lower if len(lower) == 1 else char)
        where.append(index)
    return "".join(out), where


def _from_lines(text: str) -> dict[str, list[str]]:
    terms: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if any(not f for f in fields):
            raise DataError(f"line {number} has an empty field: '{line}'")
        terms.setdefault(fields[0], []).extend(fields[1:])
    return terms


def _from_table(text: str, delimiter: str) -> dict[str, list[str]]:
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or not {"entity", "alias"} <= set(rows[0]):
        raise DataError("a lexicon table needs 'entity' and 'alias' columns")
    terms: dict[str, list[str]] = {}
    for number, row in enumerate(rows, 2):
        entity, alias = (row.get("entity") or "").strip(), (row.get("alias") or "").strip()
        if not entity:
            raise DataError(f"row {number} has no entity")
        terms.setdefault(entity, []).extend([alias] if alias else [])
    return terms


def _from_json(text: str) -> dict[str, list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise DataError('JSON lexicon must be an object {"term": ["alias", ...]}')
    terms = {}
    for canonical, aliases in data.items():
        if isinstance(aliases, str):
            aliases = [aliases]
        if not isinstance(aliases, list):
            raise DataError(f"aliases of '{canonical}' must be a list of strings")
        terms[canonical] = aliases
    return terms
