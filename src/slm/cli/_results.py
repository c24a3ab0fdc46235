"""How the CLI shows results: metrics tables, the bundle summary, next steps, compression lines.

Only the CLI prints; the library returns reports and manifests, and these functions render them.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from slm.cli._util import err, out

if TYPE_CHECKING:
    from slm.bundle.schema import Manifest

PREFERRED_METRICS = (
    "accuracy", "macro_f1", "micro_f1", "weighted_f1", "samples_f1", "macro_precision", "macro_recall",
    "exact_match", "subset_accuracy", "hamming_loss",
)  # fmt: skip
MODEL_ORDER = ("transformer", "ngram_baseline", "ensemble")
PERCENT_WORDS = ("accuracy", "f1", "precision", "recall", "auc", "exact_match", "hamming", "jaccard", "top")


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _is_percent(name: str, value: float) -> bool:
    return 0.0 <= value <= 1.0 and any(word in name for word in PERCENT_WORDS)


def metrics_table(models: dict[str, dict[str, Any]], title: str) -> Table | None:
    """Models side by side (columns), scalar metrics as rows, best score per row in bold."""
    models = {name: m for name, m in (models or {}).items() if isinstance(m, dict)}
    order = {name: i for i, name in enumerate(MODEL_ORDER)}
    models = dict(sorted(models.items(), key=lambda kv: order.get(kv[0], len(order))))
    if not models:
        return None
    names = [k for k in PREFERRED_METRICS if any(_scalar(m.get(k)) is not None for m in models.values())]
    for m in models.values():
        names += [k for k, v in m.items() if k not in names and _scalar(v) is not None]
    if not names:
        return None
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("metric", no_wrap=True)
    for model in models:
        table.add_column(escape(model), justify="right", no_wrap=True)
    for key in names:
        values = [_scalar(m.get(key)) for m in models.values()]
        percent = all(v is None or _is_percent(key, v) for v in values)
        lower_better = "loss" in key or key == "ece" or "latency" in key or key.endswith("_ms") or "seconds" in key
        present = [v for v in values if v is not None]
        best = (min(present) if lower_better else max(present)) if present and len(models) > 1 else None
        cells = []
        for v in values:
            if v is None:
                cells.append("–")
                continue
            text = f"{100 * v:.1f}" if percent else (str(int(v)) if v.is_integer() else f"{v:.4g}")
            cells.append(f"[bold]{text}[/bold]" if v == best and percent else text)
        table.add_row(escape(key + (" (%)" if percent else "")), *cells)
    return table


def print_results(models: dict[str, dict[str, Any]] | None, recommendation: Any, title: str) -> None:
    table = metrics_table(models or {}, title)
    if table is None:
        out.print(f"[dim]{escape(title)}: no metrics (no test data)[/dim]")
    else:
        out.print(table)
    message = recommendation.get("message") if isinstance(recommendation, dict) else recommendation
    if message:
        out.print(f"[bold]Recommendation:[/bold] {escape(str(message))}")


def _q(path: object) -> str:
    return shlex.quote(str(path))


def print_next_steps(bundle: Path, labelled: str | Path | None = None) -> None:
    b = _q(bundle)
    out.print("\n[bold]Next steps[/bold]")
    out.print(f"  report:   {escape(str(Path(bundle) / 'report' / 'report.html'))}")
    out.print(f"  predict:  slm predict {escape(b)} your_texts.csv -o predictions.csv")
    out.print(f'            echo \'{{"text": "some text"}}\' | slm predict {escape(b)} -')
    out.print(f"  evaluate: slm evaluate {escape(b)} {escape(_q(labelled) if labelled else 'labelled.csv')}")
    out.print(f"  inspect:  slm info {escape(b)}")
    out.print(f"  compress: slm compress {escape(b)} --quantize int8")


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def field_value(value: Any) -> Any:
    """A manifest field as ``slm info`` shows it: a record as its JSON, an empty value as None (not shown)."""
    from slm.bundle.schema import Record

    if isinstance(value, Record):
        value = value.to_json()
    return None if value in (None, "", {}, []) else value


def training_line(training: Any) -> str:
    """How the transformer was trained, in one line: method, trained parameters, self-training."""
    method = training.get("method") if isinstance(training, dict) else None
    if not method:
        return ""
    parts = [method]
    choice = training.get("method_choice")
    if choice:
        parts[0] = f"{method} (chosen by --method auto)"
    base_choice = training.get("base_model_choice")
    if isinstance(base_choice, dict) and base_choice.get("reason"):
        chosen = base_choice.get("base_model")
        parts.append(f"base model {chosen} chosen by --base-model auto ({base_choice['reason']})")
    params = training.get("parameters") or {}
    if params.get("total"):
        parts.append(
            f"{params['trainable']:,} of {params['total']:,} parameters trained ({params['trainable_share']:.2%})"
        )
    if method in ("lora", "adalora"):
        parts.append("adapters merged")
    record = training.get("self_training")
    if record:
        rounds = len(record["rounds"]) - 1
        parts.append(
            f"self-training kept {record['kept_rounds']} of {rounds} round(s) "
            f"(validation macro-F1 {record['val_macro_f1_labelled_only']:.4f} -> {record['val_macro_f1']:.4f})"
        )
        baseline = record.get("ngram_labelled_only")
        if baseline:
            parts.append(
                f"n-gram side refitted on {record['ngram_refit_texts']:,} labelled + pseudo-labelled texts "
                f"(labelled-only baseline: {baseline['accuracy']:.2%} {baseline['evaluated_on']} accuracy)"
            )
    lexicon = training.get("lexicon")
    if lexicon:
        parts.append(
            f"lexicon: {lexicon['added_tokens']:,} terms added as tokens (mean tokens per text "
            f"{lexicon['mean_tokens_before']} -> {lexicon['mean_tokens_after']})"
        )
    return " · ".join(parts)


def robustness_line(summary: Any) -> str:
    """The worst perturbation of each model in one line, from the manifest's ``metrics.robustness`` or a
    report's ``robustness`` section; empty when there is none."""
    if not isinstance(summary, dict):
        return ""
    if isinstance(summary.get("models"), dict):  # a report's section: its models' worst perturbations
        models = summary["models"].items()
        sample = (summary.get("sample") or {}).get("n")
        summary = {"sample": sample, **{k: v.get("worst_perturbation") for k, v in models if isinstance(v, dict)}}
    worst = [
        f"{name} {v['drop_points']:.1f} points ({v['name']})"
        for name, v in summary.items()
        if isinstance(v, dict) and isinstance(v.get("drop_points"), int | float)
    ]
    if not worst:
        return ""
    return f"robustness ({summary.get('sample')} perturbed texts), worst drop: {', '.join(worst)}"


