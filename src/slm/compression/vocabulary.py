"""Trim a bundle's vocabulary: drop embedding rows the tokenizer can never produce, remap the ids.

BERT WordPiece vocabularies carry tokens no text can reach through BERT's own normalizer and
pre-tokenizer: ``[unused0]`` ... (never matched: brackets are split off as punctuation), and
multi-character pieces containing punctuation or CJK characters (the pre-tokenizer isolates each
punctuation and CJK character as a word of its own). Dropping their rows is lossless and shrinks
the embedding table, the largest tensor of a small encoder. The same machinery (``trim_tokenizer``,
``trim_embeddings``) serves trimming to a domain corpus.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from pathlib import Path

import numpy as np

from slm.bundle.schema import Manifest
from slm.errors import ConfigError

UNUSED = re.compile(r"\[unused\d+\]")
# CJK ideograph blocks, as in BERT's BasicTokenizer._is_chinese_char.
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def _is_punctuation(char: str) -> bool:
    """BERT's rule: ASCII punctuation or any Unicode punctuation category."""
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def _is_cjk(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in CJK_RANGES)


def unreachable_ids(tokenizer: dict) -> list[int]:
    """Ids of vocabulary entries that BERT's normalizer + pre-tokenizer + WordPiece can never emit.

    Returns ``[]`` for any other tokenizer type: nothing is trimmed unless it is provably unreachable.
    """
    model = tokenizer.get("model") or {}
    normalizer = tokenizer.get("normalizer") or {}
    pre = tokenizer.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece" or pre.get("type") != "BertPreTokenizer":
        return []
    isolates_cjk = normalizer.get("type") == "BertNormalizer" and normalizer.get("handle_chinese_chars", True)
    prefix = model.get("continuing_subword_prefix", "##")
    special = {token["content"] for token in tokenizer.get("added_tokens", [])}
    out = []
    for token, token_id in model["vocab"].items():
        if token in special:
            continue
        continuation = token.startswith(prefix)
        body = token[len(prefix) :] if continuation else token
        single = len(body) == 1 and not continuation  # a lone punctuation / CJK character is a word itself
        if (
            UNUSED.fullmatch(token)
            or (not single and any(_is_punctuation(c) for c in body))
            or (isolates_cjk and not single and any(_is_cjk(c) for c in body))
        ):
            out.append(int(token_id))
    return sorted(out)


def token_ids(tokenizer: dict) -> dict[str, int]:
    """Every token of a ``tokenizer.json`` (model vocabulary and added tokens) with its id."""
    vocab = tokenizer["model"]["vocab"]
    ids = dict(vocab) if isinstance(vocab, dict) else {piece: i for i, (piece, _score) in enumerate(vocab)}
    ids.update({token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])})
    return ids


def trim_tokenizer(tokenizer: dict, drop: list[int]) -> tuple[dict, np.ndarray]:
    """A copy of a ``tokenizer.json`` without the ``drop`` ids, renumbered densely in the old order.

    Handles WordPiece (vocab dict) and Unigram (vocab list of ``[piece, score]``) models; added
    tokens past the model vocabulary (e.g. domain terms) keep their order too. Returns the copy and
    ``keep``: the old id of every new id (so ``new_table = old_table[keep]``).
    """
    model = tokenizer["model"]
    dropped = set(drop)
    special = {token["id"] for token in tokenizer.get("added_tokens", []) if token.get("special", True)}
    if dropped & special:
        raise ConfigError("cannot trim special tokens from the vocabulary")
    size = max([len(model["vocab"]) - 1, *(t["id"] for t in tokenizer.get("added_tokens", []))]) + 1
    keep = np.array([i for i in range(size) if i not in dropped], dtype=np.int64)
    new_id = {int(old): new for new, old in enumerate(keep)}
    trimmed = json.loads(json.dumps(tokenizer))
    if isinstance(model["vocab"], dict):
        trimmed["model"]["vocab"] = {t: new_id[i] for t, i in model["vocab"].items() if i not in dropped}
    else:
        trimmed["model"]["vocab"] = [entry for i, entry in enumerate(model["vocab"]) if i not in dropped]
        if trimmed["model"].get("unk_id") is not None:
            trimmed["model"]["unk_id"] = new_id[trimmed["model"]["unk_id"]]
    for token in trimmed.get("added_tokens", []):
        if token["id"] in dropped:
            raise ConfigError(f"cannot trim the added token {token['content']!r}")
        token["id"] = new_id[token["id"]]
    post = trimmed.get("post_processor") or {}
    for spec in (post.get("special_tokens") or {}).values():
        spec["ids"] = [new_id[i] for i in spec["ids"]]
    for key in ("cls", "sep"):  # BertProcessing stores [token, id] pairs
        if isinstance(post.get(key), list):
            post[key][1] = new_id[post[key][1]]
    padding = trimmed.get("padding")
    if isinstance(padding, dict) and "pad_id" in padding:
        padding["pad_id"] = new_id[padding["pad_id"]]
    return trimmed, keep


