"""Trim a bundle's vocabulary to a domain corpus: keep the tokens the corpus uses, drop the rest.

A multilingual encoder spends most of its weights on the embedding table (multilingual-e5-small:
96M of 118M parameters for 250k tokens), and one domain in one language uses a few thousand of
those tokens. Trimming keeps every token the tokenizer produces on the corpus, the single
characters the corpus contains (so unseen words still split into known pieces), the special and
added tokens, and a reserve of the tokenizer's most frequent tokens; it renumbers the tokenizer
and slices the embedding table of every component (PyTorch and ONNX) the same way.

A text whose tokens were all kept is tokenized exactly as before (greedy WordPiece and Viterbi
Unigram both only ever lose paths they did not take), so its prediction is unchanged; the
bundle is refused unless that holds on a sample of the corpus. Other texts re-split into kept
pieces, which is where accuracy can move: measure it on held-out data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from slm.bundle.schema import Manifest, OnnxSpec, TransformerSpec
from slm.compression.vocabulary import token_ids, trim_embeddings, trim_tokenizer
from slm.errors import ConfigError, ModelError
from slm.models.weights import word_embedding_key

log = logging.getLogger(__name__)

DEFAULT_RESERVE = 1000
CHECK_TEXTS = 256


def reserve_ids(tokenizer: dict, count: int) -> set[int]:
    """The ``count`` most frequent tokens: highest Unigram score, or lowest WordPiece id (BERT order)."""
    vocab = tokenizer["model"]["vocab"]
    if count <= 0:
        return set()
    if isinstance(vocab, dict):
        return {i for i in sorted(vocab.values())[:count]}
    order = np.argsort([-score for _piece, score in vocab], kind="stable")
    return {int(i) for i in order[:count]}


def corpus_ids(tokenizer: dict, texts: list[str]) -> set[int]:
    """Ids the tokenizer emits on ``texts``, plus the single-character pieces of their characters."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tokenizer))
    used: set[int] = set()
    for encoding in tok.encode_batch(texts, add_special_tokens=True):
        used.update(encoding.ids)
    ids = token_ids(tokenizer)
    prefix = tokenizer["model"].get("continuing_subword_prefix") or "##"
    for char in {c for text in texts for c in (tok.normalizer.normalize_str(text) if tok.normalizer else text)}:
        for piece in (char, prefix + char, "▁" + char):
            if piece in ids:
                used.add(ids[piece])
    return used


def choose_kept(tokenizer: dict, texts: list[str], reserve: int) -> list[int]:
    """Sorted ids to keep for ``texts``: corpus tokens, their characters, specials, added tokens, reserve."""
    if not texts:
        raise ConfigError("the domain corpus for --trim-vocab has no texts")
    keep = corpus_ids(tokenizer, texts) | reserve_ids(tokenizer, reserve)
    keep |= {token["id"] for token in tokenizer.get("added_tokens", [])}
    return sorted(keep)