def print_bundle_summary(bundle: Any, seconds: float | None = None) -> None:
    manifest = bundle.manifest
    metrics = (manifest.metrics or {}).get("test")
    took = f" in {format_duration(seconds)}" if seconds is not None else ""
    out.print(f"\n[bold green]Bundle written[/bold green] to {escape(str(bundle.path))}{took}")
    line = training_line(manifest.training)
    if line:
        out.print(f"training: {escape(line)}")
    print_results(metrics, manifest.recommendation, "Test set")
    line = robustness_line((manifest.metrics or {}).get("robustness"))
    if line:
        out.print(escape(line))


# ---------------------------------------------------------------- train


def print_compression(manifest: Manifest) -> None:
    """Where a derived bundle comes from, and one summary line per compression step in its manifest."""
    compression = manifest.compression or {}
    lineage = manifest.lineage or []
    steps = " -> ".join(step.step for step in lineage)
    if steps:
        out.print(f"derived from {escape(str(lineage[0].parent))} by: {steps}")
    onnx = manifest.components.onnx
    if onnx is not None and onnx.parity is not None:
        out.print(f"ONNX {onnx.precision}: parity with PyTorch {onnx.parity['max_abs_diff']:.1e}")
    quantization = compression.get("quantization")
    if quantization:
        if "fallback" in quantization:
            err.print(f"[yellow]warning[/]: {escape(quantization['fallback'])}")
        else:
            gate = quantization["validation"]
            precision = (onnx.precision if onnx is not None else None) or "int8"
            recipe = quantization["recipe"]["name"]
            shares = quantization.get("precision_shares")
            if shares:
                recipe += f", {100 * shares['int4']:.0f}% of the weights 4-bit"
            out.print(
                f"{precision} ({recipe}): validation {gate['metric']} "
                f"{100 * gate['reference']:.2f}% -> {100 * gate['candidate']:.2f}% "
                f"(drop {gate['drop_points']:.2f} points, gate {quantization['gate_points']:.2f}), "
                f"agreement with fp32 {100 * gate['agreement']:.1f}%, {quantization['speedup_vs_fp32']:.2f}x fp32 speed"
            )
    default_line = default_component_line(compression.get("default_component"))
    if default_line:
        out.print(default_line)
    validation = (manifest.metrics or {}).get("validation") or {}
    metric = "micro_f1" if manifest.multi_label else "accuracy"
    scores = [
        f"{name} {100 * model[metric]:.2f}%"
        for name, model in validation.items()
        if isinstance(model, dict) and isinstance(model.get(metric), float)
    ]
    if scores and "quantization" not in compression:
        out.print(f"validation {metric}: {', '.join(scores)}")
    for key in ("trim_vocab", "pruning", "distillation", "static"):
        if key in compression:
            summary = ", ".join(f"{k} {v}" for k, v in compression[key].items() if not isinstance(v, dict | list))
            out.print(f"{key}: {escape(summary)}")


def default_component_line(record: Any) -> str | None:
    """What a derived bundle predicts with by default and why, from ``compression["default_component"]``."""
    if not isinstance(record, dict) or not isinstance(record.get("component"), str):
        return None
    component = escape(record["component"])
    transformer, ensemble = record.get("transformer"), record.get("ensemble")
    if isinstance(transformer, float) and isinstance(ensemble, float):
        metric = escape(str(record.get("metric", "score"))).replace("_", "-")
        return (
            f"default: {component} (validation {metric}: ensemble {100 * ensemble:.2f}%, "
            f"{escape(str(record.get('step', '')))} transformer alone {100 * transformer:.2f}%)"
        )
    return f"default: {component} (chosen on validation by training)"
