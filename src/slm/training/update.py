"""``slm update``: train a bundle's model further on feedback, new labels welcome, and gate it against its parent.

The candidate starts from the parent's weights (its head grown by one row per new label), replays a
sample of the original training texts so the known labels are not forgotten, refits the n-gram side on
the original training split plus the feedback, and is compared with the parent on (a) the original test
split and (b) a held-out slice of the feedback. It is written only when (b) improves and (a) drops by at
most the tolerance; otherwise :class:`GateRefused` says both numbers in one line.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from slm.bundle.manifest import read_manifest
from slm.bundle.schema import BaseModelRef, DriftReference, LineageStep, Manifest
from slm.data.dataset import TextDataset
from slm.errors import BundleError, ConfigError
from slm.logs import DONE, HEADING
from slm.models.encoder import EncoderClassifier, classifier_from_config
from slm.models.ensemble import ensemble_probabilities, probabilities
from slm.models.ngram import NgramClassifier
from slm.models.ngram import settings_for as ngram_settings
from slm.models.registry import ResolvedModel
from slm.pipeline import MODEL_NAMES, Splits, checkpoint_dir_for, recorded_splits
from slm.reports.robustness import summary as robustness_summary
from slm.runtime.bundle import Bundle
from slm.training.batching import encode_texts, load_tokenizer
from slm.training.config import TrainConfig
from slm.training.fit import fit_transformer
from slm.training.gate import Comparison, GateRefused, UpdateOptions
from slm.training.run import _evaluate, _manifest, _robustness, _Tokenized, _write_bundle
from slm.training.trainer import predict_embeddings, predict_logits, set_threads
from slm.training.update_data import hold_out, labelled, rehearsal_sample, usable_feedback

log = logging.getLogger(__name__)


@dataclass
class UpdateResult:
    """What :func:`run_update` wrote (or would have) and why."""

    manifest: Manifest
    comparison: Comparison
    new_labels: list[str]
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    """The data of one update: everything split and labelled with the grown label list."""

    labels: list[str]
    new_labels: list[str]
    train: TextDataset  # rehearsal + feedback (training part, repeated) + more data
    ngram_train: TextDataset  # the whole original training split + feedback (training part) + more data
    splits: Splits  # train=train, validation=original validation + feedback (training part), test=original test
    selection: TextDataset  # the original validation split alone: what neither model trained on
    held_out: TextDataset
    feedback_train: int
    dropped: dict[str, int]


def run_update(
    parent: Path,
    feedback: TextDataset,
    output: Path,
    *,
    more: TextDataset | None = None,
    weights: Path | None = None,
    options: UpdateOptions | None = None,
    show_progress: bool = True,
) -> UpdateResult:
    """Warm-start ``parent``'s model on ``feedback`` (+ ``more``), gate it, and write it to ``output``.

    ``weights``: the bundle holding the PyTorch weights to start from when ``parent`` has none (an int8
    export; default ``parent``). The candidate is compared with ``parent`` itself, as served.
    ``output`` is written (atomically) only when the gate passes; :class:`GateRefused` otherwise.
    """
    options = (options or UpdateOptions()).validated()
    started = time.perf_counter()
    manifest = read_manifest(parent)
    weights = weights or parent
    source = manifest if weights == parent else read_manifest(weights)
    _check_parent(weights, source)
    plan = _plan(manifest, feedback, more, options)
    config = _config(source, options)
    threads = set_threads(config.threads)
    assert source.components.transformer is not None  # checked above
    tokenizer, pad_id = load_tokenizer(weights / source.components.transformer.tokenizer)
    data = _tokenize(tokenizer, pad_id, plan, config)
    log.info(
        f"update: {plan.feedback_train:,} feedback texts to learn from ({options.feedback_repeats}x an epoch), "
        f"{len(plan.held_out):,} held out, {len(plan.train) - plan.feedback_train * options.feedback_repeats:,} "
        "replayed or added; new labels: "
        f"{', '.join(plan.new_labels) or 'none'}",
        extra=HEADING,
    )
    ngram = _fit_ngram(plan, config.seed)
    model = _warm_model(weights, source, plan, data, config)
    fitted = fit_transformer(
        "full", weights / "model", len(plan.labels), data.enc["train"], data.targets["train"],
        data.enc["validation"], data.targets["validation"], config, pad_id=pad_id, multi_label=False,
        checkpoint_dir=checkpoint_dir_for(output), data_fingerprint=plan.train.fingerprint(),
        show_progress=show_progress, warm_start=model,
    )  # fmt: skip
    evaluation = _evaluate(fitted.model, ngram, *_for_selection(data, plan, config), config)
    evaluation.drift = _drift_reference(evaluation.drift, plan)
    comparison = _compare(parent, manifest, plan, evaluation, fitted.model, ngram, data, options)
    seconds = time.perf_counter() - started
    record = _record(parent, manifest, plan, comparison, options, seconds, fitted.info)
    new_manifest = _new_manifest(parent, manifest, source, plan, config, fitted.model, evaluation, record, threads)
    result = UpdateResult(new_manifest, comparison, plan.new_labels, seconds, record)
    if not comparison.promoted:
        raise GateRefused(f"the update was not promoted, {parent} stays: {comparison.describe()}", comparison)
    report = {"title": f"slm update of {parent.name}", "task": "single_label", "update": record,
              "models": evaluation.models, "shipped": evaluation.default}  # fmt: skip
    robustness = _robustness(fitted.model, ngram, data, plan.splits, config, evaluation)
    if robustness:  # scored once promoted: a refused candidate is not written
        report["robustness"] = robustness
        new_manifest.metrics = {**(new_manifest.metrics or {}), "robustness": robustness_summary(robustness)}
    _write_bundle(output, tokenizer, fitted.model, ngram, report, new_manifest)
    log.info(f"update promoted: {comparison.describe()}", extra=DONE)
    return result


def _check_parent(parent: Path, manifest: Manifest) -> None:
    if manifest.task != "single_label":
        raise ConfigError(f"{parent}: slm update trains single-label classifiers (this bundle is {manifest.task})")
    spec = manifest.components.transformer
    if spec is None or not (parent / spec.weights).is_file():
        raise BundleError(
            f"{parent} has no PyTorch weights to train further (a static or ONNX-only bundle): update the bundle "
            "it was derived from"
        )


def _plan(manifest: Manifest, feedback: TextDataset, more: TextDataset | None, options: UpdateOptions) -> _Plan:
    """Split the feedback, draw the rehearsal, and grow the label list (old labels first, in their order)."""
    original = recorded_splits(manifest, what="slm update replays the original training data and scores the "
                               "original test split: restore that file")  # fmt: skip
    if not len(original.test):
        raise ConfigError("this bundle was trained without a test split: slm update needs one to check that the "
                          "known labels are kept (train with --test-size > 0 or --test FILE)")  # fmt: skip
    known = list(manifest.labels or [])
    test_texts = set(original.test.texts)
    usable, dropped = usable_feedback(feedback, test_texts)
    extra = usable_feedback(more, test_texts)[0] if more is not None else ([], [])
    new_labels = sorted({*usable[1], *extra[1]} - set(known))
    labels = known + new_labels
    fb_train, held = hold_out(usable, options.holdout, options.seed)
    repeated = (fb_train[0] * options.feedback_repeats, fb_train[1] * options.feedback_repeats)
    if not held[0]:
        raise ConfigError(
            "too little feedback to judge an update: give at least 2 corrected texts of some label "
            f"(got {len(usable[0])} usable texts)"
        )
    replay = rehearsal_sample(original.train, options.rehearsal, options.seed)
    train = labelled([*replay[0], *repeated[0], *extra[0]], [*replay[1], *repeated[1], *extra[1]], labels)
    ngram_train = labelled([*original.train.texts, *fb_train[0], *extra[0]],
                           [*original.train.labels, *fb_train[1], *extra[1]], labels)  # fmt: skip
    # Epochs are chosen on the original validation split plus the feedback's training rows: the new labels
    # have no other labelled texts, and the held-out feedback must stay unseen to judge the candidate.
    validation = labelled([*original.validation.texts, *fb_train[0]], [*original.validation.labels, *fb_train[1]],
                          labels)  # fmt: skip
    test = labelled(original.test.texts, original.test.labels, labels)
    splits = Splits(train, validation, test, original.report)
    held_out = labelled(held[0], held[1], labels)
    selection = labelled(original.validation.texts, original.validation.labels, labels)
    return _Plan(labels, new_labels, train, ngram_train, splits, selection, held_out, len(fb_train[0]), dropped)


def _config(manifest: Manifest, options: UpdateOptions) -> TrainConfig:
    """The parent's training settings, with the update's epochs, learning rate and seed; no early stop."""
    recorded = dict((manifest.training or {}).get("config") or {})
    known = {k: v for k, v in recorded.items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**known) if known else TrainConfig()
    return replace(config, method="full", epochs=options.epochs, patience=options.epochs, seed=options.seed,
                   learning_rate=options.learning_rate, max_minutes=None, lexicon=None)  # fmt: skip


def _tokenize(tokenizer, pad_id: int, plan: _Plan, config: TrainConfig) -> _Tokenized:
    parts = {"train": plan.splits.train, "validation": plan.splits.validation, "test": plan.splits.test}
    enc = {name: encode_texts(tokenizer, ds.texts, config.max_length) for name, ds in parts.items()}
    targets = {name: ds.targets(plan.labels) for name, ds in parts.items()}
    return _Tokenized(tokenizer, pad_id, enc, targets, {name: e.n_truncated for name, e in enc.items()})


def _for_selection(data: _Tokenized, plan: _Plan, config: TrainConfig) -> tuple[_Tokenized, Splits]:
    """The tokenized splits with validation = the original validation split alone, to choose the shipped
    component, the ensemble's weight and its prior shift on.

    The feedback's training rows are in the validation split the epochs are chosen on, but both models trained
    on them, and there the n-gram side, which all but memorises its training texts, looked best: chosen with
    them, the ensemble gave it 0.75 of the weight and served the new intents worse than the transformer alone
    (BANKING77, 17 new intents: 71.5% against 82.9%; docs/update.md, "Measured").
    """
    enc = {**data.enc, "validation": encode_texts(data.tokenizer, plan.selection.texts, config.max_length)}
    targets = {**data.targets, "validation": plan.selection.targets(plan.labels)}
    chosen = _Tokenized(data.tokenizer, data.pad_id, enc, targets, data.truncated)
    return chosen, replace(plan.splits, validation=plan.selection)


def _fit_ngram(plan: _Plan, seed: int) -> NgramClassifier:
    started = time.perf_counter()
    ds = plan.ngram_train
    # Balanced class weights: a new label has its few feedback texts against a known label's whole training
    # split. Unweighted, the n-gram side all but never predicted the new labels, and the ensemble followed it
    # (BANKING77, 17 new intents with 15 texts each: 69% on the held-out feedback; the transformer alone 82%).
    model = NgramClassifier(multi_label=False, seed=seed, class_weight="balanced", **ngram_settings(ds.texts))
    model.fit(ds.texts, ds.targets(plan.labels), n_classes=len(plan.labels))
    log.info(f"n-gram side refitted on {len(ds):,} texts in {time.perf_counter() - started:.1f}s")
    return model


def _warm_model(
    parent: Path, manifest: Manifest, plan: _Plan, data: _Tokenized, config: TrainConfig
) -> EncoderClassifier:
    """The parent's classifier, its head grown by one row per new label.

    A new label's row starts as the mean pooled embedding of its feedback texts, scaled to the norm of the
    known rows, and its bias as their mean ("weight imprinting"): the new label is predictable from the
    first step instead of learning from a random row.
    """
    spec = manifest.components.transformer
    assert spec is not None
    model = classifier_from_config(
        AutoConfig.from_pretrained(parent / Path(spec.config).parent), len(manifest.labels or [])
    )
    model.load_state_dict(load_file(str(parent / spec.weights)))
    model.dropout.p = config.dropout
    if not plan.new_labels:
        return model
    old = model.head
    grown = torch.nn.Linear(old.in_features, len(plan.labels))
    with torch.no_grad():
        grown.weight[: old.out_features] = old.weight
        grown.bias[: old.out_features] = old.bias
        scale = old.weight.norm(dim=1).mean()
        for offset, label in enumerate(plan.new_labels):
            texts = [t for t, lab in zip(plan.train.texts, plan.train.labels, strict=True) if lab == label]
            centre = _mean_embedding(model, data, texts, config)
            grown.weight[old.out_features + offset] = centre / centre.norm().clamp(min=1e-6) * scale
            grown.bias[old.out_features + offset] = old.bias.mean()
    model.head = grown
    return model


def _mean_embedding(model: EncoderClassifier, data: _Tokenized, texts: list[str], config: TrainConfig) -> torch.Tensor:
    """The mean of the texts' unit-length pooled embeddings (batched by length: memory bounded)."""
    pooled = predict_embeddings(model, encode_texts(data.tokenizer, texts, config.max_length), data.pad_id)
    return torch.nn.functional.normalize(torch.from_numpy(pooled), dim=-1).mean(dim=0)


