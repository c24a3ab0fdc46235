"""Differentially private fine-tuning (``slm train --dp-epsilon E``): DP-SGD with Opacus.

Every optimiser step clips each training example's gradient to ``dp_max_grad_norm`` and adds Gaussian noise
calibrated (Opacus ``make_private_with_epsilon``) so that the whole run, with Poisson-sampled batches, spends at
most (epsilon, delta); the PRV accountant then reports what was actually spent (less when the time budget
stopped training early). What is trained is a *recipe*:

- ``head``: a linear head on the frozen pretrained encoder's unit-length sentence embeddings. The encoder is
  public, so the embeddings are computed once and only the head (hidden x labels weights) gets noisy gradients.
- ``lora``: LoRA adapters on every linear layer of the encoder, plus the head.
- ``full``: every encoder weight but the embeddings, plus the head.

Hugging Face BERT feeds its position (and token type) embeddings ids broadcast from a buffer of batch size 1,
so per-example gradients of those tables come out with batch size 1 and Opacus fails (opacus issue #841).
The transformer recipes therefore freeze the whole embedding block (:func:`freeze_embeddings`); the head
recipe never differentiates through the encoder at all.

Model selection (the best epoch, the head's logit scale) uses the validation split, which is never trained
on: its rows are not protected by the guarantee, the training rows are.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from slm.console import status
from slm.errors import ConfigError
from slm.models.encoder import EncoderClassifier, build_classifier
from slm.training.adapters import add_adapters, count_parameters, merge_adapters
from slm.training.batching import Encoded, collate
from slm.training.config import TrainConfig
from slm.training.fewshot import LinearHead, calibrate_scale, set_head
from slm.training.fit import Fitted
from slm.training.trainer import predict_embeddings, predict_logits, validation_macro_f1

log = logging.getLogger(__name__)

# The recipe --dp-recipe auto trains, measured on BANKING77 at epsilon 8 on 2 shared CPU cores (load 7-9):
# the head recipe reached 88.3% test accuracy (60 epochs of 1,024-row Poisson batches, Adam lr 0.1; 88.5% with
# SGD lr 1) in 2.5 minutes of DP-SGD after one embedding pass, while lora and full took 3 minutes for 6 noisy
# steps of 64 rows (2 examples/s: per-example gradients of every adapted layer) and scored 3.8% and 2.6% on a
# 2,250-row pilot: a whole BANKING77 epoch would not fit the 20-minute budget (bench/results/dp.md, notes).
DEFAULT_RECIPE = "head"
ACCOUNTANT = "prv"  # Opacus's default: tighter than RDP, so less noise for the same (epsilon, delta)
# Per recipe: (epochs, logical batch size, learning rate) when the configuration does not set them.
DEFAULTS: dict[str, tuple[int, int, float]] = {
    "head": (60, 1024, 0.1),
    "lora": (4, 512, 2e-3),
    "full": (4, 512, 5e-4),
}
# Examples per forward/backward pass inside a logical batch (Opacus BatchMemoryManager): per-example
# gradients of a transformer hold batch x parameters values.
PHYSICAL_BATCH = {"head": 4096, "lora": 32, "full": 16}


@dataclass(frozen=True)
class DPPlan:
    """The resolved settings of one private run."""

    recipe: str
    epsilon: float
    delta: float
    max_grad_norm: float
    epochs: int
    batch_size: int
    learning_rate: float


def plan_for(config: TrainConfig, n_train: int) -> DPPlan:
    """The recipe and hyper-parameters a private run uses for ``n_train`` training rows."""
    assert config.dp_epsilon is not None
    recipe = config.dp_recipe
    if recipe == "auto":  # --method head or lora names the recipe too; any other method means the default
        recipe = config.method if config.method in ("head", "lora") else DEFAULT_RECIPE
    epochs, batch, lr = DEFAULTS[recipe]
    delta = config.dp_delta if config.dp_delta is not None else 1.0 / n_train
    if delta > 1.0 / n_train:
        log.warning(
            f"note: --dp-delta {delta:g} is above 1/n ({1 / n_train:.2g}); a delta that large allows releasing a "
            "few training rows outright"
        )
    return DPPlan(
        recipe=recipe,
        epsilon=float(config.dp_epsilon),
        delta=float(delta),
        max_grad_norm=config.dp_max_grad_norm,
        epochs=config.dp_epochs or epochs,
        batch_size=min(config.dp_batch_size or batch, n_train),
        learning_rate=config.dp_learning_rate or lr,
    )


def freeze_embeddings(model: EncoderClassifier) -> None:
    """Freeze the encoder's whole embedding block (word, position, token type, its LayerNorm).

    Needed for per-example gradients: BERT's position ids come from a buffer of batch size 1 (opacus #841).
    """
    base: nn.Module = getattr(model.encoder, "base_model", model.encoder)  # under peft's wrapper, with LoRA
    base = getattr(base, "model", base)  # peft's LoraModel holds the transformers model
    block = getattr(base, "embeddings", None)
    if not isinstance(block, nn.Module):
        block = model.encoder.get_input_embeddings()
    block.requires_grad_(False)


class _Rows(Dataset):
    """Row indices: a batch is built from them by the recipe (Opacus samples the indices)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (torch.tensor(index),)


