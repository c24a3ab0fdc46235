"""Realistic text perturbations for the robustness report: pure, seeded, deterministic functions.

Each perturbation rewrites one text the way real users' texts differ from clean training data: typing
slips, casing, dropped punctuation, stray whitespace and, for Chinese, the other width forms and
traditional characters. A text's randomness comes from ``(seed, perturbation, index)`` only, so the same
call gives the same texts on any machine and in any order.

Which perturbations fit a dataset is decided by its script (:func:`text_script`), never per text:

- alphabetic text (Latin, Cyrillic, Greek, ...): typos, lower case, UPPER CASE, punctuation removed,
  whitespace noise;
- Chinese (Han ideographs are most of the letters): half-width forms, full-width forms, traditional
  characters, punctuation removed, whitespace noise.

Typos never touch ideographs (a Chinese typing slip is a wrong homophone from the input method, which
needs a pinyin dictionary; not modelled), casing means nothing to them, and full-width Latin letters or
traditional characters do not occur in English text, so those are not applied across scripts.
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from slm.models.ngram import CJK_CLASS

ALPHABETIC = "alphabetic"
HAN = "han"

# A dataset is Chinese when at least this share of its letters are Han ideographs (sampled texts).
HAN_SHARE = 0.5
# Typos: each word of at least TYPO_MIN_LETTERS letters gets one slip with probability TYPO_RATE. One slip in
# ten words is about 2% of characters, the rate of unedited typing on phones and keyboards (chat, support
# tickets); most texts of ten words or more then carry at least one.
TYPO_RATE = 0.1
TYPO_MIN_LETTERS = 3
# Whitespace noise: each gap between words becomes a doubled space, a tab or a line break with this
# probability; in Chinese a space is inserted between two ideographs with HAN_SPACE_RATE; the text ends in a
# line break (as pasted) with TRAILING_RATE.
WHITESPACE_RATE = 0.3
HAN_SPACE_RATE = 0.1
TRAILING_RATE = 0.3
# OpenCC's configuration for simplified -> traditional: Taiwan standard characters, character by character
# ("s2tw": 为 -> 為, 吃 stays 吃), not its phrase table ("s2twp" also swaps vocabulary: 软件 -> 軟體).
OPENCC_CONFIG = "s2tw.json"

_HAN = re.compile(CJK_CLASS)
_WORD = re.compile(r"[^\W\d_]+")  # runs of letters
_GAP = re.compile(r"\s+")
_HAN_PAIR = re.compile(rf"(?<={CJK_CLASS})(?={CJK_CLASS})")
_SPACES = re.compile(r" {2,}")
_FULLWIDTH_OFFSET = 0xFEE0  # U+FF01..U+FF5E are the full-width forms of ASCII U+0021..U+007E
_IDEOGRAPHIC_SPACE = "\u3000"


@dataclass(frozen=True)
class Perturbation:
    """One way of rewriting a text: its name in reports, what it does, and the scripts it fits."""

    name: str
    description: str
    scripts: frozenset[str]
    apply: Callable[[str, random.Random], str]


def _typo(word: str, rng: random.Random) -> str:
    """One slip inside ``word``: two adjacent letters swapped, a letter dropped or a letter doubled."""
    kind = rng.choice(("swap", "drop", "duplicate"))
    if kind == "swap":
        i = rng.randrange(len(word) - 1)
        if word[i] != word[i + 1]:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        kind = "drop"  # swapping a doubled letter changes nothing
    i = rng.randrange(len(word))
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    return word[: i + 1] + word[i] + word[i + 1 :]


def typos(text: str, rng: random.Random) -> str:
    """Typing slips in about one word in ten (words of 3+ letters; ideographs and digits never)."""

    def slip(match: re.Match[str]) -> str:
        word = match.group()
        if len(word) < TYPO_MIN_LETTERS or _HAN.search(word) or rng.random() >= TYPO_RATE:
            return word
        return _typo(word, rng)

    return _WORD.sub(slip, text)


def lowercase(text: str, rng: random.Random) -> str:
    """all lower case."""
    return text.lower()


def uppercase(text: str, rng: random.Random) -> str:
    """ALL UPPER CASE."""
    return text.upper()


def no_punctuation(text: str, rng: random.Random) -> str:
    """Every punctuation character (Unicode category P*, CJK and full-width included) removed; the spaces
    a removal leaves doubled are closed up. Symbols ($, %, +) stay."""
    kept = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return _SPACES.sub(" ", kept).strip(" ")


def whitespace(text: str, rng: random.Random) -> str:
    """Doubled spaces, tabs and line breaks between words; spaces between ideographs; a trailing line break."""

    def gap(match: re.Match[str]) -> str:
        if rng.random() >= WHITESPACE_RATE:
            return match.group()
        return rng.choice(("  ", "\t", "\n", " \n "))

    noisy = _GAP.sub(gap, text)
    noisy = _HAN_PAIR.sub(lambda _: " " if rng.random() < HAN_SPACE_RATE else "", noisy)
    return noisy + "\n" if rng.random() < TRAILING_RATE else noisy


def halfwidth(text: str, rng: random.Random) -> str:
    """Full-width forms to their ASCII (half-width) letters, digits and punctuation: ，！？（） -> ,!?(), as
    typed with the input method's half-width punctuation; the ideographic space to a space."""
    return "".join(
        chr(ord(c) - _FULLWIDTH_OFFSET) if "\uff01" <= c <= "\uff5e" else (" " if c == _IDEOGRAPHIC_SPACE else c)
        for c in text
    )


