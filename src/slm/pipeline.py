"""Train → evaluate → bundle: the steps behind ``slm train`` and ``slm evaluate``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slm.data import TextDataset, align_labels, load_dataset, min_examples_per_class, split_dataset
from slm.data.report import DataReport
from slm.errors import ConfigError
from slm.hardware import machine_info
from slm.reports import multi_label_metrics, single_label_metrics, tune_thresholds

if TYPE_CHECKING:
    from slm.bundle.schema import Manifest

MODEL_NAMES = {"transformer": "transformer", "ngram": "ngram_baseline", "ensemble": "ensemble"}


@dataclass
class DataSource:
    """Where labelled data comes from and which columns hold it."""

    path: str | Path
    text_col: str | None = None
    label_col: str | None = None
    label_cols: list[str] | None = None
    label_sep: str | None = None
    redact: bool = False  # personal data in the texts replaced by placeholders as they are read (slm.privacy)

    def load(self, *, min_per_class: int = 1, min_classes: int = 2) -> tuple[TextDataset, DataReport]:
        loaded = load_dataset(
            self.path,
            text_col=self.text_col,
            label_col=self.label_col,
            label_cols=self.label_cols,
            label_sep=self.label_sep,
            min_per_class=min_per_class,
            min_classes=min_classes,
        )
        if not self.redact:
            return loaded
        from slm.data.redaction import redact_dataset

        return redact_dataset(*loaded)


@dataclass
class Splits:
    train: TextDataset
    validation: TextDataset
    test: TextDataset
    report: DataReport


def prepare_splits(
    source: DataSource,
    *,
    validation: str | Path | None,
    test: str | Path | None,
    val_size: float,
    test_size: float,
    seed: int,
) -> Splits:
    """Load and validate the data, then split it (or use the user's validation/test files)."""
    val_size = 0.0 if validation is not None else val_size
    test_size = 0.0 if test is not None else test_size
    if validation is None and val_size <= 0:
        raise ConfigError("a validation set is needed for early stopping: pass --validation or --val-size > 0")
    data, report = source.load(min_per_class=min_examples_per_class(val_size, test_size))
    train, val, held = split_dataset(data, val_size=val_size, test_size=test_size, seed=seed)
    extra = {}
    for name, path in (("validation", validation), ("test", test)):
        if path is not None:
            other = DataSource(path, source.text_col, source.label_col, source.label_cols, source.label_sep,
                               source.redact)  # fmt: skip
            ds, _ = other.load(min_classes=1)
            extra[name] = align_labels(ds, train.label_names, multi_label=train.multi_label)
    return Splits(train, extra.get("validation", val), extra.get("test", held), report)


def score_function(task: str, targets: np.ndarray, n_labels: int):
    """Validation score used to pick ensemble settings: macro-F1 (single-label) or micro-F1 (multi-label)."""
    from sklearn.metrics import f1_score

    if task == "multi_label":

        def multi(proba: np.ndarray) -> float:
            pred = (proba >= tune_thresholds(targets, proba)).astype(int)
            return float(f1_score(targets.astype(int), pred, average="micro", zero_division=0))

        return multi
    labels = np.arange(n_labels)

    def single(proba: np.ndarray) -> float:
        return float(f1_score(targets, proba.argmax(1), labels=labels, average="macro", zero_division=0))

    return single


def component_metrics(
    task: str,
    targets: np.ndarray,
    probas: dict[str, np.ndarray],
    thresholds: Mapping[str, list[float] | None],
    labels: list[str],
    texts: list[str] | None,
) -> dict[str, dict]:
    """Full metrics for each component, keyed by report model name (``thresholds``: multi-label only)."""
    out = {}
    for component, proba in probas.items():
        if task == "multi_label":
            out[MODEL_NAMES[component]] = multi_label_metrics(
                targets, proba, np.asarray(thresholds[component]), labels, texts
            )
        else:
            out[MODEL_NAMES[component]] = single_label_metrics(targets, proba, labels, texts)
    return out


def summary_metrics(models: dict[str, dict], task: str) -> dict[str, dict]:
    """The headline numbers of each model, for the manifest and the CLI table."""
    keys = (
        ["accuracy", "macro_f1", "micro_f1", "weighted_f1", "ece"]
        if task == "single_label"
        else ["micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "ece"]
    )
    return {name: {k: m[k] for k in keys if k in m} for name, m in models.items()}


def model_summary(
    task: str, targets: np.ndarray, proba: np.ndarray, thresholds: list[float] | None, labels: list[str]
) -> dict:
    """Headline metrics of one model's probabilities (multi-label: at ``thresholds``, default 0.5)."""
    if task == "multi_label" and thresholds is None:
        thresholds = [0.5] * len(labels)
    models = component_metrics(task, targets, {"transformer": proba}, {"transformer": thresholds}, labels, None)
    summary = summary_metrics(models, task)[MODEL_NAMES["transformer"]]
    return {k: round(v, 6) for k, v in summary.items()}


def environment() -> dict:
    """Versions and machine load, recorded next to every timing (a training or evaluation report's fields)."""
    import torch  # noqa: F401  (loaded, so that its thread count is part of the record)

    machine = machine_info(packages=("torch", "transformers"))
    return {
        "load_average": machine["load_average"],
        "threads": machine["threads"],
        "cpu_count": machine["cpu_count"],
        "python": machine["python"],
        "torch": machine["versions"]["torch"],
        "transformers": machine["versions"]["transformers"],
        "platform": machine["platform"],
    }


def checkpoint_dir_for(output: Path) -> Path:
    """Where ``slm train -o OUTPUT`` keeps its resumable checkpoint."""
    return output.with_name(output.name + ".ckpt")


def recorded_source(manifest: Manifest) -> DataSource | None:
    """The training file a bundle's manifest names, with its recorded columns; None if it is gone."""
    data = manifest.data or {}
    source, split = data.get("source"), data.get("split") or {}
    if not source or not Path(source).is_file():
        return None
    return DataSource(source, split.get("text_col"), split.get("label_col"), split.get("label_cols"),
                      split.get("label_sep"), bool(split.get("redact")))  # fmt: skip


def recorded_splits(manifest: Manifest, *, what: str = "pass a labelled validation file with --validation") -> Splits:
    """The train/validation/test splits a bundle was trained on, rebuilt from the split its manifest records.

    Refused in one line (ending in ``what``, the way out) when the manifest records no split, the training
    file is gone, or the file has changed since (its training split's fingerprint differs).
    """
    data = manifest.data or {}
    split = data.get("split")
    source = recorded_source(manifest)
    if not split or source is None:
        gone = f" ({data['source']} is gone)" if data.get("source") and split else ""
        raise ConfigError(f"this bundle does not record a reusable training split{gone}: {what}")
    splits = prepare_splits(
        source,
        validation=split.get("validation"),
        test=split.get("test"),
        val_size=float(split["val_size"]),
        test_size=float(split["test_size"]),
        seed=int(split["seed"]),
    )
    if data.get("fingerprint") and splits.train.fingerprint() != data["fingerprint"]:
        raise ConfigError(f"{source.path} has changed since training: {what}")
    return splits


def recorded_validation(manifest: Manifest) -> TextDataset:
    """The validation split a bundle was trained with, rebuilt from the split recorded in its manifest."""
    return recorded_splits(manifest).validation


def evaluation_set(manifest: Manifest, validation: DataSource | None) -> TextDataset:
    """Labelled texts to gate a compressed variant on: the user's file, else the recorded validation split."""
    if validation is None:
        return recorded_validation(manifest)
    ds, _ = validation.load(min_classes=1)
    return align_labels(ds, list(manifest.labels or []), multi_label=manifest.multi_label)
