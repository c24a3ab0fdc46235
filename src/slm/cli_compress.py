"""``slm export`` and ``slm compress``: faster, smaller variants of a bundle, each checked before it ships.

Registered on the main Typer app by :mod:`slm.cli`.
"""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from slm.cli import ForceOpt, LabelColOpt, TextColOpt, _api, _command, err, out
from slm.errors import ConfigError
from slm.fileio import claim_output_folder

if TYPE_CHECKING:
    from slm.bundle.schema import Manifest


class Quantize(StrEnum):
    int8 = "int8"
    int8_static = "int8-static"


class Fallback(StrEnum):
    none = "none"
    fp32 = "fp32"


BundleArg = Annotated[
    Path,
    typer.Argument(metavar="BUNDLE", help="Bundle directory (from 'slm train' or 'slm export').", show_default=False),
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="ONNX Runtime threads (default: up to 4).")]


def _source(path: Path | None, text_col: str | None, label_col: str | None) -> Any:
    if path is None:
        return None
    from slm.pipeline import DataSource

    return DataSource(path, text_col, label_col)


def _texts(path: Path | None, text_col: str | None) -> list[str] | None:
    if path is None:
        return None
    from slm.data.loading import cell_text, read_unlabelled

    frame, column = read_unlabelled(path, text_col)
    return [cell_text(v) for v in frame[column].tolist()]


def _default_output(bundle: Path, suffix: str) -> Path:
    return bundle.with_name(f"{bundle.name}-{suffix}")


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


@_command(no_args_is_help=True)
def export(
    bundle: BundleArg,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="New bundle (default: BUNDLE-onnx).")] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Texts for the parity check (default: a sample of the training file)."),
    ] = None,
    text_col: TextColOpt = None,
    opset: Annotated[int, typer.Option("--opset", min=17, help="ONNX opset.")] = 17,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest allowed probability difference.")] = 1e-4,
    force: ForceOpt = False,
) -> None:
    """Export the transformer to ONNX (fused by ONNX Runtime's transformer optimizer) for torch-free use.

    The export is refused unless ONNX Runtime's probabilities match PyTorch's within --tolerance on
    a sample of texts. The new bundle predicts with `slm predict` or `slm.runtime` without PyTorch.
    """
    from slm.compression.export import export_bundle

    target = output or _default_output(bundle, "onnx")
    claim_output_folder(target, force=force)
    _api()
    manifest = export_bundle(bundle, target, texts=_texts(data, text_col), opset=opset, tolerance=tolerance)
    spec = manifest.components.onnx
    assert spec is not None and spec.parity is not None  # export_bundle writes both
    fused = ", ".join(f"{k} x{v}" for k, v in (spec.fused_operators or {}).items()) or "none"
    out.print(f"[green]ONNX bundle written[/]: {escape(str(target))}")
    out.print(
        f"parity with PyTorch: max probability difference {spec.parity['max_abs_diff']:.1e} on "
        f"{spec.parity['texts']} texts (tolerance {tolerance:.0e}); fused operators: {fused}"
    )
    out.print(f"next: slm compress {escape(str(target))} --quantize int8")


