"""One training run end to end: baseline, fine-tune, ensemble, evaluation, bundle."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file
from sklearn.metrics import f1_score

from slm import __version__
from slm.bundle.drift_reference import confidence_profile, drift_reference
from slm.bundle.manifest import now_iso, write_manifest
from slm.bundle.schema import (
    BaseModelRef,
    Components,
    DriftReference,
    Ensemble,
    Manifest,
    NgramSpec,
    Privacy,
    TransformerSpec,
)
from slm.console import status
from slm.data.dataset import TextDataset
from slm.errors import ConfigError, SlmError
from slm.fileio import atomic_directory
from slm.logs import DONE, HEADING
from slm.models.auto import BaseModelChoice, detect_languages, is_english, resolve_auto
from slm.models.domain_terms import TermsReport, add_domain_terms
from slm.models.ensemble import combine, ensemble_probabilities, probabilities, tune_prior_shift, tune_weight
from slm.models.ngram import NgramClassifier
from slm.models.ngram import settings_for as ngram_settings
from slm.models.registry import REGISTRY, ResolvedModel, resolve_base_model
from slm.pipeline import (
    Splits,
    checkpoint_dir_for,
    component_metrics,
    environment,
    score_function,
    summary_metrics,
)
from slm.reports import recommend, tune_thresholds, write_report
from slm.reports.recommendation import RunFacts, advise, likely_fixes
from slm.reports.robustness import summary as robustness_summary
from slm.runtime.bundle import Bundle
from slm.training import distributed
from slm.training.batching import Encoded, encode_texts, load_tokenizer
from slm.training.config import TrainConfig
from slm.training.fit import Fitted, fit_transformer
from slm.training.method import MethodChoice, choose_method
from slm.training.robustness import training_robustness
from slm.training.self_training import self_train
from slm.training.trainer import predict_logits, set_threads

log = logging.getLogger(__name__)

# Per-class decision shifts are tuned on validation only for few classes, where they cannot overfit
# much and where imbalance hurts macro-F1 most.
MAX_CLASSES_FOR_PRIOR_SHIFT = 20

SPLIT_NAMES = ("train", "validation", "test")

# What a differentially private bundle holds or was shaped by that the (epsilon, delta) guarantee does not cover
# (recorded in the manifest's privacy record and shown in the report).
NOT_PRIVATE = [
    "the label names and the training label counts (drift_reference.label_counts)",
    "the validation split: it chooses the best epoch and calibrates the head; its rows are not trained on",
    "with --base-model auto, the base model chosen from the training texts' language",
    "the data statistics: split sizes, duplicate and class counts, imbalance ratio, truncated training texts",
]


@dataclass
class _Tokenized:
    """The three splits tokenised once, with their targets and how many texts of each were truncated."""

    tokenizer: Any
    pad_id: int
    enc: dict[str, Encoded]
    targets: dict[str, np.ndarray]
    truncated: dict[str, int]


@dataclass
class _Evaluation:
    """What the fitted components scored on the evaluation split, and the ensemble settings chosen on validation."""

    eval_split: str
    models: dict
    weight: float
    prior_shift: list[float] | None
    thresholds: dict[str, list[float] | None]
    default: str
    drift: DriftReference | None = None
    probas: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # each component's, on eval_split


def _task(splits: Splits) -> str:
    return "multi_label" if splits.train.multi_label else "single_label"


def _parts(splits: Splits) -> dict:
    return {"train": splits.train, "validation": splits.validation, "test": splits.test}


def _fit_ngram(train: TextDataset, seed: int) -> NgramClassifier:
    model = NgramClassifier(multi_label=train.multi_label, seed=seed, **ngram_settings(train.texts))
    model.fit(train.texts, train.targets(), n_classes=len(train.label_names))
    return model


def _fit_baseline(splits: Splits, seed: int, show_progress: bool) -> tuple[NgramClassifier, float]:
    started = time.perf_counter()
    with status("fitting the TF-IDF + logistic-regression baseline…", enabled=show_progress):
        model = _fit_ngram(splits.train, seed)
    seconds = time.perf_counter() - started
    log.info(f"baseline fitted in {seconds:.1f}s")
    return model, seconds


def _refit_ngram(
    baseline: NgramClassifier, splits: Splits, pseudo: TextDataset, seed: int, record: dict
) -> NgramClassifier:
    """The n-gram side refitted on the labelled texts plus the kept round's pseudo-labels.

    Measured on BANKING77 at 8 texts per class (one draw): the n-gram model went from 67.7% to 81.8% test
    accuracy with 64 pseudo-labels per class, where the ensemble's n-gram side had stayed a labelled-only
    model. The labelled-only baseline's scores stay in the self-training record (``ngram_labelled_only``),
    the honest "is the cheap model enough" comparison for a user without the transformer's labels.
    """
    started = time.perf_counter()
    texts = [*splits.train.texts, *pseudo.texts]
    labels = [*splits.train.labels, *pseudo.labels]
    model = _fit_ngram(TextDataset(texts=texts, labels=labels, label_names=splits.train.label_names), seed)
    eval_ds = splits.test if len(splits.test) else splits.validation
    predicted = baseline.predict_proba(eval_ds.texts).argmax(1)
    targets = eval_ds.targets(splits.train.label_names)
    record["ngram_refit_texts"] = len(texts)
    record["ngram_labelled_only"] = {
        "evaluated_on": "test" if len(splits.test) else "validation",
        "accuracy": round(float(np.mean(predicted == targets)), 5),
        "macro_f1": round(float(f1_score(targets, predicted, average="macro", zero_division=0)), 5),
    }
    log.info(f"n-gram side refitted on {len(texts):,} labelled + pseudo-labelled texts in "
             f"{time.perf_counter() - started:.1f}s")  # fmt: skip
    return model


def _default_component(ensemble: bool, score, val: dict[str, np.ndarray]) -> str:
    """Ship the ensemble only when it beats the transformer alone on validation.

    On tiny validation splits (few-shot data) many ensemble weights tie and the chosen blend can
    be worse than the transformer on unseen data; a tie therefore ships the simpler model.
    """
    if not ensemble:
        return "transformer"
    if score(val["ensemble"]) > score(val["transformer"]) + 1e-9:
        return "ensemble"
    log.info(  # a choice made, not a problem: --quiet leaves it out
        "note: the ensemble does not beat the transformer alone on validation; the transformer "
        "is the default (the ensemble stays in the bundle: --component ensemble)"
    )
    return "transformer"


def _describe(splits: Splits) -> None:
    counts = f"train {len(splits.train):,} · validation {len(splits.validation):,} · test {len(splits.test):,}"
    kind = "multi-label" if splits.train.multi_label else "single-label"
    log.info(f"data: {len(splits.train.label_names)} labels ({kind}); {counts}", extra=HEADING)
    for warning in splits.report.warnings:
        log.warning(f"warning: {warning}")


def _choose_base_model(config: TrainConfig, splits: Splits) -> tuple[TrainConfig, BaseModelChoice | None]:
    """Resolve ``--base-model auto`` from the training texts and say which model and why, in one line."""
    config, choice = resolve_auto(config, splits.train.texts)
    if choice is not None:
        log.info(f"base model: {choice.message()}", extra=HEADING)
    return config, choice


@contextlib.contextmanager
def _lexicon_base(
    config: TrainConfig, base: Path, splits: Splits, output: Path
) -> Iterator[tuple[Path, TermsReport | None]]:
    """``(base model path, domain terms)``: with ``--lexicon``, a copy of the base model with the dictionary's
    terms added, beside the output until training ends; otherwise the base model itself and None."""
    if not config.lexicon:
        yield base, None
        return
    Path(output).resolve().parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".slm-lexicon-", dir=Path(output).resolve().parent))
    try:
        texts = None if config.private else splits.train.texts  # its token statistics are not private
        terms = add_domain_terms(base, config.lexicon, workdir / "base", texts)
        log.info(
            f"lexicon: {len(terms.added):,} domain terms added as whole tokens ({terms.already_single:,} "
            f"already were); mean tokens per training text {terms.mean_tokens_before} -> {terms.mean_tokens_after}"
        )
        yield workdir / "base", terms
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _tokenize(base_path: Path, splits: Splits, config: TrainConfig) -> _Tokenized:
    tokenizer, pad_id = load_tokenizer(base_path)
    enc = {name: encode_texts(tokenizer, ds.texts, config.max_length) for name, ds in _parts(splits).items()}
    truncated = {name: e.n_truncated for name, e in enc.items()}
    if truncated["train"]:
        log.warning(
            f"note: {truncated['train']:,} training texts are longer than "
            f"{config.max_length} tokens and were truncated (--max-length)"
        )
    labels = splits.train.label_names
    targets = {name: ds.targets(labels) for name, ds in _parts(splits).items()}
    return _Tokenized(tokenizer, pad_id, enc, targets, truncated)


def _private_config(config: TrainConfig, splits: Splits) -> TrainConfig:
    """A private run ships no n-gram ensemble: its vocabulary and weights come from the texts without noise."""
    if not config.private:
        return config
    if splits.train.multi_label:
        raise ConfigError("--dp-epsilon trains single-label classifiers only (this data is multi-label)")
    if config.ensemble:
        log.info(
            "note: --dp-epsilon turns the n-gram ensemble off (its vocabulary and weights are not private); "
            "the baseline is still scored for comparison and not written into the bundle"
        )
    return dataclasses.replace(config, ensemble=False)


def _choose_method(config: TrainConfig, train_targets: np.ndarray, n_labels: int) -> tuple[str, MethodChoice | None]:
    """The training method (``auto`` resolved from the data, said in one line); refused if a distributed run
    cannot train with it."""
    method, choice = config.method, None
    if method == "auto":
        choice = choose_method(train_targets, n_labels, config)
        method = choice.method
        log.info(f"method: {method} ({choice.reason})", extra=HEADING)
    if distributed.active() and method not in distributed.DISTRIBUTED_METHODS:
        raise ConfigError(f"--nproc trains with --method {', '.join(distributed.DISTRIBUTED_METHODS)}, not {method}")
    return method, choice


def _round_method(method: str, config: TrainConfig, targets: np.ndarray, n_labelled: int, n_labels: int) -> str:
    """``method``, or with ``--method auto`` on a self-training round, the method for the grown training set.

    Pseudo-labels can turn few-shot data into plenty. BANKING77, 8 texts per class (one draw): few-shot
    training 83.8% test accuracy; plus 32 pseudo-labels per class, few-shot again 83.9%; plus 64 per class,
    full fine-tuning 86.4%. So ``auto`` chooses again from the round's own class counts.
    """
    if config.method != "auto" or len(targets) <= n_labelled:
        return method
    choice = choose_method(targets, n_labels, config)
    if choice.method != method:
        log.info(f"method for this round: {choice.method} ({choice.reason})")
    return choice.method


def _fit(
    method: str,
    base_path: Path,
    data: _Tokenized,
    splits: Splits,
    config: TrainConfig,
    *,
    output: Path,
    resume: bool,
    show_progress: bool,
    unlabeled: list[str] | None,
) -> tuple[Fitted, dict | None, float, TextDataset | None]:
    """``(fitted transformer, self-training record or None, wall seconds, pseudo-labelled texts or None)``: one
    fit, or self-training rounds over ``unlabeled`` when given (the pseudo-labels of the kept round)."""
    enc, targets = data.enc, data.targets
    if config.private:
        from slm.training.private import fit_private

        started = time.perf_counter()
        fitted = fit_private(
            base_path,
            len(splits.train.label_names),
            enc["train"],
            targets["train"],
            enc["validation"],
            targets["validation"],
            config,
            pad_id=data.pad_id,
            show_progress=show_progress,
        )
        return fitted, None, time.perf_counter() - started, None

    n_labelled = len(targets["train"])

    def fit(train_enc: Encoded, train_targets: np.ndarray) -> Fitted:
        return fit_transformer(
            _round_method(method, config, train_targets, n_labelled, len(splits.train.label_names)),
            base_path,
            len(splits.train.label_names),
            train_enc,
            train_targets,
            enc["validation"],
            targets["validation"],
            config,
            pad_id=data.pad_id,
            multi_label=splits.train.multi_label,
            checkpoint_dir=checkpoint_dir_for(output),
            data_fingerprint=splits.train.fingerprint(),
            resume=resume,
            show_progress=show_progress,
        )

    started = time.perf_counter()
    if not unlabeled:
        return fit(enc["train"], targets["train"]), None, time.perf_counter() - started, None
    known = set(splits.train.texts) | set(splits.validation.texts) | set(splits.test.texts)
    fresh = [t for t in dict.fromkeys(unlabeled) if t not in known]
    dropped = len(unlabeled) - len(fresh)
    log.info(f"unlabelled texts: {len(fresh):,} new ({dropped:,} duplicates or labelled texts dropped)")
    fitted, self_training, pseudo = self_train(
        fit,
        enc["train"],
        targets["train"],
        enc["validation"],
        targets["validation"],
        encode_texts(data.tokenizer, fresh, config.max_length),
        rounds=config.self_training_rounds,
        pad_id=data.pad_id,
        show_progress=show_progress,
    )
    names = splits.train.label_names
    pseudo_texts = None if pseudo is None else TextDataset(
        texts=[fresh[i] for i in pseudo.rows], labels=[names[k] for k in pseudo.classes], label_names=names
    )  # fmt: skip
    return fitted, self_training, time.perf_counter() - started, pseudo_texts


def _evaluate(model, ngram: NgramClassifier, data: _Tokenized, splits: Splits, config: TrainConfig) -> _Evaluation:
    """Every component's probabilities on validation (to choose the ensemble's weight, prior shift and
    thresholds) and on the test split (validation when there is none), scored there."""
    task, labels, targets = _task(splits), splits.train.label_names, data.targets
    eval_split = "test" if len(splits.test) else "validation"
    eval_ds = splits.test if len(splits.test) else splits.validation
    probas: dict[str, dict[str, np.ndarray]] = {}
    for part in dict.fromkeys(("validation", eval_split)):
        logits = predict_logits(model, data.enc[part], data.pad_id)
        ds = splits.validation if part == "validation" else eval_ds
        probas[part] = {
            "transformer": probabilities(logits, splits.train.multi_label),
            "ngram": ngram.predict_proba(ds.texts),
        }
    val = probas["validation"]
    score = score_function(task, targets["validation"], len(labels))
    weight, _ = tune_weight(val["transformer"], val["ngram"], score)
    if not config.ensemble:
        weight = 1.0
    prior_shift = None
    if task == "single_label" and len(labels) <= MAX_CLASSES_FOR_PRIOR_SHIFT:
        prior_shift = tune_prior_shift(combine(val["transformer"], val["ngram"], weight), score).tolist()
    for p in probas.values():
        p["ensemble"] = ensemble_probabilities(p["transformer"], p["ngram"], weight, prior_shift)
        if config.private:  # no ensemble is shipped: scored as the baseline alone, for comparison
            del p["ensemble"]
    thresholds = {
        c: (tune_thresholds(targets["validation"], p).tolist() if task == "multi_label" else None)
        for c, p in val.items()
    }
    models = component_metrics(task, targets[eval_split], probas[eval_split], thresholds, labels, eval_ds.texts)
    default = _default_component(config.ensemble, score, val)
    drift = _drift(splits, val, default)
    return _Evaluation(eval_split, models, weight, prior_shift, thresholds, default, drift, probas[eval_split])


def _robustness(model, ngram: NgramClassifier, data: _Tokenized, splits: Splits, config: TrainConfig,
                evaluation: _Evaluation) -> dict | None:  # fmt: skip
    """The report's robustness section (None with ``robustness=False``): the shipped model and the n-gram
    baseline under perturbations of the evaluation split, and their per-slice scores."""
    if not config.robustness:
        return None
    split = evaluation.eval_split
    return training_robustness(
        model,
        ngram,
        data.tokenizer,
        pad_id=data.pad_id,
        max_length=config.max_length,
        texts=_parts(splits)[split].texts,
        targets=data.targets[split],
        clean=evaluation.probas,
        thresholds=evaluation.thresholds,
        shipped=evaluation.default,
        weight=evaluation.weight,
        prior_shift=evaluation.prior_shift,
        task=_task(splits),
        labels=splits.train.label_names,
        train_targets=data.targets["train"],
        seed=config.seed,
    )


def _drift(splits: Splits, val: dict[str, np.ndarray], default: str) -> DriftReference | None:
    """The server's drift reference: training label counts and the validation confidence of the transformer
    (what an ONNX export serves) and of the shipped component. None for multi-label models."""
    if splits.train.multi_label or not len(splits.validation):
        return None
    reference = drift_reference(splits.train.labels, splits.train.label_names, val["transformer"])
    if default != "transformer":
        reference.confidence[default] = confidence_profile(val[default])
    return reference


def _non_english(splits: Splits, choice: BaseModelChoice | None, seed: int) -> str | None:
    """The texts' language profile ('97% Chinese (Han script)') when they are not English, else None.

    Profiled here only for advice when the base model was named explicitly (auto already profiled them).
    """
    if choice is not None:
        profile = choice.profile
    else:
        try:
            profile = detect_languages(splits.train.texts, seed=seed)
        except SlmError:  # py3langid missing: advice without the language check rather than no bundle
            return None
    return None if is_english(profile) else profile.describe()


def _advice(
    recommendation: dict,
    config: TrainConfig,
    splits: Splits,
    base_name: str,
    choice: BaseModelChoice | None,
    info: dict,
    truncated: int,
) -> dict:
    """A 'use the baseline' verdict with what is likely to make the transformer win on this data."""
    if recommendation.get("verdict") != "baseline":
        return recommendation
    english_only = getattr(REGISTRY.get(base_name), "languages", None) == "English"
    facts = RunFacts(
        base_model=base_name,
        english_only_base=english_only,
        non_english=_non_english(splits, choice, config.seed) if english_only else None,
        max_length=config.max_length,
        truncated=int(truncated),
        n_train=len(splits.train),
        epochs=config.epochs,
        epochs_run=info.get("epochs_run"),
        best_epoch=info.get("best_epoch"),
        stopped_early=bool(info.get("stopped_early")),
        stopped_by_budget=bool(info.get("stopped_by_budget")),
        max_minutes=config.max_minutes,
    )
    return advise(recommendation, likely_fixes(facts))


def _training_record(
    base: ResolvedModel,
    base_choice: BaseModelChoice | None,
    fitted: Fitted,
    choice: MethodChoice | None,
    self_training: dict | None,
    wall: float,
    data: _Tokenized,
    evaluation: _Evaluation,
    terms: TermsReport | None,
) -> dict:
    """How the transformer was trained, for the report and (without its history) the manifest."""
    return {
        "base_model": base.name,
        "base_model_choice": None if base_choice is None else base_choice.to_dict(),
        **fitted.info,
        "method_choice": None if choice is None else {"method": choice.method, "reason": choice.reason},
        "self_training": self_training,
        "wall_time_s": round(wall, 1),
        "truncated_texts": data.truncated,
        "ensemble_transformer_weight": evaluation.weight,
        "lexicon": None if terms is None else terms.to_dict(),
        "distributed": distributed.describe(),
        **({"privacy": {**fitted.info["privacy"], "not_private": NOT_PRIVATE}} if "privacy" in fitted.info else {}),
    }


def _report(
    splits: Splits,
    base: ResolvedModel,
    data_path: str,
    evaluation: _Evaluation,
    recommendation: dict,
    training: dict,
    baseline_seconds: float,
    robustness: dict | None,
) -> dict:
    return {
        "title": f"slm: {base.name} on {Path(data_path).name}",
        "task": _task(splits),
        "created": now_iso(),
        "dataset": {
            "source": data_path,
            "splits": {k: len(v) for k, v in _parts(splits).items()},
            "evaluated_on": evaluation.eval_split,
            **splits.report.to_dict(),
        },
        "models": evaluation.models,
        "shipped": evaluation.default,
        "recommendation": recommendation,
        "training": training,
        "baseline": {"fit_seconds": round(baseline_seconds, 1)},
        **({"robustness": robustness} if robustness else {}),
        **({"privacy": training["privacy"]} if training.get("privacy") else {}),
        "environment": environment(),
    }


def _manifest(
    splits: Splits,
    config: TrainConfig,
    base: ResolvedModel,
    model,
    evaluation: _Evaluation,
    recommendation: dict,
    training: dict,
    threads: int,
    data_path: str,
    split: dict | None,
    robustness: dict | None = None,
) -> Manifest:
    task, eval_split = _task(splits), evaluation.eval_split
    metrics: dict = {"evaluated_on": eval_split, eval_split: summary_metrics(evaluation.models, task)}
    if robustness:  # free-form metrics: older bundles simply have no such key
        metrics["robustness"] = robustness_summary(robustness)
    privacy = training.get("privacy")
    # A private bundle ships the transformer alone: the n-gram model is fitted on the texts without privacy.
    shipped = ("transformer",) if privacy else ("transformer", "ngram", "ensemble")
    return Manifest(
        slm_version=__version__,
        created=now_iso(),
        task=task,
        labels=splits.train.label_names,
        base_model=BaseModelRef(name=base.name, source=base.source, sha256=base.sha256),
        components=Components(
            transformer=TransformerSpec(
                tokenizer="tokenizer",
                config="model/config.json",
                weights="model/model.safetensors",
                max_length=config.max_length,
                pooling="mean",
                normalize=model.normalize,
                architecture="EncoderClassifier",
            ),
            ngram=None if privacy else NgramSpec(dir="ngram"),
        ),
        default_component=evaluation.default,
        ensemble=None
        if privacy
        else Ensemble(
            transformer_weight=evaluation.weight, log_prior_shift=evaluation.prior_shift, chosen_on="validation"
        ),
        thresholds={c: t for c, t in evaluation.thresholds.items() if t is not None and c in shipped},
        training={
            "config": config.to_dict(),
            **{k: v for k, v in training.items() if k not in ("history", "privacy")},
            "threads": threads,
        },
        metrics=metrics,
        recommendation=recommendation,
        data={
            "source": data_path,
            "fingerprint": splits.train.fingerprint(),
            "n_train": len(splits.train),
            "n_validation": len(splits.validation),
            "n_test": len(splits.test),
            "split": split or {},
        },
        drift_reference=evaluation.drift,
        privacy=None if privacy is None else Privacy.from_json(privacy),
    )


def _write_bundle(output: Path, tokenizer, model, ngram: NgramClassifier, report: dict, manifest: Manifest) -> None:
    """Write every bundle file into a staging directory, then swap it in for ``output``."""
    with atomic_directory(output) as staging:
        tokenizer.save_pretrained(staging / "tokenizer")
        (staging / "model").mkdir()
        model.config.save_pretrained(staging / "model")
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / "model" / "model.safetensors"), metadata={"format": "pt"})
        if manifest.components.ngram is not None:  # not in a private bundle: fitted on the texts without DP
            ngram.save(staging / "ngram")
        write_report(report, staging / "report")
        write_manifest(staging, manifest)


def run_training(
    splits: Splits,
    config: TrainConfig,
    *,
    output: Path,
    margin_points: float,
    resume: bool,
    show_progress: bool,
    data_path: str,
    split: dict | None = None,
    unlabeled: list[str] | None = None,
) -> Bundle | None:
    """Everything after the data is validated. Returns the written bundle (None on a distributed run's other ranks)."""
    threads = set_threads(config.threads)
    # Before anything hashes the configuration (the resume key), and before any output: a missing extra for
    # the chosen model is then the only line printed.
    config, base_choice = _choose_base_model(config, splits)
    config = _private_config(config, splits)
    _describe(splits)
    base = resolve_base_model(config.base_model)
    with _lexicon_base(config, base.path, splits, output) as (base_path, terms):
        data = _tokenize(base_path, splits, config)
        main = distributed.is_main()  # in a distributed run the other ranks only train
        ngram, baseline_seconds = _fit_baseline(splits, config.seed, show_progress) if main else (None, 0.0)
        method, choice = (
            ("dp", None)
            if config.private
            else _choose_method(config, data.targets["train"], len(splits.train.label_names))
        )
        fitted, self_training, wall, pseudo = _fit(
            method,
            base_path,
            data,
            splits,
            config,
            output=output,
            resume=resume,
            show_progress=show_progress,
            unlabeled=unlabeled,
        )
        if not main:
            return None
        assert ngram is not None  # the main rank fitted it
        if pseudo is not None and self_training is not None:
            ngram = _refit_ngram(ngram, splits, pseudo, config.seed, self_training)
        evaluation = _evaluate(fitted.model, ngram, data, splits, config)
        recommendation = recommend(
            evaluation.models, task=_task(splits), candidate=evaluation.default, margin_points=margin_points
        )
        recommendation = _advice(
            recommendation, config, splits, base.name, base_choice, fitted.info, data.truncated["train"]
        )
        if config.private and recommendation.get("verdict") == "baseline":
            recommendation["message"] += (
                " With --dp-epsilon the baseline is not private, so it is not in this bundle: only a run without "
                "--dp-epsilon can ship it."
            )
        training = _training_record(base, base_choice, fitted, choice, self_training, wall, data, evaluation, terms)
        robustness = _robustness(fitted.model, ngram, data, splits, config, evaluation)
        report = _report(splits, base, data_path, evaluation, recommendation, training, baseline_seconds, robustness)
        manifest = _manifest(
            splits, config, base, fitted.model, evaluation, recommendation, training, threads, data_path, split,
            robustness,
        )  # fmt: skip
        _write_bundle(output, data.tokenizer, fitted.model, ngram, report, manifest)
        log.info(f"bundle written: {output}", extra=DONE)
        return Bundle(output)
