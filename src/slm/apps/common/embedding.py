"""PyTorch helpers the apps' bi-encoder training shares: mean pooling, batch embedding, schedule, progress.

The support retriever (:mod:`slm.apps.support.contrastive`) and the recommender's two towers
(:mod:`slm.apps.recommend.towers`) train the same way; torch is imported only inside each function.
"""

from __future__ import annotations

import numpy as np

from slm.console import console


def mean_pool(encoder, ids, mask):
    """Unit-length masked mean of ``encoder``'s last hidden states (the sentence-transformers recipe)."""
    import torch

    from slm.models.encoder import masked_mean

    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return torch.nn.functional.normalize(masked_mean(hidden, mask), dim=-1)


def embed_with_torch(encoder, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Unit-length mean-pooled embeddings (n, hidden) of ``texts`` by a PyTorch encoder, in length-sorted batches."""
    import torch

    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")  # fmt: skip
            out[rows] = mean_pool(encoder, batch["input_ids"], batch["attention_mask"]).numpy()
    return out


def warmup_then_linear_decay(optimizer, total: int, warmup_ratio: float):
    """A LambdaLR that warms up linearly over ``warmup_ratio`` of ``total`` steps, then decays linearly to 0."""
    import torch

    warmup = max(1, int(total * warmup_ratio))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )


def loss_progress(label: str, show_progress: bool):
    """A rich progress bar of training steps showing a ``loss`` field."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
    )
