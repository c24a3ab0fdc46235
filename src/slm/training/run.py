"""One training run end to end: baseline, fine-tune, ensemble, evaluation, bundle."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.markup import escape
from safetensors.torch import save_file

from slm import __version__
from slm.bundle.manifest import now_iso, write_manifest
from slm.bundle.schema import BaseModelRef, Components, Ensemble, Manifest, NgramSpec, TransformerSpec
from slm.console import console
from slm.errors import ConfigError, SlmError
from slm.fileio import atomic_directory
from slm.models.auto import BaseModelChoice, detect_languages, is_english, resolve_auto
from slm.models.domain_terms import add_domain_terms
from slm.models.ensemble import combine, ensemble_probabilities, probabilities, tune_prior_shift, tune_weight
from slm.models.ngram import NgramClassifier
from slm.models.ngram import settings_for as ngram_settings
from slm.models.registry import REGISTRY, resolve_base_model
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
from slm.runtime.bundle import Bundle
from slm.training import distributed
from slm.training.batching import Encoded, encode_texts, load_tokenizer
from slm.training.config import TrainConfig
from slm.training.fit import Fitted, fit_transformer
from slm.training.method import choose_method
from slm.training.self_training import self_train
from slm.training.trainer import predict_logits, set_threads

# Per-class decision shifts are tuned on validation only for few classes, where they cannot overfit
# much and where imbalance hurts macro-F1 most.
MAX_CLASSES_FOR_PRIOR_SHIFT = 20


def _fit_baseline(splits: Splits, seed: int) -> tuple[NgramClassifier, float]:
    started = time.perf_counter()
    with console.status("fitting the TF-IDF + logistic-regression baseline…"):
        settings = ngram_settings(splits.train.texts)
        model = NgramClassifier(multi_label=splits.train.multi_label, seed=seed, **settings)
        model.fit(splits.train.texts, splits.train.targets(), n_classes=len(splits.train.label_names))
    seconds = time.perf_counter() - started
    console.print(f"baseline fitted in {seconds:.1f}s")
    return model, seconds


def _default_component(ensemble: bool, score, val: dict[str, np.ndarray]) -> str:
    """Ship the ensemble only when it beats the transformer alone on validation.

    On tiny validation splits (few-shot data) many ensemble weights tie and the chosen blend can
    be worse than the transformer on unseen data; a tie therefore ships the simpler model.
    """
    if not ensemble:
        return "transformer"
    if score(val["ensemble"]) > score(val["transformer"]) + 1e-9:
        return "ensemble"
    console.print(
        "[yellow]note[/]: the ensemble does not beat the transformer alone on validation; the transformer "
        "is the default (the ensemble stays in the bundle: --component ensemble)"
    )
    return "transformer"


def _describe(splits: Splits) -> None:
    counts = f"train {len(splits.train):,} · validation {len(splits.validation):,} · test {len(splits.test):,}"
    kind = "multi-label" if splits.train.multi_label else "single-label"
    console.print(f"[bold]data[/]: {len(splits.train.label_names)} labels ({kind}); {counts}")
    for warning in splits.report.warnings:
        console.print(f"[yellow]warning[/]: {warning}")


def _choose_base_model(config: TrainConfig, splits: Splits) -> tuple[TrainConfig, BaseModelChoice | None]:
    """Resolve ``--base-model auto`` from the training texts and say which model and why, in one line."""
    config, choice = resolve_auto(config, splits.train.texts)
    if choice is not None:
        console.print(f"[bold]base model[/]: {escape(choice.message())}")
    return config, choice


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


def _write_bundle(output: Path, tokenizer, model, ngram: NgramClassifier, report: dict, manifest: Manifest) -> None:
    """Write every bundle file into a staging directory, then swap it in for ``output``."""
    with atomic_directory(output) as staging:
        tokenizer.save_pretrained(staging / "tokenizer")
        (staging / "model").mkdir()
        model.config.save_pretrained(staging / "model")
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / "model" / "model.safetensors"), metadata={"format": "pt"})
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
    _describe(splits)
    task = "multi_label" if splits.train.multi_label else "single_label"
    labels = splits.train.label_names
    base = resolve_base_model(config.base_model)
    workdir = None
    base_path, terms = base.path, None
    try:
        if config.lexicon:  # the base model + the dictionary's terms, beside the output until training ends
            Path(output).resolve().parent.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=".slm-lexicon-", dir=Path(output).resolve().parent))
            terms = add_domain_terms(base.path, config.lexicon, workdir / "base", splits.train.texts)
            base_path = workdir / "base"
            console.print(
                f"lexicon: {len(terms.added):,} domain terms added as whole tokens ({terms.already_single:,} "
                f"already were); mean tokens per training text {terms.mean_tokens_before} -> {terms.mean_tokens_after}"
            )
        tokenizer, pad_id = load_tokenizer(base_path)
        enc = {
            name: encode_texts(tokenizer, ds.texts, config.max_length)
            for name, ds in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
        }
        truncated = {name: e.n_truncated for name, e in enc.items()}
        if truncated["train"]:
            console.print(
                f"[yellow]note[/]: {truncated['train']:,} training texts are longer than "
                f"{config.max_length} tokens and were truncated (--max-length)"
            )
        targets = {
            name: ds.targets(labels)
            for name, ds in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
        }

        main = distributed.is_main()  # in a distributed run the other ranks only train
        ngram, baseline_seconds = _fit_baseline(splits, config.seed) if main else (None, 0.0)
        method = config.method
        choice = None
        if method == "auto":
            choice = choose_method(targets["train"], len(labels), config)
            method = choice.method
            console.print(f"[bold]method[/]: {method} ({choice.reason})")
        if distributed.active() and method not in distributed.DISTRIBUTED_METHODS:
            raise ConfigError(
                f"--nproc trains with --method {', '.join(distributed.DISTRIBUTED_METHODS)}, not {method}"
            )

        def fit(train_enc: Encoded, train_targets: np.ndarray) -> Fitted:
            return fit_transformer(
                method,
                base_path,
                len(labels),
                train_enc,
                train_targets,
                enc["validation"],
                targets["validation"],
                config,
                pad_id=pad_id,
                multi_label=splits.train.multi_label,
                checkpoint_dir=checkpoint_dir_for(output),
                data_fingerprint=splits.train.fingerprint(),
                resume=resume,
                show_progress=show_progress,
            )

        started = time.perf_counter()
        self_training = None
        if unlabeled:
            known = set(splits.train.texts) | set(splits.validation.texts) | set(splits.test.texts)
            fresh = [t for t in dict.fromkeys(unlabeled) if t not in known]
            dropped = len(unlabeled) - len(fresh)
            console.print(f"unlabelled texts: {len(fresh):,} new ({dropped:,} duplicates or labelled texts dropped)")
            fitted, self_training = self_train(
                fit,
                enc["train"],
                targets["train"],
                enc["validation"],
                targets["validation"],
                encode_texts(tokenizer, fresh, config.max_length),
                rounds=config.self_training_rounds,
                pad_id=pad_id,
                show_progress=show_progress,
            )
        else:
            fitted = fit(enc["train"], targets["train"])
        wall = time.perf_counter() - started
        if not main:
            return None
        assert ngram is not None  # the main rank fitted it
        model = fitted.model
        eval_split = "test" if len(splits.test) else "validation"
        eval_ds = splits.test if len(splits.test) else splits.validation
        probas: dict[str, dict[str, np.ndarray]] = {}
        for part in dict.fromkeys(("validation", eval_split)):
            logits = predict_logits(model, enc[part], pad_id)
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
        thresholds = {
            c: (tune_thresholds(targets["validation"], p).tolist() if task == "multi_label" else None)
            for c, p in val.items()
        }
        models = component_metrics(task, targets[eval_split], probas[eval_split], thresholds, labels, eval_ds.texts)
        default = _default_component(config.ensemble, score, val)
        recommendation = recommend(models, task=task, candidate=default, margin_points=margin_points)
        recommendation = _advice(
            recommendation, config, splits, base.name, base_choice, fitted.info, truncated["train"]
        )

        training = {
            "base_model": base.name,
            "base_model_choice": None if base_choice is None else base_choice.to_dict(),
            **fitted.info,
            "method_choice": None if choice is None else {"method": choice.method, "reason": choice.reason},
            "self_training": self_training,
            "wall_time_s": round(wall, 1),
            "truncated_texts": truncated,
            "ensemble_transformer_weight": weight,
            "lexicon": None if terms is None else terms.to_dict(),
            "distributed": distributed.describe(),
        }
        report = {
            "title": f"slm: {base.name} on {Path(data_path).name}",
            "task": task,
            "created": now_iso(),
            "dataset": {
                "source": data_path,
                "splits": {
                    k: len(v)
                    for k, v in (
                        ("train", splits.train),
                        ("validation", splits.validation),
                        ("test", splits.test),
                    )
                },
                "evaluated_on": eval_split,
                **splits.report.to_dict(),
            },
            "models": models,
            "shipped": default,
            "recommendation": recommendation,
            "training": training,
            "baseline": {"fit_seconds": round(baseline_seconds, 1)},
            "environment": environment(),
        }
        manifest = Manifest(
            slm_version=__version__,
            created=now_iso(),
            task=task,
            labels=labels,
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
                ngram=NgramSpec(dir="ngram"),
            ),
            default_component=default,
            ensemble=Ensemble(transformer_weight=weight, log_prior_shift=prior_shift, chosen_on="validation"),
            thresholds={c: t for c, t in thresholds.items() if t is not None},
            training={
                "config": config.to_dict(),
                **{k: v for k, v in training.items() if k != "history"},
                "threads": threads,
            },
            metrics={"evaluated_on": eval_split, eval_split: summary_metrics(models, task)},
            recommendation=recommendation,
            data={
                "source": data_path,
                "fingerprint": splits.train.fingerprint(),
                "n_train": len(splits.train),
                "n_validation": len(splits.validation),
                "n_test": len(splits.test),
                "split": split or {},
            },
        )
        _write_bundle(output, tokenizer, model, ngram, report, manifest)
        console.print(f"[green]bundle written[/]: {output}")
        return Bundle(output)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
