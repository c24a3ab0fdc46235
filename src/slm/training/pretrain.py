"""Domain-adaptive pre-training: continue a base model's pre-training on unlabelled in-domain text.

Two objectives, both written as a base-model directory that ``slm train --base-model DIR`` reads:

- ``mlm`` (masked-language modelling, as in "Don't Stop Pretraining", Gururangan et al. 2020): 15% of the
  tokens are masked (80% [MASK], 10% random, 10% kept; transformers' DataCollatorForLanguageModeling) and
  predicted. The vocabulary projection runs on the masked positions only: over all positions it would
  cost 32 x 128 x 250k logits a batch for multilingual-e5-small (4 GB). The word-embedding table (tied to
  the projection) stays frozen, as in ``slm train``. Sentence encoders such as all-MiniLM-L6-v2 ship without
  an MLM head; a fresh head is first trained alone (``head_warmup_ratio`` of the steps) so its random
  gradients do not reach the encoder.
- ``simcse`` (unsupervised SimCSE, Gao et al. 2021): each text is encoded twice with different dropout masks,
  mean-pooled as :class:`slm.models.encoder.EncoderClassifier` pools, and the two views are pulled together
  against the batch's other texts. It needs no head, so it suits any encoder.

The run is time-boxed (``max_minutes``): the learning-rate schedule is refitted to the steps that fit in the
budget as the steps are timed. A held-out slice of the corpus is scored with the objective
before and after, so the record says whether the model learned anything.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from slm.errors import ConfigError
from slm.models.encoder import masked_mean
from slm.training.batching import (
    Encoded,
    collate,
    encode_texts,
    inference_batches,
    length_bucketed_batches,
    load_tokenizer,
)
from slm.training.pretrain_config import PretrainConfig, PretrainResult
from slm.training.trainer import set_threads

log = logging.getLogger(__name__)

# The schedule is fitted to the time budget after TIMED_STEPS steps, then again every REFIT_STEPS: on fin_tweets the
# first 10 steps' pace promised 558 steps in 8 minutes and 484 fitted, so the learning rate never reached zero.
TIMED_STEPS = 10
REFIT_STEPS = 50
# Texts held out to score the objective before and after (at most; 5% of a small corpus).
HELD_OUT_MAX = 512


class _Objective:
    """One objective: its trainable model, its loss on a batch of token ids, and how it is saved."""

    model: Any  # a transformers PreTrainedModel
    head_initialised = False
    # Set while a fresh head trains alone: the encoder then runs without building its backward graph.
    head_only = False
    # Whether the held-out score needs dropout on (SimCSE's two views differ only by dropout).
    scored_in_train_mode = False

    def loss(self, ids: list[list[int]]) -> torch.Tensor:
        raise NotImplementedError

    def head_parameters(self) -> list[nn.Parameter]:
        return []

    def save(self, folder: Path) -> None:
        raise NotImplementedError


class _MaskedLM(_Objective):
    def __init__(self, base_path: Path, tokenizer: Any, config: PretrainConfig) -> None:
        from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

        model, info = AutoModelForMaskedLM.from_pretrained(
            base_path, attn_implementation="sdpa", output_loading_info=True
        )
        self.model = model
        children = dict(model.named_children())
        name = next((n for n in ("cls", "lm_head") if n in children), None)  # BERT's head, RoBERTa's head
        if name is None:
            raise ConfigError(
                f"--objective mlm supports BERT- and RoBERTa-style encoders, not {model.config.model_type}; "
                "use --objective simcse"
            )
        self.head: nn.Module = children[name]
        self.head_initialised = any(key.startswith(f"{name}.") for key in info["missing_keys"])
        model.get_input_embeddings().weight.requires_grad_(False)  # tied to the projection: both stay frozen
        self.encoder = model.base_model
        self.collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=config.mask_probability, return_tensors="pt"
        )

    def loss(self, ids: list[list[int]]) -> torch.Tensor:
        batch = self.collator([{"input_ids": row} for row in ids])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.head_only):
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = hidden.last_hidden_state
        masked = batch["labels"] != -100
        if not bool(masked.any()):  # possible with a few very short texts: nothing to learn from
            return torch.zeros(())
        logits = self.head(hidden[masked])
        return nn.functional.cross_entropy(logits, batch["labels"][masked])

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.parameters() if p.requires_grad]

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)


class _SimCSE(_Objective):
    scored_in_train_mode = True

    def __init__(self, base_path: Path, pad_id: int, config: PretrainConfig) -> None:
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(base_path, attn_implementation="sdpa", add_pooling_layer=False)
        self.model.get_input_embeddings().weight.requires_grad_(False)
        self.pad_id = pad_id
        self.temperature = config.temperature

    def _pooled(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return nn.functional.normalize(masked_mean(hidden, mask), dim=-1)

    def loss(self, ids: list[list[int]]) -> torch.Tensor:
        input_ids, mask = collate(ids, self.pad_id)
        first, second = self._pooled(input_ids, mask), self._pooled(input_ids, mask)  # two dropout masks
        similarity = first @ second.T / self.temperature
        return nn.functional.cross_entropy(similarity, torch.arange(len(ids)))

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)


def _objective(base_path: Path, config: PretrainConfig) -> tuple[_Objective, Any]:
    tokenizer: Any
    tokenizer, pad_id = load_tokenizer(base_path)
    if config.objective == "mlm":
        if tokenizer.mask_token_id is None:
            raise ConfigError(f"{base_path}: the tokenizer has no mask token; use --objective simcse")
        return _MaskedLM(base_path, tokenizer, config), tokenizer
    return _SimCSE(base_path, pad_id, config), tokenizer


def _held_out_loss(objective: _Objective, encoded: Encoded, batch_size: int, seed: int) -> float:
    """The objective on the held-out texts with fixed masks/dropout (the same draws before and after)."""
    if not len(encoded):
        return float("nan")
    torch.manual_seed(seed)
    lengths = np.array([len(row) for row in encoded.ids])
    total, count = 0.0, 0
    objective.model.train(objective.scored_in_train_mode)
    with torch.no_grad():
        for batch in inference_batches(lengths, batch_size):
            if len(batch) < 2:
                continue
            total += float(objective.loss([encoded.ids[i] for i in batch])) * len(batch)
            count += len(batch)
    return total / max(count, 1)


@dataclass
class _Plan:
    """Steps the schedule spans: every epoch's, until the first steps are timed against the budget."""

    total: int
    head_only: int
    warmup: int


