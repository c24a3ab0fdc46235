"""Hugging Face Optimum side of ``slm bench``: runs in the Optimum virtual environment, never imports slm.

    python optimum_worker.py quantize --dir DIR --config '{"preset": "avx2", ...}'
    python optimum_worker.py serve --dir DIR --file-name model_quantized.onnx --threads 2 --max-length 128

``quantize`` applies Optimum's dynamic quantization (``ORTQuantizer`` + ``AutoQuantizationConfig``)
to ``DIR/model.onnx`` and prints one JSON line: the file written and the exact configuration.
``serve`` loads the quantized model with ``ORTModelForSequenceClassification`` and the tokenizer
with ``AutoTokenizer`` and answers the benchmark protocol (see ``protocol.py`` beside this file),
predicting the way an Optimum user would: tokenizer with dynamic padding (to the longest text of
each batch) and truncation, the model's logits, a softmax.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol import limit_threads, serve  # noqa: E402  (the folder of this script, not slm)


def _quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def quantize(model_dir: Path, config: dict) -> dict:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = dict(config)
    name = preset.pop("preset")
    qconfig = getattr(AutoQuantizationConfig, name)(**preset)
    quantizer = ORTQuantizer.from_pretrained(model_dir, file_name="model.onnx")
    written = Path(quantizer.quantize(save_dir=model_dir, quantization_config=qconfig))
    files = sorted(p.name for p in written.glob("*.onnx")) if written.is_dir() else [written.name]
    quantized = [f for f in files if "quantized" in f]
    resolved = {
        key: (value.name if hasattr(value, "name") else value)
        for key, value in vars(qconfig).items()
        if not key.startswith("_")
    }
    import optimum.version as optimum_version

    return {
        "file_name": (quantized or files)[0],
        "quantization": {
            "call": f"AutoQuantizationConfig.{name}({', '.join(f'{k}={v!r}' for k, v in preset.items())})",
            "resolved": json.loads(json.dumps(resolved, default=str)),
            "optimum": optimum_version.__version__,
        },
    }


def load_model(model_dir: Path, file_name: str, threads: int, max_length: int):
    import numpy as np
    import onnxruntime
    import torch

    torch.set_num_threads(threads)
    import transformers.models.bert.tokenization_bert_fast  # noqa: F401  (imported lazily otherwise)
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    started = time.perf_counter()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    model = ORTModelForSequenceClassification.from_pretrained(
        model_dir, file_name=file_name, provider="CPUExecutionProvider", session_options=options
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def predict(texts, batch_size):
        out = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            inputs = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            with torch.inference_mode():
                logits = model(**inputs).logits
            logits = logits.numpy() if hasattr(logits, "numpy") else np.asarray(logits)
            shifted = logits - logits.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            out.append(exp / exp.sum(axis=1, keepdims=True))
        return np.concatenate(out, axis=0)

    predict(["hello"], 1)  # ready means predicted once, as for slm's workers
    model_load_s = time.perf_counter() - started
    # A one-word probe: with dynamic padding it is a handful of tokens wide, never max_length.
    probe = tokenizer(["hello"], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    config = model.config
    labels = [config.id2label[i] for i in range(config.num_labels)]
    info = {
        "model_load_s": model_load_s,
        "engine": "optimum ORTModelForSequenceClassification (onnxruntime)",
        "file": str((model_dir / file_name).resolve()),
        "providers": model.session.get_providers() if hasattr(model, "session") else None,
        "intra_op_num_threads": threads,
        "tokenizer": type(tokenizer).__name__,
        "probe_width_tokens": int(probe["input_ids"].shape[1]),
        "dynamic_padding": int(probe["input_ids"].shape[1]) < max_length,
        "versions": _versions(),
    }
    return predict, labels, info


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("optimum", "optimum-onnx", "transformers", "torch", "onnxruntime", "onnx", "tokenizers", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optimum_worker.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("--dir", type=Path, required=True)
    q.add_argument("--config", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--file-name", required=True)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--max-length", type=int, default=128)
    s.add_argument("--spawned-at", type=float, default=None)
    s.add_argument("--load-only", action="store_true")
    args = parser.parse_args(argv)
    _quiet()
    if args.mode == "quantize":
        limit_threads(2)
        result = quantize(args.dir, json.loads(args.config))
        print(json.dumps(result))
        return 0
    limit_threads(args.threads)
    return serve(
        lambda: load_model(args.dir, args.file_name, args.threads, args.max_length), args.spawned_at, args.load_only
    )


if __name__ == "__main__":
    sys.exit(main())