def _drift_reference(reference: DriftReference | None, plan: _Plan) -> DriftReference | None:
    """The served label mix to expect: the original training split plus the feedback, not the rehearsal sample
    the update trained on (uniform by construction)."""
    if reference is None:
        return None
    counts = Counter(plan.ngram_train.labels)
    return replace(reference, label_counts={label: counts.get(label, 0) for label in plan.labels}, source="update")


def _compare(parent: Path, manifest: Manifest, plan: _Plan, evaluation, model, ngram, data: _Tokenized,
             options: UpdateOptions) -> Comparison:  # fmt: skip
    """Both models on the original test split (every text of a known label) and on the held-out feedback.

    The candidate's test accuracy is the one :func:`_evaluate` just measured; the parent's is its manifest's
    (the same fingerprint-checked split), so neither model predicts the test split twice.
    """
    parent_bundle = Bundle(parent)
    candidate_original = float(evaluation.models[MODEL_NAMES[evaluation.default]]["accuracy"])
    held = plan.held_out
    held_enc = encode_texts(data.tokenizer, held.texts, _max_length(manifest))
    candidate_held = _candidate_proba(model, ngram, held_enc, held.texts, data.pad_id, evaluation)
    candidate_labels = np.array(plan.labels)[candidate_held.argmax(axis=1)]
    parent_labels = np.array(parent_bundle.labels)
    parent_held = parent_labels[parent_bundle.predict_proba(held.texts).argmax(axis=1)]
    return Comparison(
        parent_original=_parent_accuracy(parent_bundle, manifest, plan.splits.test),
        candidate_original=candidate_original,
        parent_feedback=float(np.mean(parent_held == np.array(held.labels))),
        candidate_feedback=float(np.mean(candidate_labels == np.array(held.labels))),
        n_original=len(plan.splits.test),
        n_feedback=len(held),
        tolerance=options.tolerance,
    )