def _schedule(optimizer: torch.optim.Optimizer, plan: _Plan) -> torch.optim.lr_scheduler.LambdaLR:
    def encoder_factor(step: int) -> float:
        if step < plan.head_only:
            return 0.0
        done, span = step - plan.head_only, max(plan.total - plan.head_only, 1)
        if done < plan.warmup:
            return (done + 1) / plan.warmup
        return max(0.0, (span - done) / max(span - plan.warmup, 1))

    def head_factor(step: int) -> float:
        return max(0.0, (plan.total - step) / max(plan.total, 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [encoder_factor, head_factor])


def _optimizer(objective: _Objective, config: PretrainConfig) -> torch.optim.Optimizer:
    head = {id(p) for p in objective.head_parameters()}
    encoder = [p for p in objective.model.parameters() if p.requires_grad and id(p) not in head]
    return torch.optim.AdamW(
        [
            {"params": encoder, "lr": config.learning_rate},
            {"params": objective.head_parameters(), "lr": config.head_learning_rate},
        ],
        weight_decay=0.01,
    )


def _split(texts: list[str], seed: int) -> tuple[list[str], list[str]]:
    held = min(HELD_OUT_MAX, len(texts) // 20)
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order[held:]], [texts[i] for i in order[:held]]


def pretrain_model(
    texts: list[str], base_path: Path, output: Path, config: PretrainConfig, *, base_name: str, show_progress: bool
) -> PretrainResult:
    """Continue pre-training the model at ``base_path`` on ``texts``; write the result into ``output``.

    ``output`` is a staging folder the caller moves into place: it receives the model (safetensors and
    config.json), the base model's tokenizer and ``slm_pretrain.json``.
    """
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    objective, tokenizer = _objective(base_path, config)
    train_texts, held_texts = _split(texts, config.seed)
    train = encode_texts(tokenizer, train_texts, config.max_length)
    held = encode_texts(tokenizer, held_texts, config.max_length)
    before = _held_out_loss(objective, held, config.batch_size, config.seed)
    steps, seconds, stopped = _train(objective, train, config, show_progress)
    objective.head_only = False
    after = _held_out_loss(objective, held, config.batch_size, config.seed)
    log.info(f"pre-training ({config.objective}): held-out loss {before:.3f} -> {after:.3f} after {steps:,} steps")
    objective.save(output)
    tokenizer_of(base_path).save_pretrained(output)
    n_batches = math.ceil(len(train) / config.batch_size)
    return PretrainResult(
        objective=config.objective,
        base_model=base_name,
        texts=len(train),
        held_out=len(held),
        steps=steps,
        epochs=round(steps / max(n_batches, 1), 3),
        seconds=round(seconds, 1),
        held_out_loss_before=round(before, 4),
        held_out_loss_after=round(after, 4),
        head_initialised=objective.head_initialised,
        stopped_by_budget=stopped,
        config=asdict(config),
    )


def tokenizer_of(base_path: Path) -> Any:
    """The base model's tokenizer as it ships (its padding settings included), to save beside the model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_path)


def _train(
    objective: _Objective, train: Encoded, config: PretrainConfig, show_progress: bool
) -> tuple[int, float, bool]:
    """The training loop: ``(steps, seconds, stopped by the time budget)``."""
    lengths = np.array([len(row) for row in train.ids])
    n_batches = math.ceil(len(train) / config.batch_size)
    total = n_batches * config.epochs
    head_only = int(total * config.head_warmup_ratio) if objective.head_initialised else 0
    plan = _Plan(total, head_only, max(1, int((total - head_only) * config.warmup_ratio)))
    optimizer = _optimizer(objective, config)
    scheduler = _schedule(optimizer, plan)
    budget = None if config.max_minutes is None else config.max_minutes * 60
    objective.model.train()
    started = time.perf_counter()
    step = 0
    with Progress(
        TextColumn(f"pre-training ({config.objective})"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not show_progress, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("steps", total=plan.total)
        for epoch in range(config.epochs):
            for batch in length_bucketed_batches(lengths, config.batch_size, seed=config.seed + epoch):
                if step >= plan.total:
                    break
                if budget is not None and time.perf_counter() - started > budget:
                    return step, time.perf_counter() - started, True
                objective.head_only = step < plan.head_only
                loss = objective.loss([train.ids[i] for i in batch])
                if loss.requires_grad:
                    loss.backward()
                    nn.utils.clip_grad_norm_(objective.model.parameters(), 1.0)
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if budget is not None and (step == TIMED_STEPS or step % REFIT_STEPS == 0):
                    _fit_plan(plan, step, time.perf_counter() - started, budget, config)
                    progress.update(task, total=plan.total)
                progress.update(task, completed=step)
    return step, time.perf_counter() - started, False


def _fit_plan(plan: _Plan, done: int, elapsed: float, budget: float, config: PretrainConfig) -> None:
    """Fit the schedule to the steps that fit in the budget at the pace so far (the rate then reaches zero in time).

    Only ever shortened, and the head-only and warm-up phases are not changed once under way.
    """
    fits = done + int((budget - elapsed) / (elapsed / done) * 0.97)
    if fits >= plan.total:
        return
    if done < plan.head_only:
        plan.head_only = max(done, int(plan.head_only * fits / plan.total))
    plan.total = max(fits, done + 1)
    if done < plan.head_only + plan.warmup:
        plan.warmup = max(1, int((plan.total - plan.head_only) * config.warmup_ratio))
    log.debug(f"pre-training: {plan.total:,} steps fit in {budget / 60:g} minutes")
