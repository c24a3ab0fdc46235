"""Is a question in a language the assistant was built for? If not, it hands off instead of guessing.

Two signals, both learnt from the assistant's own training text at build time:

- **scripts**: the Unicode scripts (Latin, Cyrillic, CJK, ...) of the training text; a question
  whose letters are mostly in another script is foreign;
- **language identification** (py3langid, a maintained fork of langid.py, model inside the package)
  with a **known-word ratio**: a question is foreign when langid is confident it is in a language the
  training text is not, and most of its words never occur in the training vocabulary. Requiring
  both keeps short in-domain questions ("pin blocked": Swedish to langid) in scope.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

WORD = re.compile(r"\w+", re.UNICODE)
LANGID_CONFIDENCE = 0.85
KNOWN_WORDS_MIN = 0.5
MIN_WORDS = 3
LANGUAGE_SHARE = 0.05  # a language must cover this share of training texts to count as supported
SCRIPT_SHARE = 0.01
MAX_VOCABULARY = 50_000


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """langid's language code and normalised probability."""
    language, probability = _identifier().classify(text)
    return str(language), float(probability)


def script_of(char: str) -> str | None:
    """The Unicode script family of a letter ('LATIN', 'CYRILLIC', 'CJK', ...), None for non-letters."""
    if not char.isalpha():
        return None
    try:
        name = unicodedata.name(char)
    except ValueError:
        return None
    first = name.split()[0]
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA") else first


def scripts(text: str) -> Counter[str]:
    return Counter(s for s in map(script_of, text) if s)


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text) if not w.isdigit()]


@dataclass
class LanguageProfile:
    """The languages, scripts and vocabulary of the texts an assistant was built from."""

    languages: list[str]
    scripts: list[str]
    vocabulary: set[str] = field(default_factory=set)

    @classmethod
    def fit(cls, texts: list[str]) -> LanguageProfile:
        language_counts = Counter(identify(t)[0] for t in texts if len(words(t)) >= MIN_WORDS)
        n = max(sum(language_counts.values()), 1)
        languages = sorted(lang for lang, count in language_counts.items() if count / n >= LANGUAGE_SHARE)
        script_counts: Counter[str] = Counter()
        for t in texts:
            script_counts.update(scripts(t))
        total = max(sum(script_counts.values()), 1)
        kept = sorted(s for s, count in script_counts.items() if count / total >= SCRIPT_SHARE)
        vocabulary = Counter(w for t in texts for w in words(t))
        return cls(languages, kept, {w for w, _ in vocabulary.most_common(MAX_VOCABULARY)})

    def check(self, text: str) -> str | None:
        """None when the question looks supported, else a one-line reason for handing it off."""
        found = scripts(text)
        if found:
            letters = sum(found.values())
            foreign = sum(count for script, count in found.items() if script not in self.scripts)
            if foreign / letters > 0.5:
                main = found.most_common(1)[0][0].title()
                return f"written in {main} script, which the assistant was not built for"
        tokens = words(text)
        if len(tokens) < MIN_WORDS or not self.languages:
            return None
        language, probability = identify(text)
        if language in self.languages or probability < LANGID_CONFIDENCE:
            return None
        known = sum(t in self.vocabulary for t in tokens) / len(tokens)
        if known >= KNOWN_WORDS_MIN:
            return None
        built_for = ", ".join(self.languages)
        return f"looks like language '{language}' (p={probability:.2f}); the assistant was built for {built_for}"

    def to_dict(self) -> dict:
        return {"languages": self.languages, "scripts": self.scripts, "vocabulary": sorted(self.vocabulary)}

    @classmethod
    def from_dict(cls, data: dict) -> LanguageProfile:
        return cls(list(data["languages"]), list(data["scripts"]), set(data.get("vocabulary", [])))