def fullwidth(text: str, rng: random.Random) -> str:
    """ASCII letters, digits and punctuation to their full-width forms (ＡＢＣ１２３，), as typed in the input
    method's full-width mode; spaces to ideographic spaces."""
    return "".join(
        chr(ord(c) + _FULLWIDTH_OFFSET) if "!" <= c <= "~" else (_IDEOGRAPHIC_SPACE if c == " " else c) for c in text
    )


@functools.cache
def _converter() -> Callable[[str], str] | None:
    """OpenCC's simplified -> traditional converter, or None when the ``opencc`` package is absent."""
    try:
        import opencc
    except ImportError:
        return None
    convert: Callable[[str], str] = opencc.OpenCC(OPENCC_CONFIG).convert
    return convert


def traditional_available() -> bool:
    """Whether simplified -> traditional conversion can run (the ``opencc`` package, in slm[train])."""
    return _converter() is not None


def traditional(text: str, rng: random.Random) -> str:
    """Simplified Chinese characters to traditional (Taiwan standard forms, OpenCC ``s2tw``); other text stays."""
    convert = _converter()
    if convert is None:
        raise RuntimeError("simplified -> traditional conversion needs the opencc package (pip install 'slm[train]')")
    return convert(text)


_ALL = (
    Perturbation("typos", "a letter swapped, dropped or doubled in ~1 word in 10", frozenset({ALPHABETIC}), typos),
    Perturbation("lowercase", "all lower case", frozenset({ALPHABETIC}), lowercase),
    Perturbation("uppercase", "ALL UPPER CASE", frozenset({ALPHABETIC}), uppercase),
    Perturbation("halfwidth", "full-width forms to half-width (，！？ -> ,!?)", frozenset({HAN}), halfwidth),
    Perturbation("fullwidth", "half-width letters, digits, punctuation to full-width", frozenset({HAN}), fullwidth),
    Perturbation("traditional", "simplified to traditional characters (OpenCC s2tw)", frozenset({HAN}), traditional),
    Perturbation("no_punctuation", "punctuation removed", frozenset({ALPHABETIC, HAN}), no_punctuation),
    Perturbation(
        "whitespace", "doubled spaces, tabs, line breaks between words", frozenset({ALPHABETIC, HAN}), whitespace
    ),
)
PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in _ALL}


def text_script(texts: Sequence[str], max_texts: int = 2000) -> str:
    """``"han"`` when Han ideographs are at least half the letters of (an even sample of) ``texts``, else
    ``"alphabetic"``: the perturbations that fit follow from it."""
    sample = "".join(texts[:: max(1, len(texts) // max_texts)])
    letters = sum(c.isalpha() for c in sample)
    han = len(_HAN.findall(sample))
    return HAN if letters and han / letters >= HAN_SHARE else ALPHABETIC


def perturbations_for(script: str) -> list[str]:
    """The perturbations that fit a dataset of ``script``, in report order."""
    return [p.name for p in _ALL if script in p.scripts]


def perturb(texts: Sequence[str], name: str, seed: int) -> list[str]:
    """``texts`` rewritten by perturbation ``name``; text ``i`` depends on ``(seed, name, i)`` only."""
    try:
        perturbation = PERTURBATIONS[name]
    except KeyError:
        raise ValueError(f"unknown perturbation {name!r}; expected one of {', '.join(PERTURBATIONS)}") from None
    # random.Random seeded with a str hashes it with SHA-512: the same stream on every run and platform.
    return [perturbation.apply(text, random.Random(f"{seed}:{name}:{i}")) for i, text in enumerate(texts)]
