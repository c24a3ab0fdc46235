"""Teach a base model an industry dictionary: each domain term becomes one whole token.

A term the tokenizer splits into several pieces (``麻辣香锅`` -> ``麻辣`` ``香`` ``锅``) is added as a
token of its own, and its embedding starts as the mean of those pieces' embeddings, so the model
begins from what it already knew about the term. The result is a new Hugging Face directory that
training reads like any base model; the bundle's tokenizer carries the terms from then on. The
config's ``slm_new_tokens_from`` marks the new rows, which keep training while the pretrained table
stays frozen (``slm.models.encoder.TermEmbedding``). The dictionary is :class:`slm.lexicon.Lexicon`
(the monitor's entity dictionary format).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from slm.errors import ConfigError, ModelError
from slm.models.encoder import NEW_TOKENS_ATTR

# Terms made of Latin letters or digits at both ends only match as whole words ("atm" not in "atmosphere").
WORDLIKE = re.compile(r"^[0-9A-Za-z].*[0-9A-Za-z]$|^[0-9A-Za-z]$")


@dataclass
class TermsReport:
    """What adding a dictionary did to the tokenizer."""

    lexicon: str
    surface_forms: int
    added: list[str] = field(default_factory=list)
    already_single: int = 0
    mean_tokens_before: float | None = None
    mean_tokens_after: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["added_tokens"] = len(self.added)
        out["added"] = self.added[:50]
        return out


def surface_forms(path: str | Path) -> list[str]:
    """Every canonical term and alias of a dictionary file, in file order, without duplicates."""
    from slm.lexicon import Lexicon

    forms = [f.strip() for f in dict.fromkeys(Lexicon.load(Path(path)).aliases) if f and f.strip()]
    if not forms:
        raise ConfigError(f"{path}: the dictionary has no terms")
    return forms


def mean_tokens(tokenizer, texts: list[str]) -> float:
    """Mean number of tokens per text (special tokens excluded)."""
    if not texts:
        return 0.0
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return float(np.mean([len(ids) for ids in encoded]))


def _pieces(tokenizer, form: str) -> list[int]:
    """The ids a form splits into, without a bare word-start marker (``▁``), which carries no meaning."""
    ids = tokenizer(form, add_special_tokens=False)["input_ids"]
    bare = {tokenizer.convert_tokens_to_ids(marker) for marker in ("▁", "Ġ")} - {tokenizer.unk_token_id}
    return [i for i in ids if i not in bare] or ids


def add_domain_terms(base: Path, lexicon: str | Path, target: Path, texts: list[str] | None = None) -> TermsReport:
    """Write ``base`` + the dictionary's multi-piece terms as whole tokens into the directory ``target``.

    ``texts`` (the training texts) measure mean tokens per text with and without the terms.
    """
    from safetensors.numpy import load_file, save_file
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from slm.models.weights import word_embedding_key

    forms = surface_forms(lexicon)
    tokenizer = AutoTokenizer.from_pretrained(base)
    normalizer = tokenizer.backend_tokenizer.normalizer
    report = TermsReport(lexicon=str(lexicon), surface_forms=len(forms))
    if texts:
        report.mean_tokens_before = round(mean_tokens(tokenizer, texts), 3)
    first_new = len(tokenizer)
    existing = set(tokenizer.get_vocab())
    new_terms: dict[str, list[int]] = {}
    for form in forms:
        content = normalizer.normalize_str(form) if normalizer is not None else form
        pieces = _pieces(tokenizer, form)
        if len(pieces) <= 1 or content in existing or content in new_terms:
            report.already_single += 1
            continue
        new_terms[content] = pieces
    if not new_terms:
        raise ConfigError(f"{lexicon}: every term is already a single token; nothing to add")
    tokenizer.add_tokens([AddedToken(t, single_word=bool(WORDLIKE.match(t)), normalized=True) for t in new_terms])
    report.added = list(new_terms)
    weights = sorted(Path(base).glob("*.safetensors"))
    if len(weights) != 1:
        raise ModelError(f"{base}: expected one safetensors weight file, found {len(weights)}")
    tensors = load_file(str(weights[0]))
    key = word_embedding_key(tensors, base, ModelError)
    table = tensors[key]
    rows = max(table.shape[0], len(tokenizer))
    grown = np.zeros((rows, table.shape[1]), dtype=table.dtype)
    grown[: table.shape[0]] = table
    for term, pieces in new_terms.items():
        grown[tokenizer.convert_tokens_to_ids(term)] = table[pieces].mean(axis=0)
    tensors[key] = grown
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    save_file(tensors, str(target / weights[0].name), metadata={"format": "pt"})
    config = json.loads((Path(base) / "config.json").read_text())
    config["vocab_size"] = int(rows)
    config[NEW_TOKENS_ATTR] = int(first_new)  # these rows keep training while the table is frozen
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(target)
    if texts:
        report.mean_tokens_after = round(mean_tokens(tokenizer, texts), 3)
    return report