def _parent_accuracy(parent: Bundle, manifest: Manifest, test: TextDataset) -> float:
    """The parent's accuracy on the original test split: recorded in its manifest, else measured now."""
    metrics = manifest.metrics or {}
    recorded = (metrics.get("test") or {}).get(MODEL_NAMES.get(manifest.default_component or "", ""), {})
    if metrics.get("evaluated_on") == "test" and isinstance(recorded.get("accuracy"), float):
        return float(recorded["accuracy"])
    predicted = np.array(parent.labels)[parent.predict_proba(test.texts).argmax(axis=1)]
    return float(np.mean(predicted == np.array(test.labels)))


def _max_length(manifest: Manifest) -> int:
    spec = manifest.components.transformer
    return spec.max_length if spec is not None and spec.max_length else 128


def _candidate_proba(model, ngram: NgramClassifier, enc, texts: list[str], pad_id: int, evaluation) -> np.ndarray:
    """The shipped component's probabilities for ``texts`` (``enc``: the same texts, tokenized)."""
    transformer = probabilities(predict_logits(model, enc, pad_id), False)
    if evaluation.default == "transformer":
        return transformer
    ngram_proba = ngram.predict_proba(texts)
    if evaluation.default == "ngram":
        return ngram_proba
    return ensemble_probabilities(transformer, ngram_proba, evaluation.weight, evaluation.prior_shift)


