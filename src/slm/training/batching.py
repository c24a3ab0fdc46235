"""Tokenise once, then batch by length so little compute is spent on padding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encoded:
    """Token ids per text (unpadded) and how many texts were truncated."""

    ids: list[list[int]]
    n_truncated: int

    def __len__(self) -> int:
        return len(self.ids)


def load_tokenizer(path) -> tuple[object, int]:
    """A model's fast tokenizer with padding off (some packaged ones pad every text to 128), and its pad id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.backend_tokenizer.no_padding()
    return tokenizer, int(tokenizer.pad_token_id or 0)


def encode_texts(tokenizer, texts: list[str], max_length: int, chunk: int = 2048) -> Encoded:
    """Tokenise without padding; count texts longer than ``max_length`` tokens."""
    ids: list[list[int]] = []
    truncated = 0
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        full = tokenizer(
            batch,
            add_special_tokens=True,
            truncation=True,
            max_length=max_length,
            return_overflowing_tokens=False,
            return_length=True,
        )
        for row, length in zip(full["input_ids"], full["length"], strict=True):
            ids.append(list(row))
            if length >= max_length:
                truncated += 1
    return Encoded(ids=ids, n_truncated=truncated)


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, pool_factor: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples, deterministic for ``seed``.

    Shuffle, cut into pools of ``pool_factor`` batches, sort each pool by length, slice it into
    batches, then shuffle the batch order so the model does not see lengths in a fixed order.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_factor
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def inference_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches in length order (no shuffling) for fast prediction."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest member: (input_ids, attention_mask)."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids, mask
