"""``slm export`` and ``slm compress``: faster, smaller variants of a bundle (:mod:`slm.api.compressing`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from slm.cli._results import default_component_line, print_compression
from slm.cli._util import ForceOpt, LabelColOpt, TextColOpt, command, load_api, out, quiet_libraries
from slm.extras import require_extra


class Quantize(StrEnum):
    int8 = "int8"
    int8_static = "int8-static"
    int8_openvino = "int8-openvino"
    int4 = "int4"


class Target(StrEnum):
    bundle = "bundle"
    ort = "ort"
    web = "web"


class Fallback(StrEnum):
    none = "none"
    fp32 = "fp32"


BundleArg = Annotated[
    Path,
    typer.Argument(metavar="BUNDLE", help="Bundle directory (from 'slm train' or 'slm export').", show_default=False),
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="ONNX Runtime threads (default: up to 4).")]


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


TargetOpt = Annotated[
    Target,
    typer.Option(
        "--target",
        help="bundle: a PyTorch bundle to fused ONNX; ort: an exported bundle to ONNX Runtime's ORT format "
        "(mobile and embedded apps, reduced builds); web: an exported bundle or the static tier to a static "
        "folder that classifies in the browser.",
    ),
]


@command(no_args_is_help=True)
def export(
    bundle: BundleArg,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="New bundle or folder (default: BUNDLE-onnx, BUNDLE-ort, BUNDLE-web)."),
    ] = None,
    target: TargetOpt = Target.bundle,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Texts for the parity check (default: a sample of the training file)."),
    ] = None,
    text_col: TextColOpt = None,
    opset: Annotated[int, typer.Option("--opset", min=17, help="ONNX opset (--target bundle).")] = 17,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            help="Largest allowed difference: 1e-4 in probability (bundle), 1e-5 (ort), 1e-3 in probability (web).",
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Export the transformer to ONNX (fused by ONNX Runtime's transformer optimizer) for torch-free use.

    The export is refused unless ONNX Runtime's probabilities match PyTorch's within --tolerance on
    a sample of texts. The new bundle predicts with `slm predict` or `slm.runtime` without PyTorch.
    `--target ort` converts an exported bundle (fp32 or int8) to ONNX Runtime's ORT format for mobile apps,
    with the operator list a reduced ONNX Runtime build needs; refused unless its outputs match within 1e-5.
    `--target web` writes a static folder (index.html, a JavaScript API, the model, the tokenizer and the
    vendored onnxruntime-web) that classifies in the browser with no server; BUNDLE is an exported bundle
    (int8 recommended) or the static tier. Needs node and npm, not PyTorch; see docs/web.md.
    """
    if target is Target.web:
        _export_web(bundle, output, data=data, text_col=text_col, tolerance=tolerance, force=force)
        return
    api = load_api()  # the export runs PyTorch and the onnx package: check the training extra first
    if target is Target.ort:
        _export_ort(api, bundle, output, data, text_col, 1e-5 if tolerance is None else tolerance, force)
        return
    tolerance = 1e-4 if tolerance is None else tolerance
    written = api.export(bundle, output, data=data, text_col=text_col, opset=opset, tolerance=tolerance, force=force)
    spec = written.manifest.components.onnx
    assert spec is not None and spec.parity is not None  # export_bundle writes both
    fused = ", ".join(f"{k} x{v}" for k, v in (spec.fused_operators or {}).items()) or "none"
    out.print(f"[green]ONNX bundle written[/]: {escape(str(written.path))}")
    out.print(
        f"parity with PyTorch: max probability difference {spec.parity['max_abs_diff']:.1e} on "
        f"{spec.parity['texts']} texts (tolerance {tolerance:.0e}); fused operators: {fused}"
    )
    default = default_component_line((written.manifest.compression or {}).get("default_component"))
    out.print(default or f"default: {escape(written.manifest.default_component or 'transformer')}")
    out.print(f"next: slm compress {escape(str(written.path))} --quantize int8")


