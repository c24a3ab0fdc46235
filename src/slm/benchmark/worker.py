"""One benchmark variant in its own process: ``python -m slm.benchmark.worker KIND BUNDLE``.

Kinds:

- ``runtime``: slm's torch-free runtime (``slm.runtime.load(path, threads=N)``).
- ``torch``: the bundle's transformer in PyTorch fp32, eager (``TransformerComponent``).
- ``torch-int8``: the same with ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``
  (qint8), applied at load time.

Only what the kind needs is imported, after the thread pools are pinned, so the peak RSS of the
process is the variant's own. The timed model load ends with one prediction: components that load
on first use (slm's runtime) are then loaded too, so every kind is timed to the same "ready".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from slm.benchmark.isolated.protocol import limit_threads, serve

KINDS = ("runtime", "torch", "torch-int8")
READY_PROBE = "hello"  # predicted once inside the timed load, so "ready" means able to answer at once


def _tokenizer_padding(model) -> object:
    """The padding setting of the ``tokenizers.Tokenizer`` a runtime model uses, when it can be found.

    None means padding is off (the runtime pads each batch itself); a dict with a fixed ``length``
    would mean every text is padded to it.
    """
    holders = [model, *vars(model).values()] if hasattr(model, "__dict__") else [model]
    for holder in holders:
        tokenizer = getattr(holder, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "padding") and not callable(tokenizer.padding):
            return tokenizer.padding
    return "unknown"


def load_runtime(path: Path, threads: int, backend: str | None = None):
    from slm.runtime import load

    started = time.perf_counter()
    model = load(path, threads=threads, backend=backend)

    def predict(texts, batch_size):
        return model.predict_proba(texts, batch_size=batch_size)

    predict([READY_PROBE], 1)
    model_load_s = time.perf_counter() - started
    info = {
        "model_load_s": model_load_s,
        "engine": f"slm.runtime ({getattr(model, 'backend', type(model).__name__)})",
        "backend": getattr(model, "backend", None),
        "component": getattr(model, "default_component", None),
        "tokenizer_padding": _tokenizer_padding(model),
        "torch_imported": "torch" in sys.modules,
    }
    return predict, list(model.labels), info


def load_torch(path: Path, threads: int, *, quantize: bool):
    import torch

    torch.set_num_threads(threads)
    import transformers.models.bert.modeling_bert  # noqa: F401  (imported lazily otherwise: not model load)

    from slm.bundle.manifest import read_manifest
    from slm.errors import BundleError
    from slm.models.ensemble import probabilities
    from slm.training.component import TransformerComponent

    started = time.perf_counter()
    manifest = read_manifest(path, verify=False)
    labels = list(manifest.labels or [])
    if manifest.components.transformer is None:
        raise BundleError(f"{path} has no PyTorch transformer")
    component = TransformerComponent(path, manifest.components.transformer, len(labels))
    if quantize:
        component.model = torch.ao.quantization.quantize_dynamic(component.model, {torch.nn.Linear}, dtype=torch.qint8)
    multi_label = manifest.multi_label

    def predict(texts, batch_size):
        return probabilities(component.logits(texts, batch_size=batch_size), multi_label)

    predict([READY_PROBE], 1)
    model_load_s = time.perf_counter() - started
    info = {
        "model_load_s": model_load_s,
        "engine": "torch int8 dynamic (quantize_dynamic nn.Linear qint8)" if quantize else "torch fp32 eager",
        "component": "transformer",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "attn_implementation": getattr(component.model.config, "_attn_implementation", None),
    }
    if quantize:
        info["quantized_engine"] = torch.backends.quantized.engine
    return predict, labels, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slm.benchmark.worker")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default=None, help="runtime: onnx, openvino or torch (default: the bundle's)")
    parser.add_argument("--spawned-at", type=float, default=None)
    parser.add_argument("--load-only", action="store_true")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    def load():
        if args.kind == "runtime":
            return load_runtime(args.bundle, args.threads, args.backend)
        return load_torch(args.bundle, args.threads, quantize=args.kind == "torch-int8")

    return serve(load, args.spawned_at, args.load_only)


if __name__ == "__main__":
    sys.exit(main())
