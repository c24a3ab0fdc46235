"""Hyper-parameter search with Optuna under a wall-clock budget (``slm tune``).

Trial 0 is always the default configuration, so the study shows in one run whether searching
paid off. Later trials are proposed by Optuna's TPE sampler over the method (full fine-tuning,
LoRA, few-shot, head-only), learning rates, epochs, batch size and weight decay; full and LoRA
trials report validation macro-F1 after every epoch and are pruned when they fall below the
median of earlier trials at the same epoch. Every trial runs with the budget that is left as its
time limit, so the whole search ends within the budget (plus one validation pass).

The study lives in SQLite (``study.db``) in the output folder: a search can be continued by running
the same command again, and the trials are queryable with Optuna's own tools.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from slm.data.dataset import TextDataset
from slm.durations import parse_duration
from slm.errors import ConfigError
from slm.fileio import record_output, write_json_atomic, write_text_atomic
from slm.logs import HEADING
from slm.pipeline import Splits
from slm.training.batching import Encoded, encode_texts, load_tokenizer
from slm.training.config import TrainConfig
from slm.training.trainer import predict_logits, set_threads, validation_macro_f1

log = logging.getLogger(__name__)

TUNABLE_METHODS = ("full", "lora", "fewshot", "head")
# A trial is not started with less than this left of the budget.
MIN_TRIAL_SECONDS = 30.0
# With the automatic training subsample, the default configuration (trial 0) is sized to take
# about this share of the budget, so the search proper keeps the rest.
DEFAULT_TRIAL_SHARE = 0.25
STUDY_NAME = "slm-tune"
# What a search writes into its output folder (beside anything else there); SQLite adds the journal while it runs.
TUNE_FILES = ("study.db", "study.db-journal", "trials.md", "trials.json", "best_config.json", "summary.json")


@dataclass
class TuneResult:
    best_config: TrainConfig
    best_value: float
    default_value: float | None
    trials: list[dict]
    output: Path
    train_examples: int
    train_examples_total: int


def auto_train_examples(budget_seconds: float, base: TrainConfig, mean_tokens: float) -> int:
    """Training examples for trials such that the default configuration takes ~DEFAULT_TRIAL_SHARE of the budget.

    Estimated from full fine-tuning's measured token throughput on 2 cores, the texts' mean length
    in tokens and the default number of epochs; at least 1,000 examples.
    """
    from slm.training.method import FULL_TOKENS_PER_SECOND

    examples_per_s = FULL_TOKENS_PER_SECOND / max(mean_tokens, 1.0)
    return max(1000, int(budget_seconds * DEFAULT_TRIAL_SHARE * examples_per_s / base.epochs))


def sample_indices(ds, n: int, seed: int) -> np.ndarray:
    """Sorted row indices of a stratified (single-label) or random (multi-label) sample of ``n`` rows."""
    indices = np.arange(len(ds))
    if n >= len(ds):
        return indices
    from sklearn.model_selection import train_test_split

    stratify = None
    if not ds.multi_label:
        labels = np.array(ds.labels, dtype=object)
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and n >= len(counts):
            stratify = labels
    kept, _ = train_test_split(indices, train_size=n, stratify=stratify, random_state=seed)
    return np.sort(kept)


def parse_budget(text: str) -> float:
    """'20m', '90s', '1.5h' or plain minutes -> seconds."""
    return parse_duration(text, bare_unit="m", what="budget")


def check_methods(methods: tuple[str, ...]) -> None:
    """ConfigError unless ``methods`` is a non-empty selection of TUNABLE_METHODS."""
    unknown = [m for m in methods if m not in TUNABLE_METHODS]
    if unknown or not methods:
        shown = ", ".join(methods) or "none"
        raise ConfigError(f"methods to tune must be among {', '.join(TUNABLE_METHODS)}; got {shown}")


def suggest(trial, base: TrainConfig, methods: tuple[str, ...]) -> TrainConfig:
    """A configuration proposed by ``trial`` (an ``optuna.Trial``) on top of ``base``."""
    method = trial.suggest_categorical("method", list(methods))
    changes: dict = {"method": method}
    changes["weight_decay"] = trial.suggest_categorical("weight_decay", [0.0, 0.01, 0.1])
    if method in ("full", "lora"):
        changes["epochs"] = trial.suggest_int("epochs", 1, 5)
        changes["batch_size"] = trial.suggest_categorical("batch_size", [16, 32, 64])
        changes["head_learning_rate"] = trial.suggest_float("head_learning_rate", 3e-4, 1e-2, log=True)
    if method == "full":
        changes["learning_rate"] = trial.suggest_float("learning_rate", 1e-5, 3e-4, log=True)
    elif method == "lora":
        changes["lora_learning_rate"] = trial.suggest_float("lora_learning_rate", 1e-4, 3e-3, log=True)
        changes["lora_r"] = trial.suggest_categorical("lora_r", [4, 8, 16])
    elif method == "fewshot":
        changes["contrastive_learning_rate"] = trial.suggest_float("contrastive_learning_rate", 5e-6, 1e-4, log=True)
        changes["contrastive_epochs"] = trial.suggest_int("contrastive_epochs", 5, 40)
    return replace(base, **changes)


def _trial_row(trial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "val_macro_f1": None if trial.value is None else round(float(trial.value), 5),
        "seconds": round(float(trial.user_attrs.get("seconds", 0.0)), 1),
        "default": bool(trial.user_attrs.get("default", False)),
        **trial.params,
    }


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(value)


def _write_outputs(
    output: Path, study, best: TrainConfig | None, default_value: float | None, n_train: int, n_total: int
) -> list[dict]:
    rows = [_trial_row(t) for t in study.trials]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
    write_text_atomic(output / "trials.md", "\n".join(lines) + "\n")
    write_json_atomic(output / "trials.json", rows)
    if best is not None:
        summary = {
            "best_config": best.to_dict(),
            "best_val_macro_f1": round(float(study.best_value), 5),
            "default_val_macro_f1": None if default_value is None else round(default_value, 5),
            "train_examples": n_train,
            "train_examples_total": n_total,
        }
        write_json_atomic(output / "best_config.json", best.to_dict())
        write_json_atomic(output / "summary.json", summary)
    return rows


@dataclass
class _TrialData:
    """What every trial trains and is scored on: the tokenised (sub)sample and the whole validation split."""

    base_path: Path
    pad_id: int
    train: Encoded
    y_train: np.ndarray
    val: Encoded
    y_val: np.ndarray
    train_ds: TextDataset
    n_labels: int
    multi_label: bool


def tune(
    splits: Splits,
    *,
    output: Path,
    budget_seconds: float,
    base: TrainConfig,
    methods: tuple[str, ...] = TUNABLE_METHODS,
    max_train_examples: int | None = None,
    show_progress: bool = True,
) -> TuneResult:
    """Search hyper-parameters on ``splits`` (validation macro-F1) for ``budget_seconds``.

    Trials train on at most ``max_train_examples`` training texts (a stratified sample; ``None``:
    sized so that the default configuration takes about a quarter of the budget, ``0``: all), and
    every trial, the default included, is scored on the whole validation split.
    """
    import optuna  # noqa: F401  (first: without the train extra, that is the one line printed, before any work)

    from slm.models.auto import resolve_auto

    check_methods(methods)
    if not len(splits.validation):
        raise ConfigError("tuning needs a validation split (--val-size > 0 or --validation)")
    # Resolved once for every trial, so best_config.json names the model ('slm train --config' trains the same).
    base, choice = resolve_auto(base, splits.train.texts)
    if choice is not None:
        log.info(f"base model: {choice.message()}", extra=HEADING)
    deadline = time.monotonic() + budget_seconds
    set_threads(base.threads)
    output.mkdir(parents=True, exist_ok=True)
    record_output(output, TUNE_FILES)  # before the study exists: an interrupted search can continue
    data = _trial_data(splits, base, budget_seconds, max_train_examples)
    study = _study(output, base, methods)
    objective = _objective(data, base, methods, deadline, show_progress)

    def stop_when_out_of_time(study, trial) -> None:
        if deadline - time.monotonic() < MIN_TRIAL_SECONDS:
            study.stop()

    try:
        study.optimize(
            objective,
            timeout=max(budget_seconds, 1.0),
            callbacks=[stop_when_out_of_time],
            catch=(),
            gc_after_trial=True,
        )
    finally:
        best, best_value, default_value = _best(study, base, methods)
        rows = _write_outputs(output, study, best, default_value, len(data.train_ds), len(splits.train))
    if best is None or best_value is None:  # both or neither
        raise ConfigError("no trial finished within the budget; give tuning more time (--budget)")
    return TuneResult(best, best_value, default_value, rows, output, len(data.train_ds), len(splits.train))


def _trial_data(splits: Splits, base: TrainConfig, budget_seconds: float, max_train_examples: int | None) -> _TrialData:
    """The splits tokenised once for all trials, the training texts sampled down as ``max_train_examples`` says."""
    from slm.models.registry import resolve_base_model

    labels = splits.train.label_names
    base_model = resolve_base_model(base.base_model)
    tokenizer, pad_id = load_tokenizer(base_model.path)
    train = encode_texts(tokenizer, splits.train.texts, base.max_length)
    val = encode_texts(tokenizer, splits.validation.texts, base.max_length)
    y_train, y_val = splits.train.targets(labels), splits.validation.targets(labels)
    mean_tokens = float(np.mean([len(ids) for ids in train.ids]))
    limit = auto_train_examples(budget_seconds, base, mean_tokens) if max_train_examples is None else max_train_examples
    kept = sample_indices(splits.train, limit, base.seed) if limit else np.arange(len(splits.train))
    if len(kept) < len(splits.train):
        log.info(
            f"trials train on a stratified sample of {len(kept):,} of the {len(splits.train):,} training texts "
            f"(sized for the default configuration to take about {DEFAULT_TRIAL_SHARE:.0%} of the budget; "
            "--max-train-examples 0 uses all)"
        )
        train = Encoded([train.ids[i] for i in kept], 0)
        y_train = y_train[kept]
    train_ds = splits.train.subset(kept.tolist())
    return _TrialData(
        base_model.path, pad_id, train, y_train, val, y_val, train_ds, len(labels), splits.train.multi_label
    )


def _study(output: Path, base: TrainConfig, methods: tuple[str, ...]):
    """The Optuna study in ``output/study.db`` (continued when it exists), the default configuration queued first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{(output / 'study.db').resolve()}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    if not any(t.user_attrs.get("default") for t in study.trials):
        study.enqueue_trial({"method": base.method if base.method in methods else methods[0]}, {"default": True})
    return study


