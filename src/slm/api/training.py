"""Training entry points of the Python API: ``train``, ``tune``, ``evaluate`` (and ``load``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slm.data import align_labels
from slm.data.loading import read_texts
from slm.durations import parse_duration
from slm.errors import ConfigError
from slm.fileio import atomic_directory, claim_output_files, claim_output_folder, remove_output_folder
from slm.logs import quiet_transformers
from slm.pipeline import (
    MODEL_NAMES,
    DataSource,
    Splits,
    checkpoint_dir_for,
    component_metrics,
    environment,
    prepare_splits,
    summary_metrics,
)
from slm.reports import recommend
from slm.runtime.bundle import Bundle, load
from slm.training.config import TrainConfig, check_private_run
from slm.training.distributed import Launch

if TYPE_CHECKING:
    from slm.training.tune import TuneResult

__all__ = ["Bundle", "evaluate", "load", "train", "tune"]

log = logging.getLogger(__name__)


def train(
    data: str | Path,
    *,
    output: str | Path,
    text_col: str | None = None,
    label_col: str | None = None,
    label_cols: list[str] | None = None,
    label_sep: str | None = None,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    val_size: float = 0.1,
    test_size: float = 0.1,
    config: TrainConfig | None = None,
    margin_points: float = 1.0,
    resume: bool = False,
    show_progress: bool = True,
    unlabeled: str | Path | None = None,
    unlabeled_text_col: str | None = None,
    launch: Launch | None = None,
    force: bool = False,
    redact: bool = False,
) -> Bundle | None:
    """Fine-tune a base model on labelled text, evaluate it next to an n-gram baseline, write a bundle.

    ``launch`` (:class:`slm.training.distributed.Launch`) trains with N processes per node over
    M nodes (PyTorch DDP, started like torchrun); rank 0 writes the bundle, and a node without
    rank 0 returns None.

    ``config.method`` chooses how (full fine-tuning, LoRA/AdaLoRA, few-shot, head-only, or
    "auto"). ``unlabeled``: a file of unlabelled domain texts for self-training.
    The bundle at ``output`` is replaced only when everything succeeded; checkpoints live in
    ``<output>.ckpt`` until then, so an interrupted run continues with ``resume=True``. A folder at
    ``output`` holding files slm did not write is refused before any work, or with ``force`` moved aside.

    ``redact``: replace personal data (e-mail addresses; phone, card, IBAN and ID numbers; IPs; URLs; birth
    dates) in every text, training, validation and test, with placeholders as it is read, so neither the
    model, the n-gram vocabulary nor the report's examples hold any (:mod:`slm.privacy`).

    ``show_progress``: progress bars and the per-epoch log lines; with False no bar is drawn. Notes,
    warnings and "bundle written" are log records of the ``slm`` logger: shown only where the program
    configures logging (the CLI shows them on stderr), never printed by the library.
    """
    config = config or TrainConfig()
    if unlabeled is not None and resume:
        raise ConfigError("--resume cannot continue a self-training run (--unlabeled); start it again")
    if margin_points < 0:
        raise ConfigError("margin must be >= 0 points")
    if config.private:
        check_private_run(
            config, unlabeled=unlabeled is not None, resume=resume, distributed=bool(launch and launch.distributed)
        )
    output = Path(output)
    for folder in (output, checkpoint_dir_for(output)):  # before the data is read, let alone a model trained
        claim_output_folder(folder, force=force)
    source = DataSource(data, text_col, label_col, label_cols, label_sep, redact)
    unlabeled_texts = None if unlabeled is None else read_texts(unlabeled, unlabeled_text_col)
    if unlabeled_texts is not None and redact:
        from slm.privacy import Redactor

        unlabeled_texts = [Redactor().redact(text) for text in unlabeled_texts]
    splits = prepare_splits(
        source, validation=validation, test=test, val_size=val_size, test_size=test_size, seed=config.seed
    )
    from slm.training.run import run_training  # heavy imports only once the data is known to be good

    quiet_transformers()
    # in-process: the bundle (None on a rank that writes none); distributed: rank 0's bundle path
    runner: Callable[..., Bundle | str | None] = run_training
    if launch is not None and launch.distributed:
        if unlabeled_texts is not None:
            raise ConfigError("distributed training (--nproc/--nnodes) cannot self-train (--unlabeled)")
        from functools import partial

        from slm.training.distributed import launch as run_distributed

        runner = partial(run_distributed, _distributed_job, launch)
    result = runner(
        splits,
        config,
        output=output,
        margin_points=margin_points,
        resume=resume,
        show_progress=show_progress,
        data_path=str(data),
        split=_split_record(source, validation, test, val_size, test_size, config.seed),
        unlabeled=unlabeled_texts,
    )
    remove_output_folder(checkpoint_dir_for(output))
    if isinstance(result, str):  # a distributed run: rank 0 wrote the bundle
        return load(result)
    return result


def _split_record(
    source: DataSource,
    validation: str | Path | None,
    test: str | Path | None,
    val_size: float,
    test_size: float,
    seed: int,
) -> dict[str, Any]:
    """How the data was read and split, for the manifest (``slm evaluate`` and ``--resume`` read it back)."""
    return {
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
        "validation": None if validation is None else str(validation),
        "test": None if test is None else str(test),
        "text_col": source.text_col,
        "label_col": source.label_col,
        "label_cols": source.label_cols,
        "label_sep": source.label_sep,
        "redact": source.redact,
    }


def _distributed_job(splits: Splits, config: TrainConfig, **options: Any) -> str | None:
    """One rank of a distributed ``train``: its share of the cores, the same run; rank 0 returns the bundle path."""
    import dataclasses
    import os

    from slm.training.run import run_training

    quiet_transformers()
    if config.threads is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        config = dataclasses.replace(config, threads=max(1, (os.cpu_count() or 1) // local))
    bundle = run_training(splits, config, **options)
    return None if bundle is None else str(bundle.path)


def tune(
    data: str | Path,
    *,
    output: str | Path,
    budget: str | float = "20m",
    text_col: str | None = None,
    label_col: str | None = None,
    label_cols: list[str] | None = None,
    label_sep: str | None = None,
    validation: str | Path | None = None,
    val_size: float = 0.1,
    test_size: float = 0.1,
    config: TrainConfig | None = None,
    methods: tuple[str, ...] | None = None,
    max_train_examples: int | None = None,
    show_progress: bool = True,
    force: bool = False,
) -> TuneResult:
    """Search training hyper-parameters with Optuna for ``budget`` ('20m', '90s' or seconds).

    Uses the same train/validation split as ``train`` with the same sizes and seed (the test
    split is held out and never looked at). Writes ``best_config.json``, ``trials.md``/``.json``,
    ``summary.json`` and the Optuna study (``study.db``, SQLite) to ``output``; returns a TuneResult.
    ``max_train_examples``: trials train on a stratified sample of this many texts (default: sized
    so the default configuration takes a quarter of the budget; 0: all of them). Files of those names in
    ``output`` that slm did not write are refused, or with ``force`` moved aside.
    """
    from slm.training.tune import TUNABLE_METHODS, TUNE_FILES, check_methods

    config = config or TrainConfig()
    methods = tuple(methods or TUNABLE_METHODS)
    check_methods(methods)
    if config.private:
        raise ConfigError(
            "slm tune does not search differentially private runs: every trial would spend privacy budget on the "
            "same rows; train with --dp-epsilon and the measured default recipe"
        )
    # A number is seconds; a bare number in a string ("3", as typed after --budget) is minutes.
    seconds = parse_duration(budget, bare_unit="s" if isinstance(budget, int | float) else "m", what="budget")
    if max_train_examples is not None and max_train_examples < 0:
        raise ConfigError("max train examples must be >= 0 (0 uses all)")
    output = Path(output)
    claim_output_files(output, TUNE_FILES, force=force)
    source = DataSource(data, text_col, label_col, label_cols, label_sep)
    splits = prepare_splits(
        source, validation=validation, test=None, val_size=val_size, test_size=test_size, seed=config.seed
    )
    from slm.training.tune import tune as run_tune

    quiet_transformers()
    return run_tune(
        splits,
        output=output,
        budget_seconds=seconds,
        base=config,
        methods=methods,
        max_train_examples=max_train_examples,
        show_progress=show_progress,
    )


def evaluate(
    bundle: str | Path | Bundle,
    data: str | Path,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    label_cols: list[str] | None = None,
    label_sep: str | None = None,
    output: str | Path | None = None,
    margin_points: float = 1.0,
    force: bool = False,
    redact: bool = False,
    robustness: bool = True,
) -> dict[str, Any]:
    """Evaluate every component of a bundle on a labelled file; optionally write report files.

    ``redact``: replace personal data in the texts as they are read (as ``train(redact=True)`` does), so the
    report's mistake lists hold none.

    ``robustness``: add the report's ``robustness`` section (:mod:`slm.reports.robustness`): the shipped model
    and the n-gram baseline on perturbed copies of at most 500 of the texts (typos, casing, punctuation,
    whitespace; for Chinese width forms and traditional characters), and per slice of text length and label
    frequency (the bundle's training label counts when its manifest records them).

    ``output`` receives the report (replaced as a whole); a folder holding files slm did not write is refused
    before any work, or with ``force`` moved aside.
    """
    if output is not None:
        claim_output_folder(Path(output), force=force)
    model = bundle if isinstance(bundle, Bundle) else load(bundle)
    ds, data_report = DataSource(data, text_col, label_col, label_cols, label_sep, redact).load(min_classes=1)
    ds = align_labels(ds, model.labels, multi_label=model.multi_label)
    quiet_transformers()
    targets = ds.targets(model.labels)
    started = time.perf_counter()
    probas = model.component_probas(ds.texts)
    thresholds = {c: model.thresholds(c).tolist() for c in probas}
    models = component_metrics(model.task, targets, probas, thresholds, model.labels, ds.texts)
    candidate = "ensemble" if model.default_component == "ensemble" else "transformer"
    report = {
        "title": f"slm evaluation: {model.path.name} on {Path(data).name}",
        "task": model.task,
        "dataset": {"source": str(data), "splits": {"test": len(ds)}, **data_report.to_dict()},
        "models": models,
        "shipped": candidate,
        "recommendation": recommend(models, task=model.task, candidate=candidate, margin_points=margin_points),
        "evaluation_seconds": round(time.perf_counter() - started, 2),
        "summary": summary_metrics(models, model.task),
        "environment": environment(),
    }
    if robustness:
        report["robustness"] = _robustness(model, ds.texts, targets, probas, thresholds, candidate)
    if output is not None:
        from slm.reports import write_report

        with atomic_directory(Path(output)) as staging:
            write_report(report, staging)
        log.info(f"report written to {output}")
    return report


def _robustness(
    model: Bundle,
    texts: list[str],
    targets: np.ndarray,
    probas: dict[str, np.ndarray],
    thresholds: dict[str, list[float]],
    shipped: str,
) -> dict[str, Any]:
    """The evaluation's robustness section: the shipped component and the n-gram baseline (when the bundle
    has one) side by side; label-frequency slices by the training label counts the manifest records, and the
    training run's seed, so evaluating on its test file reproduces the training report's section."""
    from slm.reports.robustness import DEFAULT_SEED, robustness_report

    components = [c for c in dict.fromkeys((shipped, "ngram")) if c in probas]
    reference = model.manifest.drift_reference
    seed = ((model.manifest.training or {}).get("config") or {}).get("seed", DEFAULT_SEED)

    over_limit, token_limit = model.over_token_limit(texts) or (None, None)

    def predict(batch: list[str]) -> dict[str, np.ndarray]:
        perturbed = model.component_probas(batch)
        return {MODEL_NAMES[c]: perturbed[c] for c in components}

    return robustness_report(
        texts,
        targets,
        {MODEL_NAMES[c]: probas[c] for c in components},
        predict,
        task=model.task,
        labels=model.labels,
        thresholds={MODEL_NAMES[c]: thresholds[c] for c in components},
        label_counts=None if reference is None else reference.label_counts,
        label_counts_source="training (drift reference)",
        seed=seed if isinstance(seed, int) else DEFAULT_SEED,
        over_limit=over_limit,
        token_limit=token_limit,
    )
