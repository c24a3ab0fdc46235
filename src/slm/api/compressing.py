"""``export`` and ``compress``: faster, smaller variants of a bundle, each checked before it ships.

``compress`` chains the steps a user asks for in one call (vocabulary trimming → layer pruning with
distillation → int8 or int4 quantization, or the static turbo tier on its own); intermediate bundles live in
a temporary folder beside the output, so only the final, gated bundle is ever written there.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from slm.errors import ConfigError
from slm.fileio import claim_output_folder

if TYPE_CHECKING:
    from slm.bundle.schema import Manifest

QUANTIZE_MODES = ("int8", "int8-static", "int8-openvino", "int4")


@dataclass(frozen=True)
class WrittenBundle:
    """A bundle ``export``/``compress`` wrote: where, and its manifest."""

    path: Path
    manifest: Manifest


def default_output(bundle: str | Path, suffix: str) -> Path:
    """``BUNDLE-<suffix>`` beside the source bundle (e.g. ``runs/model-int8``)."""
    bundle = Path(bundle)
    return bundle.with_name(f"{bundle.name}-{suffix}")


def read_texts_of(path: str | Path | None, text_col: str | None) -> list[str] | None:
    """The texts of a file (None without one), read once for parity checks and vocabulary trimming."""
    if path is None:
        return None
    from slm.data.loading import cell_text, read_unlabelled

    frame, column = read_unlabelled(path, text_col)
    return [cell_text(v) for v in frame[column].tolist()]


def export(
    bundle: str | Path,
    output: str | Path | None = None,
    *,
    data: str | Path | None = None,
    text_col: str | None = None,
    opset: int = 17,
    tolerance: float = 1e-4,
    force: bool = False,
) -> WrittenBundle:
    """Export the transformer to fused ONNX; refused unless ONNX Runtime matches PyTorch within ``tolerance``.

    ``data``: texts for the parity check (default: a sample of the training file). ``output``
    defaults to ``BUNDLE-onnx``; a folder there holding files slm did not write is refused, or with
    ``force`` moved aside. The new bundle predicts without PyTorch.
    """
    from slm.compression.export import export_bundle

    target = Path(output) if output is not None else default_output(bundle, "onnx")
    claim_output_folder(target, force=force)
    manifest = export_bundle(
        Path(bundle), target, texts=read_texts_of(data, text_col), opset=opset, tolerance=tolerance
    )
    return WrittenBundle(target, manifest)


def export_ort(
    bundle: str | Path,
    output: str | Path | None = None,
    *,
    data: str | Path | None = None,
    text_col: str | None = None,
    tolerance: float = 1e-5,
    force: bool = False,
) -> WrittenBundle:
    """Convert an exported bundle's model to ONNX Runtime's ORT format, for mobile and embedded apps.

    Writes ``onnx/model.ort`` and the operator configuration a reduced ONNX Runtime build needs, beside the
    tokenizer and labels; refused unless its outputs match the ONNX model's within ``tolerance`` on ``data``
    (default: a sample of the training file). ``output`` defaults to ``BUNDLE-ort``.
    """
    from slm.compression.ort_format import export_ort_bundle

    target = Path(output) if output is not None else default_output(bundle, "ort")
    claim_output_folder(target, force=force)
    manifest = export_ort_bundle(Path(bundle), target, texts=read_texts_of(data, text_col), tolerance=tolerance)
    return WrittenBundle(target, manifest)


def _source(path: str | Path | None, text_col: str | None, label_col: str | None) -> Any:
    if path is None:
        return None
    from slm.pipeline import DataSource

    return DataSource(path, text_col, label_col)


def training_source(bundle: str | Path, given: Any) -> Any:
    """The user's training file, else the one recorded in the bundle's manifest."""
    if given is not None:
        return given
    from slm.bundle.manifest import read_manifest
    from slm.pipeline import recorded_source

    source = recorded_source(read_manifest(Path(bundle), verify=False))
    if source is None:
        raise ConfigError("the bundle's training file is not available: pass it with --data FILE")
    return source


@dataclass(frozen=True)
class CompressOptions:
    """Every knob of :func:`compress` beyond which steps run (the defaults are ``slm compress``'s).

    ``per_channel`` (default True) and ``calibration_size`` (default 256) are int8 options and
    ``block_size`` (default 32) an int4 one: None leaves the default, and setting one for the other
    precision is refused.
    """

    per_channel: bool | None = None
    embeddings: bool = True
    trim_unreachable: bool = True
    vocab_reserve: int = 1000
    gate: float = 1.0
    validation: str | Path | None = None
    fallback: Literal["none", "fp32"] = "none"
    calibration_size: int | None = None
    block_size: int | None = None
    ffn_keep: float = 1.0
    heads_keep: float = 1.0
    dims: int = 256
    data: str | Path | None = None
    text_col: str | None = None
    label_col: str | None = None
    epochs: int = 2
    temperature: float = 2.0
    alpha: float = 0.5
    max_minutes: float | None = None
    threads: int | None = None


def _check_steps(quantize: str | None, prune_layers: int | None, trim_vocab: bool, static: bool) -> str:
    """Refuse impossible combinations; the default output suffix for the ones that make sense."""
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    if static and (quantize or prune_layers or trim_vocab):
        raise ConfigError("--static builds its own model: use it without --quantize, --prune-layers or --trim-vocab")
    if not (static or quantize or prune_layers or trim_vocab):
        raise ConfigError("nothing to do: pass --quantize int8, --prune-layers N, --trim-vocab or --static")
    steps = ("trimmed" if trim_vocab else "", "pruned" if prune_layers else "", quantize or "")
    return "static" if static else "-".join(s for s in steps if s)


def _check_quantize_options(quantize: str | None, options: CompressOptions) -> None:
    """Refuse an option of one precision given with the other (it would be silently ignored)."""
    if quantize == "int4":
        given = [
            name
            for name, value in (("--per-channel/--per-tensor", options.per_channel),
                                ("--calibration-size", options.calibration_size))
            if value is not None
        ]  # fmt: skip
        if given:
            raise ConfigError(
                f"{' and '.join(given)} apply to --quantize int8 and int8-static only: int4 scales each block of "
                "--block-size weights and needs no calibration"
            )
        from slm.compression.int4 import BLOCK_SIZES

        if options.block_size is not None and options.block_size not in BLOCK_SIZES:
            sizes = ", ".join(map(str, BLOCK_SIZES))
            raise ConfigError(f"--block-size must be one of {sizes}, got {options.block_size}")
    elif options.block_size is not None:
        raise ConfigError("--block-size applies to --quantize int4 only")
    if quantize == "int8-openvino" and options.per_channel is not None:
        raise ConfigError(
            "--per-channel/--per-tensor do not apply to --quantize int8-openvino (NNCF picks per channel)"
        )


def _check_private(
    bundle: Path, *, prune_layers: int | None, trim_vocab: bool, static: bool, quantize: str | None
) -> None:
    """Refuse, on a differentially private bundle, the steps that learn from the training texts without privacy:
    distillation (--prune-layers, --static), the vocabulary they use (--trim-vocab), their activation ranges
    (--quantize int8-static). Dynamic int8 and int4 quantization only round the weights."""
    from slm.bundle.manifest import read_manifest

    if not (bundle / "manifest.json").is_file() or read_manifest(bundle).privacy is None:
        return
    steps = {"--prune-layers": bool(prune_layers), "--trim-vocab": trim_vocab, "--static": static,
             "--quantize int8-static": quantize == "int8-static",
             "--quantize int8-openvino": quantize == "int8-openvino"}  # fmt: skip
    refused = [name for name, asked in steps.items() if asked]
    if refused:
        raise ConfigError(
            f"{bundle} was trained with differential privacy; {', '.join(refused)} would learn from the training "
            "texts without it (use --quantize int8 or int4, or train again without --dp-epsilon)"
        )


def compress(
    bundle: str | Path,
    output: str | Path | None = None,
    *,
    quantize: str | None = None,
    prune_layers: int | None = None,
    trim_vocab: bool = False,
    static: bool = False,
    options: CompressOptions | None = None,
    force: bool = False,
) -> WrittenBundle:
    """Make a smaller, faster variant of ``bundle``; every variant is gated on validation data first.

    ``trim_vocab`` keeps only the vocabulary the domain corpus uses, ``prune_layers`` keeps that many
    transformer layers and recovers accuracy by distillation, ``quantize`` ("int8", "int8-static", "int8-openvino"
    or "int4") writes an int8 or int4 bundle (int8-openvino: NNCF int8 for ``backend="openvino"``, which
    needs ``slm[openvino-compress]``); they chain in that order. ``static`` builds the turbo tier on its own.
    A variant that loses more than ``options.gate`` points is refused and nothing is written.
    ``output`` defaults to ``BUNDLE-<steps>`` (e.g. ``BUNDLE-int8``).
    """
    options = options or CompressOptions()
    suffix = _check_steps(quantize, prune_layers, trim_vocab, static)
    _check_quantize_options(quantize, options)
    bundle = Path(bundle)
    _check_private(bundle, prune_layers=prune_layers, trim_vocab=trim_vocab, static=static, quantize=quantize)
    target = Path(output) if output is not None else default_output(bundle, suffix)
    claim_output_folder(target, force=force)
    train_source = _source(options.data, options.text_col, options.label_col)
    if static:
        from slm.compression.static import build_static_bundle

        source = training_source(bundle, train_source)
        return WrittenBundle(target, build_static_bundle(bundle, target, source, dims=options.dims))
    given_texts = read_texts_of(options.data, options.text_col) if (trim_vocab or quantize) else None  # read once
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".slm-compress-", dir=target.resolve().parent) as tmp:
        chain = _Chain(bundle, target, Path(tmp), options, train_source, given_texts)
        if trim_vocab:
            chain.trim(last=not (prune_layers or quantize))
        if prune_layers:
            chain.prune(prune_layers, last=not quantize)
        if quantize:
            chain.quantize(quantize)
    assert chain.manifest is not None  # at least one step ran (checked above)
    return WrittenBundle(target, chain.manifest)


class _Chain:
    """The steps of one :func:`compress` call, each reading the bundle the previous step wrote."""

    def __init__(self, bundle: Path, target: Path, tmp: Path, options: CompressOptions, train_source: Any,
                 given_texts: list[str] | None) -> None:  # fmt: skip
        self.source, self.current, self.target, self.tmp = bundle, bundle, target, tmp
        self.options, self.train_source, self.given_texts = options, train_source, given_texts
        self.manifest: Manifest | None = None

    def _output(self, name: str, last: bool) -> Path:
        return self.target if last else self.tmp / name

    def trim(self, *, last: bool) -> None:
        from slm.compression.trim_vocab import trim_to_corpus

        corpus = training_source(self.source, self.train_source)
        texts = self.given_texts
        if texts is None:
            texts = read_texts_of(Path(corpus.path), corpus.text_col) or []
        out = self._output("trimmed", last)
        self.manifest = trim_to_corpus(
            self.current, out, texts, reserve=self.options.vocab_reserve, corpus=str(corpus.path)
        )
        self.current = out

    def prune(self, layers: int, *, last: bool) -> None:
        from slm.compression.prune import prune_bundle

        o, out = self.options, self._output("pruned", last)
        self.manifest = prune_bundle(
            self.current, out, training_source(self.source, self.train_source), layers=layers, ffn_keep=o.ffn_keep,
            heads_keep=o.heads_keep, epochs=o.epochs, temperature=o.temperature, alpha=o.alpha,
            max_minutes=o.max_minutes,
        )  # fmt: skip
        self.current = out

    def quantize(self, mode: str) -> None:
        if mode == "int8-openvino":
            self._quantize_openvino()
            return
        from slm.compression.int4 import DEFAULT_BLOCK_SIZE
        from slm.compression.quantize import quantize_bundle

        o = self.options
        self.manifest = quantize_bundle(
            self.current, self.target, mode={"int8-static": "static", "int4": "int4"}.get(mode, "dynamic"),
            per_channel=o.per_channel is not False, embeddings=o.embeddings, gate_points=o.gate,
            validation=_source(o.validation, o.text_col, o.label_col),
            calibration_size=o.calibration_size or 256, fallback=o.fallback, trim_vocabulary=o.trim_unreachable,
            threads=o.threads, export_texts=self.given_texts, block_size=o.block_size or DEFAULT_BLOCK_SIZE,
        )  # fmt: skip

    def _quantize_openvino(self) -> None:
        """NNCF int8 for OpenVINO (slm.compression.openvino), with the same gate and calibration texts."""
        from slm.compression.openvino import quantize_openvino_bundle

        o = self.options
        self.manifest = quantize_openvino_bundle(
            self.current, self.target, gate_points=o.gate, validation=_source(o.validation, o.text_col, o.label_col),
            calibration_size=o.calibration_size or 300, threads=o.threads, export_texts=self.given_texts,
        )  # fmt: skip
