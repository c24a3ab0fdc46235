"""Stratified, seeded train/validation/test splits, and label alignment for user-given eval files."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from slm.data.dataset import TextDataset
from slm.errors import ConfigError, DataError

MAX_NAMED = 5


def _check_sizes(val_size: float, test_size: float) -> None:
    for name, size in (("validation", val_size), ("test", test_size)):
        if not 0 <= size < 1:
            raise ConfigError(f"{name} size must be a fraction in [0, 1), got {size}")
    if val_size + test_size >= 1:
        raise ConfigError(
            f"validation size {val_size} + test size {test_size} leaves nothing for training; their sum must be below 1"
        )


def _worst_held_out(n: int, fraction: float) -> int:
    """Most rows of an ``n``-row class a stratified cut of ``fraction`` may hold out.

    sklearn gives each class ``floor(n * kept_fraction)`` kept rows, plus possibly one, so a
    class loses at most ``floor(n * fraction) + 1`` (a safe bound; exact counts also depend on
    rounding of the total).
    """
    if fraction <= 0:
        return 0
    return min(n, math.floor(n * fraction + 1e-9) + 1)


def _fits(n: int, val_size: float, test_size: float) -> bool:
    """Whether an ``n``-example class keeps >= 1 training row and can be stratified at each cut."""
    if test_size > 0 and n < 2:
        return False
    rest = n - _worst_held_out(n, test_size)
    if val_size > 0:
        if rest < 2:
            return False
        rest -= _worst_held_out(rest, val_size / (1 - test_size))
    return rest >= 1


def min_examples_per_class(val_size: float = 0.1, test_size: float = 0.1) -> int:
    """Fewest examples each class needs for a stratified train/validation/test split.

    1 with no held-out split; 2 with one small held-out split; 3 with both (more for large sizes).
    """
    _check_sizes(val_size, test_size)
    n = 1
    while not _fits(n, val_size, test_size):
        n += 1
    return n


def _split_names(val_size: float, test_size: float) -> str:
    names = ["train"] + (["validation"] if val_size > 0 else []) + (["test"] if test_size > 0 else [])
    return "/".join(names)


def _prefix(ds: TextDataset) -> str:
    return f"{ds.source}: " if ds.source else ""


def _error(ds: TextDataset, message: str) -> DataError:
    return DataError(_prefix(ds) + message)


def _named(items: Sequence[tuple[str, int]], unit: str = "") -> str:
    shown = ", ".join(f"{name!r} ({count}{unit})" for name, count in items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def _check_class_sizes(ds: TextDataset, val_size: float, test_size: float) -> None:
    """Every label that occurs has enough examples for the requested stratified split."""
    need = min_examples_per_class(val_size, test_size)
    counts = ds.label_counts()
    short = sorted(
        ((name, count) for name, count in counts.items() if count < need),
        key=lambda kv: (kv[1], kv[0]),
    )
    if not short:
        return
    splits = _split_names(val_size, test_size)
    if len(short) == 1:
        name, count = short[0]
        raise _error(
            ds,
            f"class {name!r} has {count} example{'' if count == 1 else 's'}; splitting into {splits} "
            f"needs at least {need} per class (add examples, remove the class, or lower the split sizes)",
        )
    raise _error(
        ds,
        f"{len(short)} classes have too few examples: {_named(short)}; splitting into {splits} needs "
        f"at least {need} per class (add examples, remove those classes, or lower the split sizes)",
    )


def _strata(ds: TextDataset) -> np.ndarray:
    """Per-row stratum: the label (single-label) or the row's rarest label (multi-label)."""
    if not ds.multi_label:
        return np.array(ds.labels, dtype=object)
    counts = ds.label_counts()
    rarest = [min(labs, key=lambda lab: (counts[lab], lab)) if labs else "" for labs in ds.labels]
    return np.array(rarest, dtype=object)


def _held_count(n: int, fraction: float) -> int:
    """Rows a ``fraction`` of ``n`` holds out (rounded up like sklearn; at least 1 if fraction > 0)."""
    if fraction <= 0:
        return 0
    return max(1, math.ceil(n * fraction - 1e-9))


