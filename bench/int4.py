"""4-bit weights on BANKING77: int4 against int8 and fp32, each in its own process, interleaved (issue 25, item 4).

    python bench/int4.py                                # build what is missing in /tmp/int4, then measure
    python bench/int4.py --rounds 2 --max-eval 500      # a quick look
    python bench/int4.py --no-sweep                     # leave out the int4 recipe comparison

From the trained BANKING77 bundle (``--source``, default ``/work/artifacts/nondp``: MiniLM-L6 + TF-IDF
n-grams) it builds, with slm's own API exactly as ``slm export`` / ``slm compress`` would, in ``--work``:
``nondp-onnx`` (fp32 export), ``nondp-int8`` (``--quantize int8``, slm's default recipe), ``nondp-int4``
(``--quantize int4``) and ``nondp-int4-b128`` (``--quantize int4 --block-size 128``), each gated on the
bundle's own validation split (1,001 texts, gate 1.0 point). Then every variant runs through slm's
torch-free runtime in its own worker process, round-robin (``slm.benchmark.run_benchmark``, 2 threads):
size of the weights it loads, peak RSS of the process after loading and predicting every test text,
batch-1 latency, batch-32 texts/s, and accuracy on the official test set (3,080 texts), transformer
alone; the ensemble with the TF-IDF model is scored in this process, beside the TF-IDF baseline the
manifest records. The sweep quantizes each int4 recipe of the choice made in ``slm.compression.int4``
(fused or unfused attention, embeddings int8 or int4, block 32 or 128) and records its validation gate,
size, share of 4-bit weights and test accuracy. Writes ``bench/results/int4.json`` and ``int4.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77" / "test.csv"
SOURCE = ROOT.parent.parent / "artifacts" / "nondp"
RESULTS = ROOT / "results"
TARGET = 0.7  # acceptance 4: int4 file size or peak RSS at most this times the int8 bundle's
# The int4 recipes compared in the sweep: (name, unfuse attention, embeddings, block size).
SWEEP = [
    ("fused attention, int8 embeddings", False, "int8", 32),
    ("unfused attention, int8 embeddings", True, "int8", 32),
    ("fused attention, int4 embeddings", False, "int4", 32),
    ("unfused attention, int4 embeddings (default)", True, "int4", 32),
    ("fused attention, int4 embeddings, block 128", False, "int4", 128),
    ("unfused attention, int4 embeddings, block 128", True, "int4", 128),
]
FLOOR_SCRIPT = """
import json, slm.runtime.onnx, onnxruntime, tokenizers, numpy
from slm.benchmark.isolated.protocol import memory_mb
print(json.dumps(memory_mb()))
"""


def build(source: Path, work: Path) -> dict[str, Path]:
    """The fp32, int8 and int4 bundles of ``source`` in ``work`` (those missing are built); name -> path."""
    from slm.compression.export import export_bundle
    from slm.compression.quantize import quantize_bundle

    onnx = work / "nondp-onnx"
    steps = [
        ("fp32 ONNX", onnx, lambda out: export_bundle(source, out)),
        ("int8", work / "nondp-int8", lambda out: quantize_bundle(onnx, out)),
        ("int4", work / "nondp-int4", lambda out: quantize_bundle(onnx, out, mode="int4")),
        ("int4 block 128", work / "nondp-int4-b128", lambda out: quantize_bundle(onnx, out, mode="int4",
                                                                                   block_size=128)),
    ]  # fmt: skip
    for name, path, make in steps:
        if not (path / "manifest.json").is_file():
            print(f"building {name}: {path}", file=sys.stderr)
            make(path)
    return {name: path for name, path, _ in steps}


def test_accuracy(bundle: Path, texts: list[str], gold: list[str], component: str) -> float:
    """Accuracy of one component of ``bundle`` on the test texts, in this process."""
    import numpy as np

    import slm

    model = slm.load(bundle)
    proba = model.predict_proba(texts, component=component)
    return float((np.asarray(model.labels)[proba.argmax(1)] == np.asarray(gold)).mean())


def sweep(onnx: Path, work: Path, texts: list[str], gold: list[str]) -> list[dict]:
    """Each int4 recipe of SWEEP built (gate wide open, so each is written) and scored; its gate result recorded."""
    from slm.bundle.manifest import read_manifest
    from slm.compression.int4 import Int4Recipe
    from slm.compression.quantize import quantize_bundle

    rows = []
    for index, (name, unfuse, embeddings, block) in enumerate(SWEEP):
        out = work / "sweep" / f"recipe-{index}"
        recipe = Int4Recipe(f"sweep-{index}", block, embeddings=embeddings, unfuse=unfuse)
        if not (out / "manifest.json").is_file():
            print(f"building sweep recipe: {name}", file=sys.stderr)
            quantize_bundle(onnx, out, mode="int4", recipes=[recipe], gate_points=100.0)
        quantization = (read_manifest(out).compression or {})["quantization"]
        gate = quantization["validation"]
        rows.append({
            "recipe": name, "unfuse_attention": unfuse, "embeddings": embeddings, "block_size": block,
            "size_mb": round((out / "onnx" / "model.onnx").stat().st_size / 1e6, 3),
            "precision_shares": quantization["precision_shares"], "validation": gate,
            "passes_gate_1pt": gate["drop_points"] <= 1.0,
            "test_accuracy": round(test_accuracy(out, texts, gold, "transformer"), 5),
        })  # fmt: skip
    return rows


def runtime_floor() -> dict:
    """Peak RSS of a process that imports the runtime (ONNX Runtime, tokenizers, numpy) and loads no model."""
    done = subprocess.run([sys.executable, "-c", FLOOR_SCRIPT], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def measure(bundles: dict[str, Path], args: argparse.Namespace, work: Path) -> dict:
    """run_benchmark over the bundles (own process each, interleaved); its results, written under ``work``."""
    from slm.benchmark import run_benchmark
    from slm.pipeline import DataSource

    return run_benchmark(
        list(bundles.values()), DataSource(args.data, "text", "category"), work / "harness", baselines=False,
        optimum=False, threads=args.threads, rounds=args.rounds, max_eval=args.max_eval, name="int4-harness",
        show_progress=True, force=True,
    )  # fmt: skip


def variant_rows(bundles: dict[str, Path], harness: dict, texts: list[str], gold: list[str]) -> list[dict]:
    """One row per variant: the harness's speed, memory and accuracy, the manifest's gate, the ensemble's accuracy."""
    from slm.bundle.manifest import read_manifest

    by_source = {row["source"]: row for row in harness["variants"]}
    rows = []
    for name, path in bundles.items():
        row = by_source[str(path)]
        summary, manifest = row["summary"], read_manifest(path)
        quantization = (manifest.compression or {}).get("quantization") or {}
        onnx = manifest.components.onnx
        rows.append({
            "variant": name, "bundle": str(path), "precision": onnx.precision if onnx else None,
            "recipe": (quantization.get("recipe") or {}).get("name"),
            "precision_shares": quantization.get("precision_shares"), "gate": quantization.get("validation"),
            "gate_points": quantization.get("gate_points"), "size_mb": summary["size_mb"],
            "peak_rss_mb": summary["peak_rss_mb"],
            "peak_rss_after_load_mb": ((row["memory"] or {}).get("after_load") or {}).get("peak_rss_mb"),
            "p50_short_ms": summary["p50_short_ms"], "p95_short_ms": summary["p95_short_ms"],
            "p50_long_ms": summary["p50_long_ms"], "texts_per_s": summary["texts_per_s"],
            "load_s": summary["load_s"], "test_accuracy": summary["accuracy"],
            "test_accuracy_ensemble": round(test_accuracy(path, texts, gold, "ensemble"), 5),
        })  # fmt: skip
    return rows