def word_embedding_name(graph) -> str:
    """The initializer holding the word-embedding table of an ORT-fused BERT graph (or a plain Gather)."""
    initializers = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "EmbedLayerNormalization" and node.input[2] in initializers:
            return node.input[2]
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in initializers and "word_embeddings" in node.input[0]:
            return node.input[0]
    raise ConfigError("cannot find the word-embedding table in the ONNX graph")


def trim_embeddings(source: Path, target: Path, keep: np.ndarray) -> tuple[int, int]:
    """Write ``source`` with only the ``keep`` rows of its word-embedding table; returns (old, new) rows."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    name = word_embedding_name(model.graph)
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == name:
            table = numpy_helper.to_array(tensor)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(table[keep]), name))
            onnx.save(model, str(target))
            return int(table.shape[0]), int(len(keep))
    raise ConfigError(f"initializer {name} not found")


def trim_unreachable(bundle: Path, output: Path, texts: list[str]) -> Manifest | None:
    """Copy an ONNX bundle with its unreachable vocabulary removed, or return None if there is none.

    The PyTorch weights are not copied (their embedding table would no longer match the tokenizer).
    Refuses to write anything unless the trimmed model's logits equal the original's on ``texts``.
    """
    from slm.bundle.derive import derive_bundle, drop_components
    from slm.bundle.manifest import read_manifest
    from slm.errors import ModelError
    from slm.fileio import write_text_atomic
    from slm.runtime.onnx import OnnxComponent

    manifest = read_manifest(bundle)
    spec = manifest.components.onnx
    if spec is None:
        raise ConfigError(f"{bundle} has no ONNX model to trim")
    tokenizer_file = Path(spec.tokenizer) / "tokenizer.json"
    tokenizer = json.loads((bundle / tokenizer_file).read_text(encoding="utf-8"))
    drop = unreachable_ids(tokenizer)
    if not drop:
        return None
    trimmed, keep = trim_tokenizer(tokenizer, drop)

    def change(staging: Path, new: Manifest) -> Manifest:
        drop_components(staging, new, keep={"onnx", "ngram"})
        write_text_atomic(staging / tokenizer_file, json.dumps(trimmed, ensure_ascii=False))
        before, after = trim_embeddings(bundle / spec.file, staging / spec.file, keep)
        reference = OnnxComponent(bundle, spec).logits(texts)
        candidate = OnnxComponent(staging, spec).logits(texts)
        diff = float(np.abs(reference - candidate).max())
        if diff > 1e-5:
            raise ModelError(f"vocabulary trimming changed the model's outputs (by up to {diff:.1e}); nothing written")
        record = {"rule": "unreachable by the tokenizer", "rows_before": before, "rows_after": after,
                  "max_logit_change": diff, "texts_checked": len(texts)}  # fmt: skip
        if new.components.onnx is not None:
            new.components.onnx.vocabulary = record
        new.compression = {**(new.compression or {}), "vocabulary": record}
        return new

    return derive_bundle(bundle, output, change, drop=("model",), step="trim-vocabulary")