def _stratify_problem(strata: np.ndarray, n_held: int, name: str) -> str | None:
    """Why ``strata`` cannot be stratified into ``n_held`` held-out rows, or None if it can."""
    counts = Counter(strata.tolist())
    n_kept = len(strata) - n_held
    lonely = sorted(((k, v) for k, v in counts.items() if v < 2), key=lambda kv: str(kv[0]))
    if lonely:
        return f"{_named(lonely)} would have fewer than 2 examples left when taking the {name} split"
    if n_held < len(counts):
        return (
            f"the {name} split would hold {n_held} rows, fewer than the {len(counts)} classes; "
            f"raise the {name} size to at least {len(counts) / len(strata):.2f} or add data"
        )
    if n_kept < len(counts):
        return (
            f"after the {name} split only {n_kept} rows remain, fewer than the {len(counts)} classes; "
            "lower the split sizes or add data"
        )
    return None


def _cut(
    ds: TextDataset, indices: np.ndarray, strata: np.ndarray, n_held: int, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held-out with ``n_held`` rows), stratified where possible."""
    if n_held == 0:
        return indices, indices[:0]
    sub = strata[indices]
    problem = _stratify_problem(sub, n_held, name)
    if problem and not ds.multi_label:
        raise _error(ds, f"cannot make a stratified {name} split: {problem}")
    stratify = None if problem else sub
    try:
        kept, held = train_test_split(indices, test_size=n_held, stratify=stratify, random_state=seed)
    except ValueError as exc:
        raise _error(ds, f"cannot make the {name} split: {exc}") from exc
    return np.asarray(kept), np.asarray(held)


def _check_train_classes(ds: TextDataset, train: np.ndarray) -> None:
    """Every label that exists keeps at least one training example."""
    counts = ds.label_counts()
    present = ds.subset(train.tolist()).label_counts()
    missing = sorted(name for name in ds.label_names if counts.get(name, 0) and not present.get(name, 0))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:MAX_NAMED])
        raise _error(
            ds,
            f"no training example left for {shown} after splitting; add examples of "
            "these classes or lower the split sizes",
        )


def split_dataset(
    ds: TextDataset, *, val_size: float = 0.1, test_size: float = 0.1, seed: int = 42
) -> tuple[TextDataset, TextDataset, TextDataset]:
    """Stratified (train, validation, test); sizes are fractions of the whole, 0 gives an empty split.

    Deterministic for a given ``seed``; rows keep their file order within each split.
    Multi-label data is stratified on each row's rarest label, or unstratified when that is impossible.
    """
    _check_sizes(val_size, test_size)
    n = len(ds)
    if n == 0:
        raise _error(ds, "cannot split an empty dataset")
    _check_class_sizes(ds, val_size, test_size)
    n_test, n_val = _held_count(n, test_size), _held_count(n, val_size)
    if n - n_test - n_val < 1:
        raise _error(ds, f"{n} rows are too few for {_split_names(val_size, test_size)} splits")
    strata = _strata(ds)
    rest, test = _cut(ds, np.arange(n), strata, n_test, seed, "test")
    train, val = _cut(ds, rest, strata, n_val, seed, "validation")
    _check_train_classes(ds, train)
    return tuple(ds.subset(sorted(part.tolist())) for part in (train, val, test))  # type: ignore[return-value]


def align_labels(ds: TextDataset, label_names: Sequence[str], *, multi_label: bool | None = None) -> TextDataset:
    """A user-given validation/test set re-labelled in the training label order.

    Raises DataError naming labels that training never saw (or a single/multi-label mismatch
    when ``multi_label`` is given).
    """
    if multi_label is not None and multi_label != ds.multi_label:
        kinds = {True: "multi-label", False: "single-label"}
        raise _error(ds, f"is {kinds[ds.multi_label]} but the training data is {kinds[multi_label]}")
    known = set(label_names)
    rows = ds.labels if ds.multi_label else [[lab] for lab in ds.labels]
    unseen = Counter(lab for labs in rows for lab in labs if lab not in known)
    if unseen:
        items = sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0]))
        raise _error(
            ds,
            f"{len(items)} label{'' if len(items) == 1 else 's'} not seen in training: "
            f"{_named(items, ' rows')}; remove those rows or add examples to the training data",
        )
    return dataclasses.replace(ds, label_names=list(label_names))