def _record(parent: Path, manifest: Manifest, plan: _Plan, comparison: Comparison, options: UpdateOptions,
            seconds: float, info: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    digest = manifest.manifest_digest.value if manifest.manifest_digest is not None else None
    return {
        "parent": str(parent.resolve()),
        "parent_digest": digest,
        "parent_created": manifest.created,
        "new_labels": plan.new_labels,
        "feedback": {
            "used_for_training": plan.feedback_train,
            "held_out": len(plan.held_out),
            "dropped": plan.dropped,
            "fingerprint": plan.train.fingerprint(),
        },  # fmt: skip
        "rehearsal_per_label": options.rehearsal,
        "feedback_repeats": options.feedback_repeats,
        "train_texts": len(plan.train),
        "ngram_train_texts": len(plan.ngram_train),
        "comparison": comparison.to_dict(),
        "epochs": options.epochs,
        "learning_rate": options.learning_rate,
        "fine_tune_seconds": info.get("train_seconds"),
        "wall_seconds": round(seconds, 1),
    }


def _new_manifest(parent: Path, manifest: Manifest, source: Manifest, plan: _Plan, config: TrainConfig, model,
                  evaluation, record: dict[str, Any], threads: int) -> Manifest:  # fmt: skip
    """The candidate's manifest: the parent's base model and original data record, the update's lineage.

    ``source``: the manifest of the bundle the weights came from (the parent's, unless it is ONNX-only).
    """
    base = manifest.base_model if isinstance(manifest.base_model, BaseModelRef) else None
    origin = (base.source or "") if base else ""
    sha256 = dict(base.sha256 or {}) if base else {}
    resolved = ResolvedModel(name=manifest.base_model_name or "", path=parent, source=origin, sha256=sha256)
    training = {**(source.training or {}), "update": record}
    new = _manifest(plan.splits, config, resolved, model, evaluation, {}, training, threads,
                    str((manifest.data or {}).get("source", "")), None)  # fmt: skip
    data = dict(manifest.data or {})
    data["updates"] = [*data.get("updates", []), {"fingerprint": record["feedback"]["fingerprint"],
                                                  "n_train": len(plan.train)}]  # fmt: skip
    step = LineageStep(step="update", parent=str(parent.resolve()), parent_created=manifest.created,
                       parent_digest=record["parent_digest"])  # fmt: skip
    return replace(new, data=data, lineage=[*(manifest.lineage or []), step], base_model=manifest.base_model,
                   recommendation=None)  # fmt: skip
