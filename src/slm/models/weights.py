"""Finding named tensors in a transformer's safetensors state dict (shared by domain terms and vocabulary trimming)."""

from __future__ import annotations

from typing import Any

from slm.errors import ConfigError


def word_embedding_key(tensors: dict[str, Any], where: object, error: type[Exception] = ConfigError) -> str:
    """The key of the word-embedding table in a transformer's safetensors state dict (else ``error``)."""
    names = [name for name in tensors if name.endswith("word_embeddings.weight")]
    if len(names) != 1:
        raise error(f"{where}: cannot find the word-embedding table")
    return names[0]
