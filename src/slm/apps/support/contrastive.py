"""Fine-tune a bi-encoder on question/answer pairs with in-batch negatives.

Every batch holds ``batch_size`` (question, answer) pairs; each question's answer is its positive
and the other answers of the batch are its negatives (the multiple-negatives ranking loss of
Henderson et al., 2017, used by sentence-transformers). Pairs sharing an answer are never each
other's negatives. Questions and answers go through the same encoder, so one ONNX graph embeds both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from slm.apps.common.embedding import loss_progress, mean_pool, warmup_then_linear_decay

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 2e-5
DEFAULT_SCALE = 20.0  # cosine similarities are multiplied by this before the softmax


@dataclass
class RetrieverTraining:
    """How the retriever is fine-tuned."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    scale: float = DEFAULT_SCALE
    query_max_length: int = 64
    document_max_length: int = 256
    max_minutes: float | None = None
    max_steps: int | None = None  # stop after this many batches (reproducible, unlike a time budget)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42


def in_batch_loss(queries, documents, document_keys: list[str], scale: float):
    """Cross-entropy of each query against every document of the batch; duplicates of the positive are masked."""
    import torch

    scores = queries @ documents.T * scale
    same = torch.tensor([[a == b for b in document_keys] for a in document_keys])
    same.fill_diagonal_(False)
    scores = scores.masked_fill(same, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(queries)))


def fine_tune(
    encoder,
    tokenizer,
    pairs: list[tuple[str, str]],
    settings: RetrieverTraining,
    *,
    show_progress: bool = True,
) -> dict:
    """Tune ``encoder`` (a Hugging Face ``AutoModel``) in place on (question, answer) ``pairs``."""
    import torch

    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    steps_per_epoch = max(1, len(pairs) // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = warmup_then_linear_decay(optimizer, total, settings.warmup_ratio)

    def tokens(texts: list[str], max_length: int):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]

    losses: list[float] = []
    started, steps, stopped = time.perf_counter(), 0, False
    encoder.train()
    progress = loss_progress("retriever", show_progress)
    with progress:
        task = progress.add_task("retriever", total=total, loss="-")
        for _ in range(settings.epochs):
            order = rng.permutation(len(pairs))
            for step in range(steps_per_epoch):
                chosen = [pairs[i] for i in order[step * settings.batch_size : (step + 1) * settings.batch_size]]
                questions = mean_pool(encoder, *tokens([q for q, _ in chosen], settings.query_max_length))
                answers = mean_pool(encoder, *tokens([a for _, a in chosen], settings.document_max_length))
                loss = in_batch_loss(questions, answers, [a for _, a in chosen], settings.scale)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                losses.append(loss.item())
                progress.update(task, advance=1, loss=f"{np.mean(losses[-50:]):.3f}")
                if steps >= total:
                    break
                if settings.max_minutes is not None and time.perf_counter() - started >= settings.max_minutes * 60:
                    stopped = True
                    break
            if stopped:
                log.warning("note: retriever fine-tuning stopped by the time budget")
                break
            if steps >= total:
                break
    encoder.eval()
    return {
        "pairs": len(pairs),
        "steps": steps,
        "planned_steps": total,
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
        "stopped_by_budget": stopped,
        **{k: v for k, v in settings.__dict__.items() if k != "seed"},
    }
