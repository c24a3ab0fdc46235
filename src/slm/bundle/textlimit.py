"""How much of one text a model reads: a single cut, before tokenizing, that every prediction goes through.

Tokenizers normalise and split the whole string before they truncate to ``max_length`` tokens, and the
n-gram baseline counts every n-gram of it: one 20 MB text took 3.4 GB of memory (issue 21). So
:meth:`slm.runtime.bundle.Bundle.predict_proba` (which ``slm predict``, ``slm serve``, the monitor, the Ray
path and the Python API all call) cuts each text to :func:`text_limit` first, with :func:`cut_texts`.

Why the cut does not change what a transformer reads on ordinary text: no token covers more than 100
characters, except WordPiece's ``[UNK]`` for a word of more than 100 characters
(``max_input_chars_per_word``; SentencePiece pieces are far shorter). So ``100 * (max_length + 1)``
non-whitespace characters hold at least ``max_length`` whole tokens before the word the cut splits.
Whitespace is not counted (runs of spaces or blank lines make no tokens), up to a hard cap of RAW_FACTOR
times the limit in raw characters. Only a text whose first ``max_length`` tokens include words of over
100 characters, or more whitespace than that cap, can read differently. Measured on 49,401 real texts
(BANKING77, CLINC150, finance tweets, Symptom2Disease, waimai) with the MiniLM tokenizer: the first 48
tokens span at most 6.0 characters per token, and no token more than 19.

The n-gram baseline has no token limit; it shares the cut, which is never below MIN_TOKENS tokens'
worth (51,300 non-whitespace characters), far beyond ordinary texts (the longest of those corpora:
6,135 characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The longest word WordPiece splits into pieces (``max_input_chars_per_word``); a longer one is one [UNK].
CHARS_PER_TOKEN = 100
# The cut is never shorter than this many tokens' worth: the position tables of the encoders slm trains
# (MiniLM, multilingual-e5) hold 512 tokens, and the n-gram baseline reads whole texts.
MIN_TOKENS = 512
# Whitespace is free up to this many raw characters per counted one: the cap that bounds a text of spaces.
RAW_FACTOR = 4
_WORD = re.compile(r"\S+")


def text_limit(max_length: int | None = None) -> int:
    """Non-whitespace characters kept of each text for a model reading ``max_length`` tokens."""
    return CHARS_PER_TOKEN * (max(int(max_length or 0), MIN_TOKENS) + 1)


def cut_text(text: str, limit: int) -> str:
    """``text`` up to its ``limit``-th non-whitespace character (at most ``RAW_FACTOR * limit`` characters).

    A text no longer than ``limit`` is returned as it is (the same object: no copy on ordinary input).
    The scan stops at the cut, so a 200 MB text costs what its first few hundred kilobytes cost.
    """
    if len(text) <= limit:
        return text
    cap = RAW_FACTOR * limit
    seen = 0
    for word in _WORD.finditer(text, 0, cap):
        start, end = word.span()
        if seen + end - start >= limit:
            return text[: start + limit - seen]
        seen += end - start
    return text[:cap]


def cut_texts(texts: Iterable[object], limit: int) -> list[str]:
    """Every text as ``str``, cut with :func:`cut_text`."""
    return [cut_text(text if isinstance(text, str) else str(text), limit) for text in texts]