def _export_ort(
    api: Any, bundle: Path, output: Path | None, data: Path | None, text_col: str | None, tolerance: float, force: bool
) -> None:
    written = api.export_ort(bundle, output, data=data, text_col=text_col, tolerance=tolerance, force=force)
    record = (written.manifest.compression or {})["ort_format"]
    parity = written.manifest.components.onnx.parity
    out.print(f"[green]ORT-format bundle written[/]: {escape(str(written.path))}")
    out.print(
        f"{record['file']}: {record['ort_mb']:.1f} MB (the ONNX file: {record['onnx_mb']:.1f} MB); largest output "
        f"difference {parity['max_abs_diff']:.1e} on {parity['texts']} texts (tolerance {tolerance:.0e})"
    )
    out.print(f"operators for a reduced ONNX Runtime build: {escape(record['operators_config'])}")


def _export_web(
    bundle: Path, output: Path | None, *, data: Path | None, text_col: str | None, tolerance: float | None, force: bool
) -> None:
    """``slm export --target web``: no PyTorch needed, only the runtime (and node and npm)."""
    require_extra("runtime", what="slm export --target web")
    quiet_libraries()
    from slm.api.web import export_web

    written = export_web(
        bundle, output, data=data, text_col=text_col, tolerance=1e-3 if tolerance is None else tolerance, force=force
    )
    check = written.check
    kind = "static tier, plain JavaScript" if written.kind == "static" else "ONNX model, onnxruntime-web"
    out.print(f"[green]web folder written[/]: {escape(str(written.path))} ({kind}, {written.total_bytes / 1e6:.1f} MB)")
    out.print(
        f"checked in node against slm.runtime on {check['texts']} texts: token ids equal, labels agree on "
        f"{check['label_agreement']:.1%}, probability difference median {check['median_abs_diff']:.1e}, max "
        f"{check['max_abs_diff']:.1e} ({check['gated_on']} within {check['tolerance']:.0e})"
    )
    out.print(f"preview: python {escape(str(written.path / 'serve.py'))}   (then open http://127.0.0.1:8000/)")


CompressOutputOpt = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="New bundle (default: BUNDLE-int8, -int4, -pruned or -static)."),
]
QuantizeOpt = Annotated[
    Quantize | None,
    typer.Option(
        "--quantize",
        help="int8: dynamic int8 weights (fastest on a CPU); int8-static: also int8 activations, calibrated; "
        "int8-openvino: NNCF int8 for --backend openvino (batch throughput; needs slm[openvino-compress]); "
        "int4: 4-bit block weights and embeddings (smallest file, slower than int8 on a CPU).",
    ),
]
PerChannelOpt = Annotated[
    bool | None,
    typer.Option(
        "--per-channel/--per-tensor", help="int8: one scale per output channel (default, more accurate) or per tensor."
    ),
]
BlockSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--block-size",
        help="int4: weights per scale, 16 to 256 (default 32; 128: smaller file, a little further from fp32).",
    ),
]
EmbeddingsOpt = Annotated[
    bool, typer.Option("--embeddings/--no-embeddings", help="Quantize the embedding table too (smaller file).")
]
TrimUnreachableOpt = Annotated[
    bool,
    typer.Option(
        "--trim-unreachable/--keep-vocabulary",
        help="Drop embedding rows the tokenizer can never produce (lossless, checked).",
    ),
]
TrimVocabOpt = Annotated[
    bool,
    typer.Option(
        "--trim-vocab",
        help="Keep only the tokens the domain corpus (--data, default: the training file) uses, plus a reserve.",
    ),
]
VocabReserveOpt = Annotated[
    int, typer.Option("--vocab-reserve", min=0, help="Most frequent tokens kept beyond the corpus (--trim-vocab).")
]
GateOpt = Annotated[float, typer.Option("--gate", min=0.0, help="Largest allowed validation accuracy drop, in points.")]
ValidationOpt = Annotated[
    Path | None,
    typer.Option("--validation", help="Labelled validation file (default: the bundle's own validation split)."),
]
FallbackOpt = Annotated[
    Fallback, typer.Option("--fallback", help="What to ship when no int8/int4 recipe passes: nothing, or fp32.")
]
CalibrationSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--calibration-size",
        min=1,
        help="Texts for int8-static (default 256) or int8-openvino (default 300) calibration.",
    ),
]
PruneLayersOpt = Annotated[
    int | None, typer.Option("--prune-layers", min=1, help="Keep this many transformer layers, then distil.")
]
FfnKeepOpt = Annotated[float, typer.Option("--ffn-keep", help="Fraction of FFN neurons kept when pruning.")]
HeadsKeepOpt = Annotated[float, typer.Option("--heads-keep", help="Fraction of attention heads kept when pruning.")]
StaticOpt = Annotated[
    bool, typer.Option("--static", help="Turbo tier: static token embeddings distilled from the encoder + a head.")
]
DimsOpt = Annotated[int, typer.Option("--dims", min=8, help="Static embedding dimensions (--static).")]
CompressDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Training file for --prune-layers / --static, corpus for --trim-vocab (default: the bundle's).",
    ),
]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Distillation epochs after pruning.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.1, help="Distillation temperature.")]
AlphaOpt = Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Weight of the soft-target loss.")]
MaxMinutesOpt = Annotated[float | None, typer.Option("--max-minutes", min=0.1, help="Time budget for distillation.")]