@_command(no_args_is_help=True)
def compress(
    bundle: BundleArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="New bundle (default: BUNDLE-int8, -pruned or -static).")
    ] = None,
    quantize: Annotated[
        Quantize | None,
        typer.Option("--quantize", help="int8: dynamic int8 weights; int8-static: also int8 activations, calibrated."),
    ] = None,
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="One int8 scale per output channel (more accurate).")
    ] = True,
    embeddings: Annotated[
        bool, typer.Option("--embeddings/--no-embeddings", help="Quantize the embedding table too (smaller file).")
    ] = True,
    trim_vocabulary: Annotated[
        bool,
        typer.Option(
            "--trim-unreachable/--keep-vocabulary",
            help="Drop embedding rows the tokenizer can never produce (lossless, checked).",
        ),
    ] = True,
    trim_vocab: Annotated[
        bool,
        typer.Option(
            "--trim-vocab",
            help="Keep only the tokens the domain corpus (--data, default: the training file) uses, plus a reserve.",
        ),
    ] = False,
    vocab_reserve: Annotated[
        int, typer.Option("--vocab-reserve", min=0, help="Most frequent tokens kept beyond the corpus (--trim-vocab).")
    ] = 1000,
    gate: Annotated[
        float, typer.Option("--gate", min=0.0, help="Largest allowed validation accuracy drop, in points.")
    ] = 1.0,
    validation: Annotated[
        Path | None,
        typer.Option("--validation", help="Labelled validation file (default: the bundle's own validation split)."),
    ] = None,
    fallback: Annotated[
        Fallback, typer.Option("--fallback", help="What to ship when no int8 recipe passes: nothing, or fp32.")
    ] = Fallback.none,
    calibration_size: Annotated[int, typer.Option("--calibration-size", min=1, help="Texts for static int8.")] = 256,
    prune_layers: Annotated[
        int | None, typer.Option("--prune-layers", min=1, help="Keep this many transformer layers, then distil.")
    ] = None,
    ffn_keep: Annotated[float, typer.Option("--ffn-keep", help="Fraction of FFN neurons kept when pruning.")] = 1.0,
    heads_keep: Annotated[
        float, typer.Option("--heads-keep", help="Fraction of attention heads kept when pruning.")
    ] = 1.0,
    static: Annotated[
        bool, typer.Option("--static", help="Turbo tier: static token embeddings distilled from the encoder + a head.")
    ] = False,
    dims: Annotated[int, typer.Option("--dims", min=8, help="Static embedding dimensions (--static).")] = 256,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Training file for --prune-layers / --static, corpus for --trim-vocab (default: the bundle's).",
        ),
    ] = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Distillation epochs after pruning.")] = 2,
    temperature: Annotated[float, typer.Option("--temperature", min=0.1, help="Distillation temperature.")] = 2.0,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Weight of the soft-target loss.")] = 0.5,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", min=0.1, help="Time budget for distillation.")
    ] = None,
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
) -> None:
    """Make a smaller, faster variant of a bundle; every variant is checked on validation data first.

    --quantize int8 writes an int8 ONNX bundle (the PyTorch bundle is exported first if needed).
    --prune-layers N removes transformer layers and recovers accuracy by distillation from the
    original (combine it with --quantize). --trim-vocab keeps only the vocabulary the domain corpus
    uses (a multilingual model's embedding table shrinks ~30x; combine it with --quantize).
    --static builds the turbo tier. A variant that loses more than --gate points of validation
    accuracy is refused and nothing is written.

    Examples:

        slm compress runs/model --quantize int8

        slm compress runs/model --trim-vocab --quantize int8

        slm compress runs/model --prune-layers 3 --quantize int8 --data train.csv
    """
    if static and (quantize or prune_layers or trim_vocab):
        raise ConfigError("--static builds its own model: use it without --quantize, --prune-layers or --trim-vocab")
    if not (static or quantize or prune_layers or trim_vocab):
        raise ConfigError("nothing to do: pass --quantize int8, --prune-layers N, --trim-vocab or --static")
    _api()
    steps = ("trimmed" if trim_vocab else "", "pruned" if prune_layers else "", quantize or "")
    suffix = "static" if static else "-".join(s for s in steps if s)
    target = output or _default_output(bundle, suffix)
    claim_output_folder(target, force=force)
    train_source = _source(data, text_col, label_col)
    given_texts = _texts(data, text_col) if (trim_vocab or quantize) else None  # --data, read once
    if static:
        from slm.compression.static import build_static_bundle

        manifest = build_static_bundle(bundle, target, _training_source(bundle, train_source), dims=dims)
        _report(target, manifest)
        return
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".slm-compress-", dir=target.resolve().parent) as tmp:
        current = bundle
        if trim_vocab:
            from slm.compression.trim_vocab import trim_to_corpus

            corpus = _training_source(bundle, train_source)
            texts = given_texts if given_texts is not None else _texts(Path(corpus.path), corpus.text_col) or []
            trimmed = target if not (prune_layers or quantize) else Path(tmp) / "trimmed"
            manifest = trim_to_corpus(bundle, trimmed, texts, reserve=vocab_reserve, corpus=str(corpus.path))
            current = trimmed
        if prune_layers:
            from slm.compression.prune import prune_bundle

            pruned = target if not quantize else Path(tmp) / "pruned"
            manifest = prune_bundle(
                current, pruned, _training_source(bundle, train_source), layers=prune_layers, ffn_keep=ffn_keep,
                heads_keep=heads_keep, epochs=epochs, temperature=temperature, alpha=alpha, max_minutes=max_minutes,
            )  # fmt: skip
            current = pruned
        if quantize:
            from slm.compression.quantize import quantize_bundle

            manifest = quantize_bundle(
                current, target, mode="static" if quantize == Quantize.int8_static else "dynamic",
                per_channel=per_channel, embeddings=embeddings, gate_points=gate,
                validation=_source(validation, text_col, label_col), calibration_size=calibration_size,
                fallback=fallback.value, trim_vocabulary=trim_vocabulary, threads=threads,
                export_texts=given_texts,
            )  # fmt: skip
    _report(target, manifest)


def _training_source(bundle: Path, given: Any) -> Any:
    """The user's training file, else the one recorded in the bundle's manifest."""
    if given is not None:
        return given
    from slm.bundle.manifest import read_manifest
    from slm.pipeline import recorded_source

    source = recorded_source(read_manifest(bundle, verify=False))
    if source is None:
        raise ConfigError("the bundle's training file is not available: pass it with --data FILE")
    return source


def _report(target: Path, manifest: Manifest) -> None:
    out.print(f"[green]bundle written[/]: {escape(str(target))} ({_size_mb(target):.1f} MB)")
    print_compression(manifest)


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
            out.print(
                f"int8 ({quantization['recipe']['name']}): validation {gate['metric']} "
                f"{100 * gate['reference']:.2f}% -> {100 * gate['candidate']:.2f}% "
                f"(drop {gate['drop_points']:.2f} points, gate {quantization['gate_points']:.2f}), "
                f"agreement with fp32 {100 * gate['agreement']:.1f}%, {quantization['speedup_vs_fp32']:.2f}x fp32 speed"
            )
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
