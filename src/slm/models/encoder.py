"""A pretrained transformer encoder with a mean-pooled classification head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    # A Hugging Face encoder (AutoModel), or the same wrapped with peft adapters while they train.
    Encoder: TypeAlias = PreTrainedModel | PeftModel

# Stored in the encoder's config.json, so every place that rebuilds a classifier from a bundle
# (PyTorch loading, ONNX export, pruning, benchmarks) restores the same pooling.
NORMALIZE_ATTR = "slm_normalize_pooled"
# Set by slm.models.domain_terms: the first id of the domain terms added to the vocabulary.
NEW_TOKENS_ATTR = "slm_new_tokens_from"


class TermEmbedding(nn.Module):
    """The word-embedding table, frozen, with the rows of added domain terms as a small trainable parameter.

    Training the terms in place would make the whole table's gradient dense (96M values per step
    for multilingual-e5-small); this keeps the step as cheap as with a frozen table. ``weight`` is
    the frozen table, so code that freezes ``get_input_embeddings().weight`` keeps working.
    """

    def __init__(self, base: nn.Embedding, start: int) -> None:
        super().__init__()
        self.base = base
        self.start = start
        self.terms = nn.Parameter(base.weight.detach()[start:].clone())
        base.weight.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base(ids)
        is_term = ids >= self.start
        if not bool(is_term.any()):
            return out
        return torch.where(is_term.unsqueeze(-1), self.terms[(ids - self.start).clamp(min=0)], out)


def add_term_embedding(encoder: Encoder) -> bool:
    """Give an encoder whose config names added domain terms (``slm_new_tokens_from``) a TermEmbedding."""
    table = encoder.get_input_embeddings()
    start = getattr(encoder.config, NEW_TOKENS_ATTR, None)
    # a plain table only: not one that is a TermEmbedding already
    if not isinstance(table, nn.Embedding) or not isinstance(start, int) or not 0 < start < table.weight.shape[0]:
        return False
    encoder.set_input_embeddings(TermEmbedding(table, start))
    return True


def merge_term_embedding(encoder: Encoder) -> None:
    """Write the trained term rows back into the table and restore the plain embedding (before saving)."""
    table = encoder.get_input_embeddings()
    if isinstance(table, TermEmbedding):
        with torch.no_grad():
            table.base.weight[table.start :] = table.terms
        encoder.set_input_embeddings(table.base)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``hidden`` ``(batch, tokens, dim)`` over the tokens ``attention_mask`` keeps: ``(batch, dim)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class EncoderClassifier(nn.Module):
    """Encoder → masked mean pooling → (L2 normalisation) → dropout → linear head.

    Mean pooling (rather than BERT's [CLS] pooler) matches how sentence encoders such as
    all-MiniLM-L6-v2 were trained, so the head starts from useful features. Few-shot and
    head-only training fit the head on unit-length embeddings (cosine geometry), which the
    ``slm_normalize_pooled`` config flag turns on.
    """

    def __init__(self, encoder: Encoder, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder: Encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def normalize(self) -> bool:
        """Whether pooled embeddings are scaled to unit length before the head."""
        return bool(getattr(self.encoder.config, NORMALIZE_ATTR, False))

    @normalize.setter
    def normalize(self, value: bool) -> None:
        setattr(self.encoder.config, NORMALIZE_ATTR, bool(value))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled sentence embeddings ``(batch, hidden)`` (unit length when ``normalize``)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = masked_mean(hidden, attention_mask)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    @property
    def config(self) -> PretrainedConfig:
        return self.encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_labels)``."""
        return self.head(self.dropout(self.embed(input_ids, attention_mask)))


def _set_dropout(config: PretrainedConfig, dropout: float) -> None:
    for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(config, attr):
            setattr(config, attr, dropout)


def build_classifier(
    base_path: Path, num_labels: int, *, dropout: float = 0.1, attn_implementation: str = "sdpa"
) -> EncoderClassifier:
    """Load pretrained encoder weights from ``base_path`` and attach a fresh head."""
    config = AutoConfig.from_pretrained(base_path)
    _set_dropout(config, dropout)
    encoder = AutoModel.from_pretrained(
        base_path, config=config, add_pooling_layer=False, attn_implementation=attn_implementation
    )
    return EncoderClassifier(encoder, num_labels, dropout)


def classifier_from_config(
    config: PretrainedConfig, num_labels: int, *, attn_implementation: str = "sdpa"
) -> EncoderClassifier:
    """An untrained classifier with the architecture of ``config`` (weights are loaded afterwards)."""
    encoder = AutoModel.from_config(config, add_pooling_layer=False, attn_implementation=attn_implementation)
    return EncoderClassifier(encoder, num_labels, dropout=0.0)
