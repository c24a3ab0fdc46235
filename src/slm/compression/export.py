"""Export a bundle's transformer to ONNX, fuse it with ONNX Runtime's transformer optimizer, check parity."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from slm.bundle.derive import derive_bundle
from slm.bundle.manifest import read_manifest
from slm.bundle.schema import Manifest, OnnxSpec
from slm.compression.default import ships_ensemble
from slm.errors import BundleError, ConfigError, ModelError
from slm.models.ensemble import probabilities

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
INPUT_NAMES = ["input_ids", "attention_mask"]


def _torch_model(bundle: Path, manifest: Manifest):
    """The bundle's classifier in PyTorch with eager attention (the form ORT's BERT fusions recognise)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from slm.models.encoder import classifier_from_config

    spec = manifest.components.transformer
    if spec is None or not (bundle / spec.weights).is_file():
        raise BundleError(f"{bundle} has no PyTorch transformer weights to export")
    config = AutoConfig.from_pretrained(bundle / spec.config)
    model = classifier_from_config(config, len(manifest.labels or []), attn_implementation="eager")
    model.load_state_dict(load_file(str(bundle / spec.weights)))
    return model.eval()


def export_onnx_graph(bundle: str | Path, onnx_path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Plain fp32 ONNX graph of the classifier: inputs ``input_ids``/``attention_mask``, output ``logits``.

    Batch and sequence axes are dynamic. Uses the TorchScript exporter (``dynamo=False``), whose
    graph ONNX Runtime's BERT optimizer fuses completely.
    """
    import torch

    bundle, onnx_path = Path(bundle), Path(onnx_path)
    if opset < 17:
        raise ConfigError(f"opset {opset} is too old: slm exports opset 17 or newer")
    manifest = read_manifest(bundle)
    model = _torch_model(bundle, manifest)
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2129, 2079, 1045, 102]], dtype=torch.long)
    mask = (ids != 0).long()
    ids = ids % int(model.config.vocab_size)  # a trimmed vocabulary can be smaller than these sample ids
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(onnx_path),
            input_names=INPUT_NAMES,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return onnx_path


def optimize_graph(source: Path, target: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's offline BERT fusions (attention, layer norms, GELU); returns the fused-op counts."""
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1, use_gpu=False
    )
    optimized.save_model_to_file(str(target))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def sample_texts(manifest: Manifest, texts: list[str] | None, n: int = 256, seed: int = 0) -> list[str]:
    """Texts for parity and calibration: the given ones, else a sample of the bundle's training file."""
    if texts is None:
        from slm.data.loading import read_unlabelled
        from slm.pipeline import recorded_source

        source = recorded_source(manifest)
        if source is None:
            raise ConfigError("no sample texts: pass --data FILE (the bundle's training file is not available)")
        frame, column = read_unlabelled(source.path, source.text_col)
        texts = frame[column].tolist()
    texts = [str(t) for t in texts if str(t).strip()]
    if not texts:
        raise ConfigError("no sample texts to check the export with")
    rng = np.random.default_rng(seed)
    if len(texts) > n:
        texts = [texts[i] for i in sorted(rng.choice(len(texts), n, replace=False))]
    return texts


def parity(bundle: Path, manifest: Manifest, onnx_dir: Path, texts: list[str], multi_label: bool) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime probabilities on ``texts``."""
    from slm.runtime.onnx import OnnxComponent
    from slm.training.component import TransformerComponent

    torch_spec = manifest.components.transformer
    if torch_spec is None:
        raise BundleError(f"{bundle} has no transformer component to compare the ONNX model with")
    reference = TransformerComponent(bundle, torch_spec, len(manifest.labels or [])).logits(texts, batch_size=32)
    spec = OnnxSpec(
        file=f"{onnx_dir.name}/{ONNX_FILE}", tokenizer=torch_spec.tokenizer, max_length=torch_spec.max_length
    )
    onnx = OnnxComponent(onnx_dir.parent, spec).logits(texts, batch_size=32)
    return float(np.abs(probabilities(reference, multi_label) - probabilities(onnx, multi_label)).max())


def export_bundle(
    bundle: str | Path,
    output: str | Path,
    *,
    texts: list[str] | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> Manifest:
    """Write a copy of ``bundle`` with a fused fp32 ONNX model; refuse it if parity with PyTorch fails.

    The new bundle runs without PyTorch in ``slm.runtime``; its default component is the parent's: the
    ensemble (ONNX transformer + the n-gram model, computed with numpy) when training shipped it, else the
    ONNX transformer. The choice training made on validation holds, since the ONNX probabilities are
    those of PyTorch to within the parity tolerance (1e-4). The PyTorch weights and the n-gram model stay.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    torch_spec = manifest.components.transformer
    if torch_spec is None:
        raise BundleError(f"{bundle} has no transformer component to export")
    sample = sample_texts(manifest, texts)
    multi_label = manifest.multi_label
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(bundle / torch_spec.config)

    def change(staging: Path, new: Manifest) -> Manifest:
        onnx_dir = staging / ONNX_DIR
        onnx_dir.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="slm-export-") as tmp:
            raw = export_onnx_graph(bundle, Path(tmp) / "raw.onnx", opset=opset)
            fused = optimize_graph(
                raw, onnx_dir / ONNX_FILE, num_heads=config.num_attention_heads, hidden_size=config.hidden_size
            )
        diff = parity(bundle, manifest, onnx_dir, sample, multi_label)
        if not diff <= tolerance:
            raise ModelError(
                f"ONNX export failed the parity check: probabilities differ from PyTorch by up to {diff:.2e} "
                f"(tolerance {tolerance:.0e}); the bundle was not written"
            )
        new.components.onnx = OnnxSpec(
            file=f"{ONNX_DIR}/{ONNX_FILE}",
            tokenizer=torch_spec.tokenizer,
            max_length=torch_spec.max_length,
            precision="fp32",
            opset=opset,
            inputs=INPUT_NAMES,
            output="logits",
            fused_operators=fused,
            parity={"max_abs_diff": diff, "tolerance": tolerance, "texts": len(sample)},
        )
        new.default_component = default
        new.compression = new.compression or {}
        if default == "ensemble":  # training's choice on validation, kept: the probabilities are PyTorch's
            new.compression["default_component"] = {
                "component": default, "step": "export", "chosen_on": "validation", "chosen_by": "training",
                "parity_max_abs_diff": diff,
            }  # fmt: skip
        return new

    log.info(f"exporting {bundle} to ONNX (opset {opset}) and checking parity on {len(sample)} texts")
    default = "ensemble" if ships_ensemble(manifest) else "transformer"
    parent_default = manifest.default_component or "ensemble"
    if parent_default != default:
        log.info(
            f"note: {bundle} predicts with its {parent_default} by default; the exported bundle "
            f"predicts with the ONNX transformer (use --component {parent_default} to choose it)"
        )
    return derive_bundle(bundle, output, change, drop=(ONNX_DIR,), step="export")