@dataclass
class _Loop:
    """What the private loop trains: the module, its batches from row indices, and the validation score."""

    module: nn.Module
    batch: Callable[[torch.Tensor], tuple[tuple[torch.Tensor, ...], torch.Tensor]]
    score: Callable[[], float]
    physical_batch: int


def _make_private(loop: _Loop, plan: DPPlan, n_train: int, seed: int):
    """Opacus's engine, the wrapped module, its DP optimizer and the Poisson-sampling loader for ``plan``."""
    from opacus import PrivacyEngine

    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(_Rows(n_train), batch_size=plan.batch_size, shuffle=True, generator=generator)
    params = [p for p in loop.module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=plan.learning_rate)
    loop.module.train()  # Opacus validates the module in training mode
    # "secure RNG turned off" is documented (docs/privacy.md); a batch of every row (sample rate 1, tiny data)
    # makes the PRV accountant take log(0) on its way to the right answer.
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        module, optimizer, loader = engine.make_private_with_epsilon(
            module=loop.module,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=plan.epsilon,
            target_delta=plan.delta,
            epochs=plan.epochs,
            max_grad_norm=plan.max_grad_norm,
            poisson_sampling=True,
        )
    return engine, module, optimizer, loader


def _epoch(loop: _Loop, module: nn.Module, optimizer, loader, deadline: float | None) -> bool:
    """One pass of Poisson-sampled logical batches, in physical batches; True when past ``deadline``."""
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    loss_fn = nn.CrossEntropyLoss()
    module.train()
    with (
        warnings.catch_warnings(),
        BatchMemoryManager(data_loader=loader, max_physical_batch_size=loop.physical_batch, optimizer=optimizer) as b,
    ):
        # PyTorch notes that Opacus's full backward hooks fire on a module whose inputs need no gradient
        # (the head on fixed embeddings, the first layer): expected, and said once per step otherwise.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for (rows,) in b:
            optimizer.zero_grad(set_to_none=True)
            if len(rows):  # Poisson sampling can draw an empty batch: nothing to learn, nothing released
                inputs, targets = loop.batch(rows)
                loss_fn(module(*inputs), targets).backward()
            optimizer.step()
            # --max-minutes is checked every step: a transformer recipe's epoch can outlast the whole budget.
            # Stopping inside a logical batch releases nothing more: only completed steps are accounted.
            if deadline is not None and time.perf_counter() >= deadline:
                return True
    return False