def _objective(
    data: _TrialData, base: TrainConfig, methods: tuple[str, ...], deadline: float, show_progress: bool
) -> Callable[[Any], float]:
    """Optuna's objective: train the trial's configuration with the budget left, return validation macro-F1."""
    import optuna

    from slm.training.fit import fit_transformer

    def objective(trial) -> float:
        started = time.monotonic()
        remaining = deadline - started
        is_default = bool(trial.user_attrs.get("default"))
        if is_default:
            config = replace(base, method=trial.suggest_categorical("method", list(methods)))
        else:
            config = suggest(trial, base, methods)
        config = replace(config, max_minutes=remaining / 60, checkpoint_minutes=1e6)
        described = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        label = "default configuration" if is_default else described
        log.info(f"trial {trial.number} ({remaining / 60:.1f} min left): {label}", extra=HEADING)

        def report(epoch: int, metric: float) -> None:
            trial.report(metric, epoch)
            if not is_default and trial.should_prune():
                raise optuna.TrialPruned(f"validation macro-F1 {metric:.4f} after epoch {epoch} is below the median")

        with tempfile.TemporaryDirectory(prefix="slm-tune-") as tmp:
            try:
                fitted = fit_transformer(
                    config.method,
                    data.base_path,
                    data.n_labels,
                    data.train,
                    data.y_train,
                    data.val,
                    data.y_val,
                    config,
                    pad_id=data.pad_id,
                    multi_label=data.multi_label,
                    checkpoint_dir=Path(tmp) / "ckpt",
                    data_fingerprint=data.train_ds.fingerprint(),
                    show_progress=show_progress,
                    epoch_hook=report,
                )
            finally:
                trial.set_user_attr("seconds", time.monotonic() - started)
        value = validation_macro_f1(predict_logits(fitted.model, data.val, data.pad_id), data.y_val, data.multi_label)
        trial.set_user_attr("seconds", time.monotonic() - started)
        log.info(f"trial {trial.number}: validation macro-F1 {value:.4f} in {time.monotonic() - started:.0f}s")
        return value

    return objective