def ratios_to(rows: list[dict], reference: str) -> None:
    """Each row's size, peak RSS, latency and throughput as a multiple of the ``reference`` row's (in place)."""
    ref = next(row for row in rows if row["variant"] == reference)
    for row in rows:
        row[f"vs_{reference}"] = {
            key: round(row[key] / ref[key], 3) if row[key] and ref[key] else None
            for key in ("size_mb", "peak_rss_mb", "p50_short_ms", "texts_per_s")
        }


def verdict(rows: list[dict], floor_mb: float | None) -> dict:
    """Acceptance 4 for the default int4 bundle: size or peak RSS at most TARGET x int8, and what it cost."""
    int8 = next(row for row in rows if row["variant"] == "int8")
    int4 = next(row for row in rows if row["variant"] == "int4")
    size, rss = int4["vs_int8"]["size_mb"], int4["vs_int8"]["peak_rss_mb"]
    above = None
    if floor_mb is not None and int4["peak_rss_mb"] and int8["peak_rss_mb"]:
        above = round((int4["peak_rss_mb"] - floor_mb) / (int8["peak_rss_mb"] - floor_mb), 3)
    return {
        "target": f"size or peak RSS <= {TARGET}x the int8 bundle",
        "size_ratio": size, "peak_rss_ratio": rss, "peak_rss_above_runtime_ratio": above,
        "met": bool((size is not None and size <= TARGET) or (rss is not None and rss <= TARGET)),
        "accuracy_delta_vs_int8_points": round(100 * (int4["test_accuracy"] - int8["test_accuracy"]), 2),
        "p50_ratio": int4["vs_int8"]["p50_short_ms"], "texts_per_s_ratio": int4["vs_int8"]["texts_per_s"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SOURCE, help="the trained BANKING77 bundle")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "int4", help="where bundles go")
    parser.add_argument("--data", type=Path, default=DATA, help="labelled test file (text, category)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-eval", type=int, default=None, help="score at most this many test texts")
    parser.add_argument("--no-sweep", action="store_true", help="leave out the int4 recipe comparison")
    args = parser.parse_args(argv)
    import pandas as pd

    from slm.bundle.manifest import read_manifest
    from slm.fileio import write_json_atomic, write_text_atomic
    from slm.hardware import load_average, machine_info

    if not (args.source / "manifest.json").is_file() or not args.data.is_file():
        print(f"error: need the bundle {args.source} and the test file {args.data}", file=sys.stderr)
        return 2
    started, load_start = datetime.now(UTC).isoformat(timespec="seconds"), load_average()
    args.work.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.data)
    if args.max_eval:
        frame = frame.sample(n=min(args.max_eval, len(frame)), random_state=0)
    texts, gold = frame["text"].astype(str).tolist(), frame["category"].astype(str).tolist()
    bundles = build(args.source, args.work)
    floor = runtime_floor()
    harness = measure(bundles, args, args.work)
    rows = variant_rows(bundles, harness, texts, gold)
    for reference in ("int8", "fp32 ONNX"):
        ratios_to(rows, reference)
    baseline = ((read_manifest(args.source).metrics or {}).get("test") or {}).get("ngram_baseline") or {}
    results = {
        "title": "int4 (4-bit weights) vs int8 and fp32 on BANKING77, slm.runtime, "
        f"{args.threads} threads",
        "started": started, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(args.source), "data": {"source": str(args.data), "n_test": len(texts)},
        "settings": {**harness["settings"], "work": str(args.work)}, "harness_data": harness["data"],
        "machine": {**machine_info(packages=("slm", "onnxruntime", "onnx", "onnx-ir", "numpy", "tokenizers")),
                    "load_average_start": load_start},
        "ngram_baseline_test_accuracy": baseline.get("accuracy"), "runtime_floor_rss": floor,
        "variants": rows, "verdict": verdict(rows, floor.get("peak_rss_mb")),
        "sweep": None if args.no_sweep else sweep(bundles["fp32 ONNX"], args.work, texts, gold),
    }  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output / "int4.json", results)
    write_text_atomic(args.output / "int4.md", markdown(results))
    print(markdown(results))
    return 0


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown(results: dict) -> str:
    """The results as Markdown: the variants, the verdict, the recipe sweep, then how it was measured."""
    machine, v, rows = results["machine"], results["verdict"], results["variants"]
    cpu = machine["cpu"]
    lines = [
        f"# {results['title']}", "",
        f"{cpu['model']} ({cpu['logical_cpus']} logical CPUs; {', '.join(cpu['flags'])}); load average "
        f"{machine['load_average_start']} at start, {machine['load_average']} at end; {results['started']}. "
        f"Test set: {results['data']['n_test']} BANKING77 texts; TF-IDF n-gram baseline (recorded in the "
        f"manifest): {_pct(results['ngram_baseline_test_accuracy'])}.", "",
        "| variant | weights MB | × int8 | peak RSS MB | × int8 | p50 short ms | p50 64-tok ms | batch-32 texts/s "
        "| × int8 | test accuracy (transformer) | ensemble with TF-IDF | validation gate | 4-bit weights |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in rows:
        ratio, gate, shares = row["vs_int8"], row["gate"], row["precision_shares"]
        gate_text = "–" if not gate else f"{gate['drop_points']:+.2f} pts (gate {row['gate_points']:.1f})"
        lines.append(
            f"| {row['variant']} | {_num(row['size_mb'])} | {_times(ratio['size_mb'])} | {_num(row['peak_rss_mb'], 0)} "
            f"| {_times(ratio['peak_rss_mb'])} | {_num(row['p50_short_ms'], 2)} | {_num(row['p50_long_ms'], 2)} "
            f"| {_num(row['texts_per_s'])} | {_times(ratio['texts_per_s'])} | {_pct(row['test_accuracy'])} "
            f"| {_pct(row['test_accuracy_ensemble'])} | {gate_text} | {_pct(shares and shares['int4'])} |"
        )
    above = v["peak_rss_above_runtime_ratio"]
    lines += [
        "", f"**Target ({v['target']}): {'met' if v['met'] else 'missed'}.** The default int4 bundle's weights are "
        f"{_times(v['size_ratio'])} the int8 file, its peak RSS {_times(v['peak_rss_ratio'])} the int8 process's "
        f"({_times(above)} counting only the memory above a process that imports the runtime and loads no model, "
        f"{_num(results['runtime_floor_rss'].get('peak_rss_mb'), 0)} MB), at {v['accuracy_delta_vs_int8_points']:+.2f} "
        f"test points vs int8; on this CPU its batch-1 p50 is {_times(v['p50_ratio'])} int8's and its batch-32 "
        f"throughput {_times(v['texts_per_s_ratio'])} int8's: int4 buys size and a little memory, not speed.",
    ]  # fmt: skip
    if results.get("sweep"):
        lines += ["", "## int4 recipes: which weights go to 4 bits", "",
                  "| recipe | weights MB | 4-bit | int8 | validation drop | agreement with fp32 | passes gate 1.0 "
                  "| test accuracy |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in results["sweep"]:
            shares, gate = row["precision_shares"], row["validation"]
            lines.append(
                f"| {row['recipe']} | {_num(row['size_mb'])} | {_pct(shares['int4'])} | {_pct(shares['int8'])} "
                f"| {gate['drop_points']:+.2f} pts | {_pct(gate['agreement'])} | "
                f"{'yes' if row['passes_gate_1pt'] else 'no'} | {_pct(row['test_accuracy'])} |"
            )
    lines += _method(results)
    return "\n".join(lines) + "\n"


def _method(results: dict) -> list[str]:
    settings, data = results["settings"], results["harness_data"]
    versions = ", ".join(f"{k} {v}" for k, v in results["machine"]["versions"].items() if v)
    return [
        "", "## How this was measured", "",
        f"- Bundles: {results['source']} exported (`slm export`), then `slm compress --quantize int8` (default "
        "recipe) and `--quantize int4` (and `--block-size 128`), each gated on the bundle's own validation split.",
        f"- Each variant in its own worker process (slm.runtime, {settings['threads']} threads), "
        f"{settings['rounds']} round-robin rounds, order rotating. Latency: batch 1, {settings['latency_texts']} "
        f"texts per round (short texts average {data['short_tokens_mean']} tokens). Throughput: "
        f"{settings['throughput_texts']} texts in batches of {settings['batch_size']}, median over rounds.",
        "- Weights MB: the ONNX file the runtime loads. Peak RSS: VmHWM of the worker after loading the bundle "
        "and predicting every test text. Test accuracy: the transformer alone in that worker; the ensemble "
        "(transformer + TF-IDF n-grams, the bundle's weights) in the parent process.",
        "- Sweep: each recipe quantized from the same fp32 export with the gate wide open (so each is written); "
        "`passes gate 1.0` says whether slm's default gate would ship it.",
        f"- Versions: {versions}; Python {results['machine']['python']}.",
    ]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