def _run(loop: _Loop, plan: DPPlan, n_train: int, config: TrainConfig, show_progress: bool) -> dict:
    """DP-SGD over ``loop`` for ``plan.epochs`` (or until --max-minutes); keeps the best validation state."""
    engine, module, optimizer, loader = _make_private(loop, plan, n_train, config.seed)
    started, best, best_score, history, steps = time.perf_counter(), None, -1.0, [], 0
    deadline = None if config.max_minutes is None else started + config.max_minutes * 60
    over_budget = False
    for epoch in range(plan.epochs):
        over_budget = _epoch(loop, module, optimizer, loader, deadline)
        steps = sum(n for _, _, n in engine.accountant.history)
        score = loop.score()
        history.append(
            {"epoch": epoch + 1, "val_macro_f1": round(score, 5), "seconds": round(time.perf_counter() - started, 1)}
        )
        if show_progress:
            log.info(f"DP epoch {epoch + 1}/{plan.epochs}: validation macro-F1 {score:.4f} · {steps} steps")
        if score > best_score + 1e-9:
            best_score, best = score, {k: v.detach().clone() for k, v in loop.module.state_dict().items()}
        if over_budget:
            break
    _close(module)
    if best is not None:
        loop.module.load_state_dict(best)
    with np.errstate(divide="ignore"):
        spent = engine.get_epsilon(plan.delta) if steps else 0.0
    return {
        "noise_multiplier": round(float(optimizer.noise_multiplier), 6),
        "sample_rate": 1.0 / len(loader),
        "steps": int(steps),
        "epsilon_spent": round(float(spent), 4),
        "epochs_run": len(history),
        "best_epoch": 1 + int(np.argmax([h["val_macro_f1"] for h in history])) if history else None,
        "stopped_by_budget": over_budget,
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _close(module: nn.Module) -> None:
    """Remove Opacus's hooks and per-example gradients, so the trained model runs like any other."""
    cleanup = getattr(module, "cleanup", None)
    if callable(cleanup):
        cleanup()
    for param in module.parameters():
        for attr in ("grad_sample", "_forward_counter"):
            if hasattr(param, attr):
                delattr(param, attr)


def _head_loop(model: EncoderClassifier, train: Encoded, targets: np.ndarray, val: Encoded, val_targets: np.ndarray,
               pad_id: int, show_progress: bool) -> tuple[_Loop, np.ndarray, np.ndarray]:  # fmt: skip
    """The head recipe: unit-length embeddings of the frozen encoder, computed once; DP-SGD on the head alone."""
    model.encoder.requires_grad_(False)
    model.normalize = True
    with status("embedding the training texts with the frozen encoder…", enabled=show_progress):
        x_train = torch.from_numpy(predict_embeddings(model, train, pad_id))
        x_val = predict_embeddings(model, val, pad_id)
    head = model.head
    with torch.no_grad():  # a zero start: no logit is favoured before the first noisy step
        head.weight.zero_()
        head.bias.zero_()
    y = torch.as_tensor(targets, dtype=torch.long)

    def score() -> float:
        with torch.no_grad():
            logits = head(torch.from_numpy(x_val)).numpy()
        return validation_macro_f1(logits, val_targets, False)

    loop = _Loop(head, lambda rows: ((x_train[rows],), y[rows]), score, PHYSICAL_BATCH["head"])
    return loop, x_train.numpy(), x_val


def _transformer_loop(model: EncoderClassifier, recipe: str, train: Encoded, targets: np.ndarray, val: Encoded,
                      val_targets: np.ndarray, pad_id: int, config: TrainConfig, steps: int) -> _Loop:  # fmt: skip
    """The lora and full recipes: the encoder (its adapters, or every weight but the embeddings) and the head."""
    if recipe == "lora":
        add_adapters(model, "lora", config, steps)
    freeze_embeddings(model)
    y = torch.as_tensor(targets, dtype=torch.long)

    def batch(rows: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        index = rows.tolist()
        input_ids, mask = collate([train.ids[i] for i in index], pad_id)
        return (input_ids, mask), y[rows]

    def score() -> float:
        return validation_macro_f1(predict_logits(model, val, pad_id), val_targets, False)

    return _Loop(model, batch, score, PHYSICAL_BATCH[recipe])


def fit_private(
    base_path: Path,
    n_labels: int,
    train: Encoded,
    train_targets: np.ndarray,
    val: Encoded,
    val_targets: np.ndarray,
    config: TrainConfig,
    *,
    pad_id: int,
    show_progress: bool = True,
) -> Fitted:
    """Train a single-label classifier with differential privacy; ``info["privacy"]`` is the manifest record."""
    if train_targets.ndim != 1:
        raise ConfigError("--dp-epsilon trains single-label classifiers only (this data is multi-label)")
    if not len(val):
        raise ConfigError("--dp-epsilon needs a validation split to choose the best epoch (--val-size > 0)")
    plan = plan_for(config, len(train))
    torch.manual_seed(config.seed)
    model = build_classifier(base_path, n_labels, dropout=config.dropout)
    started = time.perf_counter()
    log.info(
        f"differentially private training: recipe {plan.recipe}, epsilon {plan.epsilon:g}, delta {plan.delta:.3g}, "
        f"{plan.epochs} epochs of Poisson batches of {plan.batch_size} (expected), clip {plan.max_grad_norm:g}"
    )
    if plan.recipe == "head":
        loop, _, x_val = _head_loop(model, train, train_targets, val, val_targets, pad_id, show_progress)
    else:
        steps = math.ceil(len(train) / plan.batch_size) * plan.epochs
        loop = _transformer_loop(model, plan.recipe, train, train_targets, val, val_targets, pad_id, config, steps)
    parameters = count_parameters(model)
    run = _run(loop, plan, len(train), config, show_progress)
    if plan.recipe == "head":  # temperature on validation (post-processing: no privacy cost)
        weight, bias = (p.detach().numpy().copy() for p in (model.head.weight, model.head.bias))
        set_head(model, calibrate_scale(LinearHead(weight, bias, c=0.0), x_val, val_targets))
    merge_adapters(model)
    privacy = {
        "dp": True,
        "mechanism": "DP-SGD (Opacus), per-example clipping, Poisson sampling",
        "epsilon_target": plan.epsilon,
        "epsilon_spent": run["epsilon_spent"],
        "delta": plan.delta,
        "noise_multiplier": run["noise_multiplier"],
        "max_grad_norm": plan.max_grad_norm,
        "sample_rate": run["sample_rate"],
        "steps": run["steps"],
        "epochs": plan.epochs,
        "accountant": ACCOUNTANT,
        "recipe": plan.recipe,
        "batch_size": plan.batch_size,
        "learning_rate": plan.learning_rate,
        "n_train": len(train),
    }
    log.info(
        f"privacy spent: epsilon {privacy['epsilon_spent']:g} (target {plan.epsilon:g}), delta {plan.delta:.3g}, "
        f"{run['steps']} noisy steps (noise multiplier {run['noise_multiplier']:.3g})"
    )
    return Fitted(
        model,
        {
            "method": f"dp-{plan.recipe}",
            "wall_time_s": round(time.perf_counter() - started, 1),
            "train_seconds": run["seconds"],
            "examples_per_s": None,
            "epochs_run": run["epochs_run"],
            "best_epoch": run["best_epoch"],
            "stopped_early": False,
            "stopped_by_budget": run["stopped_by_budget"],
            "history": run["history"],
            "parameters": parameters.to_dict(),
            "privacy": privacy,
        },
    )
