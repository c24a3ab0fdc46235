"""The apps' ONNX encoders: an intent classifier (logits + sentence embedding) and a bi-encoder (embedding).

The support assistant ships both (intents, FAQ retriever), the recommender a bi-encoder (its item tower).
Both are exported with the same TorchScript exporter and ONNX Runtime fusions as ``slm export`` and
quantized to dynamic int8 like ``slm compress``; the int8 graph ships only when it agrees with fp32 on
validation texts (``check``), so the run-time path needs onnxruntime alone.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from slm.bundle.schema import EncoderSpec
from slm.errors import BundleError
from slm.runtime.onnx import OnnxComponent

INTENT_OUTPUTS = ("logits", "embedding")
RETRIEVER_OUTPUTS = ("embedding",)


def _graphs():
    """The two export wrappers (torch is imported only when exporting)."""
    import torch
    from torch import nn

    from slm.models.encoder import masked_mean

    class IntentGraph(nn.Module):
        """Classifier → (logits, pooled sentence embedding)."""

        def __init__(self, classifier) -> None:
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            pooled = self.classifier.embed(input_ids, attention_mask)
            return self.classifier.head(pooled), pooled

    class EmbeddingGraph(nn.Module):
        """Encoder → masked mean pooling → unit length (the sentence-transformers recipe)."""

        def __init__(self, encoder) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return nn.functional.normalize(masked_mean(hidden, attention_mask), dim=-1)

    return IntentGraph, EmbeddingGraph


def _export(module, target: Path, outputs: tuple[str, ...], config, opset: int = 17) -> dict[str, int]:
    """TorchScript export + ORT's BERT fusions of ``module`` to ``target`` (fp32); returns fused-op counts."""
    import torch

    from slm.compression.export import INPUT_NAMES, optimize_graph

    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2129, 2079, 1045, 102]], dtype=torch.long)
    mask = (ids != 0).long()
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes.update({name: {0: "batch"} for name in outputs})
    with tempfile.TemporaryDirectory(prefix="slm-support-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (ids, mask),
                str(raw),
                input_names=INPUT_NAMES,
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        return optimize_graph(raw, target, num_heads=config.num_attention_heads, hidden_size=config.hidden_size)


def export_encoder(
    module,
    config,
    tokenizer_dir: Path,
    root: Path,
    name: str,
    outputs: tuple[str, ...],
    *,
    max_length: int,
    check_texts: list[str],
    int8: bool = True,
    agreement: float = 0.99,
) -> EncoderSpec:
    """Write ``root/name/{model.onnx, tokenizer}`` and return its manifest spec.

    With ``int8``, the dynamic-int8 graph replaces fp32 when, on ``check_texts``, its first output's
    argmax agrees with fp32 on at least ``agreement`` of them (intent logits) or, for an embedding,
    the mean cosine with fp32 is at least ``agreement``.
    """
    from slm.compression.quantize import QuantRecipe, quantize_graph

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tokenizer_dir, folder / "tokenizer", dirs_exist_ok=True)
    fp32 = folder / "model.onnx"
    fused = _export(module, fp32, outputs, config)
    spec = EncoderSpec(
        file=f"{name}/model.onnx",
        tokenizer=f"{name}/tokenizer",
        max_length=int(max_length),
        outputs=list(outputs),
        dim=int(config.hidden_size),
        precision="fp32",
        fused_operators=fused,
    )
    if not int8 or not check_texts:
        return spec
    reference = Encoder(root, spec).outputs(check_texts)[0]
    quantized = folder / "model.int8.onnx"
    quantize_graph(fp32, quantized, QuantRecipe("dynamic-int8"))
    candidate = Encoder(root, replace(spec, file=f"{name}/model.int8.onnx")).outputs(check_texts)[0]
    if outputs[0] == "logits":
        score = float((reference.argmax(1) == candidate.argmax(1)).mean())
        measure = "argmax agreement"
    else:
        score = float((reference * candidate).sum(1).mean())
        measure = "mean cosine"
    spec.int8_check = {
        "measure": measure,
        "value": round(score, 5),
        "required": agreement,
        "texts": len(check_texts),
    }
    if score >= agreement:
        quantized.replace(fp32)
        spec.precision = "int8"
    else:
        quantized.unlink()
    return spec


def intent_graph(classifier):
    """The export wrapper of an intent classifier: outputs ``logits`` and ``embedding``."""
    intent, _ = _graphs()
    return intent(classifier)


def embedding_graph(encoder):
    """The export wrapper of a bi-encoder: output ``embedding`` (unit length)."""
    _, embedding = _graphs()
    return embedding(encoder)


class Encoder(OnnxComponent):
    """An exported encoder run by ONNX Runtime: named outputs for a list of texts."""

    def __init__(self, root: Path, spec: EncoderSpec, *, threads: int | None = None) -> None:
        super().__init__(Path(root), spec, threads=threads)
        self.output_names = tuple(spec.outputs)
        self.spec_dim = int(spec.dim)
        missing = set(self.output_names) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise BundleError(f"{root}: the ONNX encoder {spec.file} lacks outputs {sorted(missing)}")

    def outputs(self, texts: list[str], *, batch_size: int = 32, show_progress: bool = False) -> list[np.ndarray]:
        """Every output of the encoder for ``texts``, in ``spec.outputs`` order."""
        if not texts:
            return [np.zeros((0, 0), dtype=np.float32) for _ in self.output_names]
        return self.infer(texts, self.output_names, batch_size=batch_size, show_progress=show_progress)

    def embed(
        self, texts: list[str], *, max_length: int | None = None, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Unit-length embeddings; ``max_length`` overrides the query length (documents are longer)."""
        if max_length is not None:
            self.tokenizer.enable_truncation(max_length=max_length)
        try:
            index = self.output_names.index("embedding")
            out = self.outputs(texts, batch_size=batch_size, show_progress=show_progress)[index]
        finally:
            if max_length is not None:
                self.tokenizer.enable_truncation(max_length=self.max_length)
        return out if len(texts) else np.zeros((0, int(self.spec_dim)), dtype=np.float32)