def _best(study, base: TrainConfig, methods: tuple[str, ...]) -> tuple[TrainConfig | None, float | None, float | None]:
    """``(best configuration, its value, the default configuration's value)`` over the completed trials."""
    import optuna

    completed = [(t, t.value) for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    default_values = [value for t, value in completed if t.user_attrs.get("default")]
    default_value = float(default_values[0]) if default_values else None
    best_trial, best_value = max(completed, key=lambda tv: tv[1]) if completed else (None, None)
    best: TrainConfig | None = None
    if best_trial is not None:
        best = (
            replace(base, method=best_trial.params["method"])
            if best_trial.user_attrs.get("default")
            else suggest(optuna.trial.FixedTrial(best_trial.params), base, methods)
        )
    return best, best_value, default_value


def summary_table(result: TuneResult) -> list[tuple[str, str]]:
    """Lines for the CLI: the best configuration against the default."""
    best = result.best_config
    out = [("best validation macro-F1", f"{result.best_value:.4f}")]
    if result.default_value is not None:
        gain = (result.best_value - result.default_value) * 100
        out.append(("default configuration", f"{result.default_value:.4f} ({gain:+.2f} points for the best)"))
    out.append(("best method", best.method))
    if result.train_examples < result.train_examples_total:
        out.append(("trials trained on", f"{result.train_examples:,} of {result.train_examples_total:,} texts"))
    out.append(("trials", str(len(result.trials))))
    return out
