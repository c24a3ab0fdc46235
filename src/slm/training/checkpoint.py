"""Resumable training state, stored without pickle (safetensors + JSON) and swapped in atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from slm.errors import ConfigError
from slm.fileio import atomic_directory, write_json_atomic

STATE = "state.json"
MODEL = "model.safetensors"
BEST = "best.safetensors"
OPTIMIZER = "optimizer.safetensors"


@dataclass
class TrainState:
    """Where training is: the next batch to run and what has been learnt about validation so far."""

    resume_key: str
    data_fingerprint: str
    epoch: int = 0
    next_batch: int = 0
    global_step: int = 0
    best_metric: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    train_seconds: float = 0.0
    examples_seen: int = 0
    history: list[dict] = field(default_factory=list)
    scheduler: dict = field(default_factory=dict)
    param_groups: list[dict] = field(default_factory=list)
    finished: bool = False


def _tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state_dict.items()}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    full = optimizer.state_dict()
    tensors = {}
    for index, per_param in full["state"].items():
        for name, value in per_param.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().contiguous().clone()
    return tensors, full["param_groups"]


def save_checkpoint(
    directory: Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    best_weights: dict[str, torch.Tensor] | None,
) -> None:
    """Write a complete checkpoint to a staging directory and swap it in."""
    opt_tensors, groups = _optimizer_tensors(optimizer)
    state.param_groups = groups
    state.scheduler = scheduler.state_dict()  # lr_lambdas are plain functions: stored as None
    with atomic_directory(directory) as staging:
        save_file(_tensors(model.state_dict()), str(staging / MODEL))
        rng = {"torch_rng": torch.get_rng_state()}
        save_file({**opt_tensors, **{f"rng.{k}": v for k, v in rng.items()}}, str(staging / OPTIMIZER))
        if best_weights is not None:
            save_file(best_weights, str(staging / BEST))
        write_json_atomic(staging / STATE, asdict(state))


def has_checkpoint(directory: Path) -> bool:
    return (Path(directory) / STATE).is_file()


def load_checkpoint(
    directory: Path,
    *,
    resume_key: str,
    data_fingerprint: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
    """Restore model, optimizer, scheduler and RNG; refuse a checkpoint from other data or settings."""
    directory = Path(directory)
    try:
        raw = json.loads((directory / STATE).read_text(encoding="utf-8"))
        state = TrainState(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot resume: checkpoint {directory} is unreadable ({exc})") from None
    if state.data_fingerprint != data_fingerprint:
        raise ConfigError(f"cannot resume: checkpoint {directory} was made from different training data")
    if state.resume_key != resume_key:
        raise ConfigError(f"cannot resume: checkpoint {directory} was made with different training settings")
    model.load_state_dict(load_file(str(directory / MODEL)))
    saved = load_file(str(directory / OPTIMIZER))
    torch.set_rng_state(saved.pop("rng.torch_rng"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in saved.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.param_groups})
    scheduler.load_state_dict(state.scheduler)
    best = load_file(str(directory / BEST)) if (directory / BEST).is_file() else None
    return state, best