@command(no_args_is_help=True)
def compress(
    bundle: BundleArg,
    output: CompressOutputOpt = None,
    quantize: QuantizeOpt = None,
    per_channel: PerChannelOpt = None,
    embeddings: EmbeddingsOpt = True,
    trim_vocabulary: TrimUnreachableOpt = True,
    trim_vocab: TrimVocabOpt = False,
    vocab_reserve: VocabReserveOpt = 1000,
    gate: GateOpt = 1.0,
    validation: ValidationOpt = None,
    fallback: FallbackOpt = Fallback.none,
    calibration_size: CalibrationSizeOpt = None,
    block_size: BlockSizeOpt = None,
    prune_layers: PruneLayersOpt = None,
    ffn_keep: FfnKeepOpt = 1.0,
    heads_keep: HeadsKeepOpt = 1.0,
    static: StaticOpt = False,
    dims: DimsOpt = 256,
    data: CompressDataOpt = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    epochs: EpochsOpt = 2,
    temperature: TemperatureOpt = 2.0,
    alpha: AlphaOpt = 0.5,
    max_minutes: MaxMinutesOpt = None,
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
) -> None:
    """Make a smaller, faster variant of a bundle; every variant is checked on validation data first.

    --quantize int8 writes an int8 ONNX bundle (the PyTorch bundle is exported first if needed);
    --quantize int4 a 4-bit one, about 0.7x the int8 file, for when file size matters more than CPU speed.
    --prune-layers N removes transformer layers and recovers accuracy by distillation from the
    original (combine it with --quantize). --trim-vocab keeps only the vocabulary the domain corpus
    uses (a multilingual model's embedding table shrinks ~30x; combine it with --quantize).
    --static builds the turbo tier. A variant that loses more than --gate points of validation
    accuracy is refused and nothing is written.

    Examples:

        slm compress runs/model --quantize int8

        slm compress runs/model --trim-vocab --quantize int8

        slm compress runs/model-onnx --quantize int4

        slm compress runs/model --prune-layers 3 --quantize int8 --data train.csv
    """
    load_api()  # pruning and export run PyTorch: check the training extra first
    from slm.api.compressing import CompressOptions
    from slm.api.compressing import compress as compress_bundle

    options = CompressOptions(
        per_channel=per_channel, embeddings=embeddings, trim_unreachable=trim_vocabulary, vocab_reserve=vocab_reserve,
        gate=gate, validation=validation, fallback=fallback.value, calibration_size=calibration_size,
        block_size=block_size,
        ffn_keep=ffn_keep, heads_keep=heads_keep, dims=dims, data=data, text_col=text_col, label_col=label_col,
        epochs=epochs, temperature=temperature, alpha=alpha, max_minutes=max_minutes, threads=threads,
    )  # fmt: skip
    written = compress_bundle(
        bundle, output, quantize=quantize.value if quantize else None, prune_layers=prune_layers,
        trim_vocab=trim_vocab, static=static, options=options, force=force,
    )  # fmt: skip
    out.print(f"[green]bundle written[/]: {escape(str(written.path))} ({_size_mb(written.path):.1f} MB)")
    print_compression(written.manifest)
