"""Distributed data-parallel fine-tuning (``slm train --nproc 2``) beside one process, same effective batch (issue #10).

    python bench/distributed.py            # BANKING77, 3 epochs each: ~12 min on 2 cores
    python bench/distributed.py --epochs 1 # shorter

Both runs train minilm-l6 on the official BANKING77 train split (10% carved out for validation,
seed 42) and are scored on the official test split: one process with 2 threads, and two DDP
processes (gloo) with 1 thread each. The global batch is 32 in both (each DDP rank takes 16 rows
of every batch), so steps and the learning-rate schedule are identical. No time budget: both run
the same epochs. Writes ``bench/results/distributed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slm.hardware import load_average

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"


def run(nproc: int, epochs: int, output: Path) -> dict:
    command = [sys.executable, "-m", "slm", "train", str(DATA / "train.csv"), "--test", str(DATA / "test.csv"),
               "--label-col", "category", "--epochs", str(epochs), "--method", "full", "--no-ensemble",
               "-o", str(output), "--quiet"]  # fmt: skip
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    else:
        command += ["--threads", "2"]
    load_before = load_average()
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    test = manifest["metrics"]["test"]
    return {
        "nproc": nproc,
        "accuracy": test["transformer"]["accuracy"],
        "macro_f1": test["transformer"]["macro_f1"],
        "ngram_baseline_accuracy": test["ngram_baseline"]["accuracy"],
        "wall_seconds": round(seconds, 1),
        "train_seconds": manifest["training"]["train_seconds"],
        "epochs_run": manifest["training"]["epochs_run"],
        "best_epoch": manifest["training"]["best_epoch"],
        "distributed": manifest["training"].get("distributed"),
        "threads_per_process": manifest["training"]["threads"],
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slm-ddp-bench-") as tmp:
        rows = [run(1, args.epochs, Path(tmp) / "one"), run(2, args.epochs, Path(tmp) / "two")]
    gap = (rows[1]["accuracy"] - rows[0]["accuracy"]) * 100
    result = {"dataset": "banking77", "epochs": args.epochs, "global_batch": 32, "runs": rows,
              "accuracy_gap_points": round(gap, 2), "target_points": 0.5, "met": abs(gap) <= 0.5}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Distributed data-parallel fine-tuning, BANKING77 (official test split)",
        "",
        f"minilm-l6, full fine-tuning, {args.epochs} epochs, global batch 32 in both runs, no time budget.",
        "",
        "| run | test accuracy | macro-F1 | n-gram baseline | training s | wall s | best epoch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = "1 process, 2 threads" if row["nproc"] == 1 else f"{row['nproc']} DDP processes (gloo), 1 thread each"
        lines.append(
            f"| {name} | {row['accuracy']:.2%} | {row['macro_f1']:.4f} | {row['ngram_baseline_accuracy']:.2%} | "
            f"{row['train_seconds']:.0f} | {row['wall_seconds']:.0f} | {row['best_epoch']} |"
        )
    lines += ["", f"Accuracy gap: {gap:+.2f} points (target: within 0.5: {'met' if result['met'] else 'MISSED'})."]
    (RESULTS / "distributed.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