def _trim_safetensors(source: Path, target: Path, keep: np.ndarray) -> tuple[int, int]:
    """Slice the word-embedding table of a classifier's safetensors file."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(source))
    key = word_embedding_key(tensors, source)
    table = tensors[key]
    tensors[key] = np.ascontiguousarray(table[keep])
    save_file(tensors, str(target), metadata={"format": "pt"})
    return int(table.shape[0]), int(len(keep))


def _trim_config(path: Path, keep: np.ndarray) -> None:
    config = json.loads(path.read_text())
    new_id = {int(old): new for new, old in enumerate(keep)}
    config["vocab_size"] = int(len(keep))
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        if isinstance(config.get(key), int) and config[key] in new_id:
            config[key] = new_id[config[key]]
    if isinstance(config.get("slm_new_tokens_from"), int):  # first added domain term: the order is kept
        config["slm_new_tokens_from"] = int(np.searchsorted(keep, config["slm_new_tokens_from"]))
    path.write_text(json.dumps(config, indent=2) + "\n")


def _component_logits(root: Path, manifest: Manifest, name: str, texts: list[str]) -> np.ndarray:
    components = manifest.components
    if name == "onnx" and components.onnx is not None:
        from slm.runtime.onnx import OnnxComponent

        return OnnxComponent(root, components.onnx).logits(texts)
    if name == "transformer" and components.transformer is not None:
        from slm.training.component import TransformerComponent

        return TransformerComponent(root, components.transformer, len(manifest.labels or [])).logits(texts)
    raise ConfigError(f"{root} has no {name} component")


def trim_to_corpus(bundle: str | Path, output: str | Path, texts: list[str], *, reserve: int = DEFAULT_RESERVE,
                   corpus: str | None = None) -> Manifest:  # fmt: skip
    """Write a copy of ``bundle`` whose vocabulary holds only what ``texts`` need (plus ``reserve``).

    Both the PyTorch (``transformer``) and fp32 ONNX (``onnx``) components are trimmed; an int8
    component is refused (trim first, then quantize). Nothing is written unless every component's
    logits on a sample of ``texts`` equal the parent's.
    """
    from slm.bundle.derive import derive_bundle
    from slm.bundle.manifest import read_manifest
    from slm.fileio import write_text_atomic

    if reserve < 0:
        raise ConfigError("--vocab-reserve must be >= 0")
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    torch_spec, onnx_spec = manifest.components.transformer, manifest.components.onnx
    components: dict[str, TransformerSpec | OnnxSpec] = {
        name: spec for name, spec in (("transformer", torch_spec), ("onnx", onnx_spec)) if spec is not None
    }
    if not components:
        raise ConfigError(f"{bundle} has no transformer to trim")
    if onnx_spec is not None and (onnx_spec.precision or "fp32") != "fp32":
        raise ConfigError(
            f"{bundle} is already quantized: trim its fp32 parent, then quantize (--trim-vocab --quantize)"
        )
    tokenizer_dirs = {spec.tokenizer for spec in components.values()}
    if len(tokenizer_dirs) != 1:
        raise ConfigError(f"{bundle}: its components use different tokenizers; trim each bundle separately")
    tokenizer_file = Path(tokenizer_dirs.pop()) / "tokenizer.json"
    tokenizer = json.loads((bundle / tokenizer_file).read_text(encoding="utf-8"))
    kept = choose_kept(tokenizer, texts, reserve)
    size = len(token_ids(tokenizer))
    drop = sorted(set(range(size)) - set(kept))
    if not drop:
        raise ConfigError("the corpus uses the whole vocabulary: nothing to trim")
    trimmed, keep = trim_tokenizer(tokenizer, drop)
    sample = texts[:: max(1, len(texts) // CHECK_TEXTS)][:CHECK_TEXTS]
    log.info(f"trimming the vocabulary to {len(keep):,} of {size:,} tokens ({len(texts):,} corpus texts)")

    def change(staging: Path, new: Manifest) -> Manifest:
        write_text_atomic(staging / tokenizer_file, json.dumps(trimmed, ensure_ascii=False))
        rows = {}
        for name, spec in components.items():
            if isinstance(spec, OnnxSpec):
                rows[name] = trim_embeddings(bundle / spec.file, staging / spec.file, keep)
            else:
                rows[name] = _trim_safetensors(bundle / spec.weights, staging / spec.weights, keep)
                _trim_config(staging / spec.config, keep)
        diff = 0.0
        for name in components:
            reference = _component_logits(bundle, manifest, name, sample)
            candidate = _component_logits(staging, new, name, sample)
            diff = max(diff, float(np.abs(reference - candidate).max()))
        if diff > 1e-4:
            raise ModelError(f"vocabulary trimming changed the model's outputs on corpus texts (by {diff:.1e}); "
                             "nothing written")  # fmt: skip
        before, after = next(iter(rows.values()))
        record = {
            "rule": "domain corpus", "corpus": corpus, "corpus_texts": len(texts), "reserve": reserve,
            "tokens_before": size, "tokens_kept": int(len(keep)), "rows_before": before, "rows_after": after,
            "components": sorted(components), "max_logit_change": diff, "texts_checked": len(sample),
        }  # fmt: skip
        for part in (new.components.transformer, new.components.onnx):
            if part is not None:
                part.trim_vocab = record
        new.compression = {**(new.compression or {}), "trim_vocab": record}
        return new

    return derive_bundle(bundle, output, change, step="trim-vocab")
