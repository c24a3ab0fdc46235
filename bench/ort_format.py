"""ONNX Runtime's ORT format against the ONNX bundle it came from (issue 25, acceptance 3).

    python bench/ort_format.py --bundle runs/bench/banking77-onnx --bundle runs/bench/banking77-int8

For each exported bundle (fp32 and int8 ONNX): ``slm.api.export_ort`` writes the ``.ort`` bundle, then, on
BANKING77's official test split (3,080 texts), both files run in bare onnxruntime sessions (one thread, one
text per run, as a phone app would call them) and the raw outputs (logits) are compared; the sizes of the
model files, the session load times (median of 5 loads: an ``.ort`` file skips the graph optimizers) and the
test accuracy of both are recorded, with the operators a reduced ONNX Runtime build would need.
Writes ``bench/results/ort_format.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
TOLERANCE = 1e-5


def _session(model: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _load_ms(model: Path, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _session(model)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def _logits(model: Path, ids: list[list[int]]) -> np.ndarray:
    session = _session(model)
    rows = []
    for row in ids:
        feed = np.array([row], dtype=np.int64)
        rows.append(session.run(None, {"input_ids": feed, "attention_mask": np.ones_like(feed)})[0][0])
    return np.stack(rows)


def _operators(config: Path) -> list[str]:
    """``domain;opset;Op{json types},Op2`` lines of ORT's config as ``domain:Op`` names.

    Commas inside braces (the JSON types) are skipped."""
    names = []
    for line in config.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        domain, _, ops = line.split(";", 2)
        depth, name = 0, ""
        for char in ops + ",":
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth == 0 and char == ",":
                names.append(f"{domain}:{name.strip()}")
                name = ""
            elif depth == 0 and char != "}":
                name += char
    return sorted(set(names))


def measure(bundle: Path, work: Path, texts: list[str], labels: list[str]) -> dict:
    from slm.api import export_ort
    from slm.bundle.manifest import read_manifest
    from slm.runtime.onnx import load_tokenizer

    written = export_ort(bundle, work / f"{bundle.name}-ort", data=None)
    manifest, spec = read_manifest(bundle), read_manifest(bundle).components.onnx
    tokenizer = load_tokenizer(bundle / spec.tokenizer, spec.max_length)
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    onnx_file, ort_file = bundle / spec.file, written.path / written.manifest.components.onnx.file
    onnx_out, ort_out = _logits(onnx_file, ids), _logits(ort_file, ids)
    names = manifest.labels
    record = written.manifest.compression["ort_format"]
    diff = float(np.abs(onnx_out - ort_out).max())
    return {
        "bundle": str(bundle),
        "precision": spec.precision,
        "onnx_mb": round(onnx_file.stat().st_size / 1e6, 2),
        "ort_mb": round(ort_file.stat().st_size / 1e6, 2),
        "max_abs_logit_diff": diff,
        "within_tolerance": diff <= TOLERANCE,
        "onnx_accuracy": float(np.mean([names[i] == y for i, y in zip(onnx_out.argmax(1), labels, strict=True)])),
        "ort_accuracy": float(np.mean([names[i] == y for i, y in zip(ort_out.argmax(1), labels, strict=True)])),
        "labels_agree": float(np.mean(onnx_out.argmax(1) == ort_out.argmax(1))),
        "onnx_load_ms": _load_ms(onnx_file),
        "ort_load_ms": _load_ms(ort_file),
        "operators": _operators(written.path / record["operators_config"]),
        "texts": len(texts),
    }


def render(result: dict) -> str:
    lines = [
        "# ORT format vs ONNX (BANKING77 test split, bare onnxruntime sessions, 1 thread, batch 1)",
        "",
        "`python bench/ort_format.py`; the `.ort` files come from `slm export BUNDLE --target ort`.",
        "",
        "| bundle | precision | .onnx MB | .ort MB | max logit difference | labels agree | accuracy (.onnx / .ort) "
        "| load ms (.onnx / .ort) | operators |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {Path(r['bundle']).name} | {r['precision']} | {r['onnx_mb']} | {r['ort_mb']} "
            f"| {r['max_abs_logit_diff']:.1e} | {r['labels_agree']:.2%} "
            f"| {r['onnx_accuracy']:.2%} / {r['ort_accuracy']:.2%} | {r['onnx_load_ms']} / {r['ort_load_ms']} "
            f"| {len(r['operators'])} |"
        )
    ok = all(r["within_tolerance"] for r in result["runs"])
    lines += [
        "",
        f"Target (issue 25, acceptance 3): outputs within {TOLERANCE:g} of the ONNX bundle's: "
        f"{'met' if ok else 'missed'}.",
        "",
        "Operators a reduced build needs (int8 bundle): "
        + ", ".join(f"`{op}`" for op in result["runs"][-1]["operators"]),
        "",
        f"Machine: {result['machine']['cpu']['model']}, load average {result['load_average']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", type=Path, required=True, help="exported bundle (repeat)")
    args = parser.parse_args(argv)
    test = pd.read_csv(DATA / "test.csv")
    texts, labels = test["text"].astype(str).tolist(), test["category"].astype(str).tolist()
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
        runs = [measure(b, Path(tmp), texts, labels) for b in args.bundle]
    result = {"runs": runs, "machine": machine_info(["onnxruntime"]), "load_average": load_average()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ort_format.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "ort_format.md").write_text(render(result))
    print(render(result))
    return 0 if all(r["within_tolerance"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
