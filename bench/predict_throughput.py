"""``slm predict`` end to end against the bare runtime, on 100,000 BANKING77 texts (issue 27, acceptance 2).

    python bench/predict_throughput.py --bundle B                    # 100,000 rows, 3 interleaved rounds
    python bench/predict_throughput.py --bundle B --rows 20000 --rounds 2            # a quicker look
    python bench/predict_throughput.py --bundle B --before-src /tmp/slm-main/src     # and another checkout's CLI

``B`` is an exported (ONNX) bundle, by default ``runs/bench/banking77-int8``; it answers with its default
component (the ensemble for BANKING77). The input is a ``text,category`` CSV of the 13,083 BANKING77 texts
(train + test, ``../shared/data``, never copied here) repeated to ``--rows`` rows, written to a temporary folder.
Each round runs, each in its own fresh process and in a rotating order:

- **bare**: ``slm.load(B).predict_proba(texts, batch_size=64)`` over the texts already read into memory;
  only that call is timed (not the interpreter start, the import, the bundle's load or reading the CSV);
- **cli-csv**: ``python -m slm predict B in.csv -o out.csv -q``, timed from outside, whole process
  (interpreter start, imports, the input's check pass, the bundle's load, reading, predicting and writing);
- **cli-jsonl**: the same with ``-o out.jsonl``;
- **before-csv** (with ``--before-src``): cli-csv with another checkout's code on ``PYTHONPATH``.

Texts/s are rows over seconds; the ratio of each CLI run to the bare runtime is taken within a round, then
the median over rounds (target: at least 0.95); the same with CPU time (user + system, all threads) beside
it. The processes run with the environment as given: the CLI sets its own tokenizer threading
(``slm.cli._util``), the bare runtime gets the library's.
Writes ``bench/results/predict_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import write_results

from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
INT8 = ROOT.parent / "runs" / "bench" / "banking77-int8"
TARGET = 0.95
BATCH = 64  # slm predict's default --batch-size

# The bare runtime, in its own process: texts read first, then only predict_proba timed.
BARE = """
import csv, json, sys, time
import slm
texts = [row["text"] for row in csv.DictReader(open(sys.argv[2], encoding="utf-8", newline=""))]
model = slm.load(sys.argv[1])
started, cpu = time.perf_counter(), time.process_time()
proba = model.predict_proba(texts, batch_size=int(sys.argv[3]))
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": int(proba.shape[0])}))
"""


def input_csv(rows: int, folder: Path) -> Path:
    import pandas as pd

    frame = pd.concat([pd.read_csv(DATA / f"{split}.csv") for split in ("train", "test")], ignore_index=True)
    picked = frame.iloc[[i % len(frame) for i in range(rows)]]
    path = folder / f"banking77-{rows}.csv"
    picked[["text", "category"]].to_csv(path, index=False)
    return path


def run_case(case: str, bundle: Path, source: Path, folder: Path, before_src: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if case == "bare":
        cmd = [sys.executable, "-c", BARE, str(bundle), str(source), str(BATCH)]
    else:
        suffix = "jsonl" if case == "cli-jsonl" else "csv"
        cmd = [sys.executable, "-m", "slm", "predict", str(bundle), str(source), "-o", str(folder / f"out.{suffix}"),
               "-q", "--batch-size", str(BATCH)]  # fmt: skip
        if case == "before-csv":
            env["PYTHONPATH"] = str(before_src)
    load = load_average()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"{case} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    if case == "bare":
        inner = json.loads(done.stdout.strip().splitlines()[-1])
        seconds, cpu = inner["seconds"], inner["cpu_seconds"]
    else:
        seconds = wall
    return {"case": case, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "process_seconds": round(wall, 2),
            "load_before": load, "load_after": load_average()}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    bundle = Path(args.bundle) if args.bundle else INT8
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {bundle}: pass --bundle (an exported int8 BANKING77 bundle)")
    cases = ["bare", "cli-csv", "cli-jsonl", *(["before-csv"] if args.before_src else [])]
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        source = input_csv(args.rows, folder)
        for r in range(args.rounds):
            order = cases[r % len(cases) :] + cases[: r % len(cases)]  # rotate: no case always runs first
            measured = []
            for case in order:
                result = run_case(case, bundle, source, folder, args.before_src)
                result["texts_per_s"] = round(args.rows / result["seconds"], 1)
                result["texts_per_cpu_s"] = round(args.rows / result["cpu_seconds"], 1)
                print(f"round {r + 1}: {case:10s} {result['seconds']:8.1f} s  {result['texts_per_s']:7.1f} texts/s  "
                      f"load {result['load_before']}", flush=True)  # fmt: skip
                measured.append(result)
            rounds.append(measured)
    summary: dict[str, Any] = {}
    for case in cases:
        rates = [m["texts_per_s"] for rnd in rounds for m in rnd if m["case"] == case]
        summary[case] = {"texts_per_s_median": round(statistics.median(rates), 1), "texts_per_s": rates}
    for case in cases[1:]:
        ratios = []
        for rnd in rounds:
            by = {m["case"]: m for m in rnd}
            ratios.append(round(by[case]["texts_per_s"] / by["bare"]["texts_per_s"], 3))
        summary[case]["ratio_to_bare"] = ratios
        summary[case]["ratio_to_bare_median"] = round(statistics.median(ratios), 3)
        summary[case]["target_met"] = summary[case]["ratio_to_bare_median"] >= TARGET
        cpu_ratios = []
        for rnd in rounds:
            by = {m["case"]: m for m in rnd}
            cpu_ratios.append(round(by[case]["texts_per_cpu_s"] / by["bare"]["texts_per_cpu_s"], 3))
        summary[case]["cpu_ratio_to_bare"] = cpu_ratios
        summary[case]["cpu_ratio_to_bare_median"] = round(statistics.median(cpu_ratios), 3)
    import slm

    model = slm.load(bundle)
    return {
        "bundle": str(bundle),
        "component": model.default_component,
        "labels": len(model.labels),
        "rows": args.rows,
        "batch_size": BATCH,
        "rounds": rounds,
        "summary": summary,
        "target": TARGET,
        "before_src": args.before_src,
        "machine": machine_info(["onnxruntime", "tokenizers", "numpy", "pyarrow"]),
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    names = {"bare": "bare runtime: `predict_proba` on texts in memory", "cli-csv": "`slm predict` → CSV",
             "cli-jsonl": "`slm predict` → JSONL",
             "before-csv": "`slm predict` → CSV, code before (--before-src)"}  # fmt: skip
    lines = [
        "# `slm predict` against the bare runtime (issue 27, acceptance 2)",
        "",
        f"{result['rows']:,} BANKING77 texts (train + test repeated), bundle `{result['bundle']}` "
        f"({result['labels']} labels, default component: {result['component']}), batch size "
        f"{result['batch_size']}; {len(result['rounds'])} rounds, each case in its own process, order rotated "
        "each round. The CLI is timed as a whole process (start, imports, the input's check pass, the bundle's "
        "load, reading and writing); the bare runtime's `predict_proba` call alone.",
        "",
        "| case | texts/s (median) | texts/s per round | ratio to bare (median) | per round | target ≥ 0.95 "
        "| CPU-time ratio (median) | per round |",
        "|---|---:|---|---:|---|---|---:|---|",
    ]
    for case, entry in s.items():
        ratio = entry.get("ratio_to_bare_median")
        met = "" if ratio is None else ("met" if entry["target_met"] else "MISSED")
        lines.append(
            f"| {names[case]} | {entry['texts_per_s_median']:.0f} | "
            f"{', '.join(f'{v:.0f}' for v in entry['texts_per_s'])} | {'' if ratio is None else f'{ratio:.3f}'} | "
            f"{', '.join(f'{v:.3f}' for v in entry.get('ratio_to_bare', []))} | {met} | "
            f"{entry.get('cpu_ratio_to_bare_median', '')} | "
            f"{', '.join(f'{v:.3f}' for v in entry.get('cpu_ratio_to_bare', []))} |"
        )
    m = result["machine"]
    loads = [r["load_before"] for rnd in result["rounds"] for r in rnd]
    lines += [
        "",
        f"Machine: {m['cpu']['model']}, {m['cpu_count']} logical CPUs, Python {m['python']}, onnxruntime "
        f"{m['versions'].get('onnxruntime')}, tokenizers {m['versions'].get('tokenizers')}. Load average before "
        f"each run (1, 5, 15 min): {', '.join(str(x) for x in loads)}: the machine was shared, so only ratios "
        "within a round are compared. The CPU-time ratio compares texts per CPU-second (user + system, every "
        "thread: the CLI's whole process, the bare runtime's call alone), which a busy neighbour disturbs less "
        "than wall time.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="exported bundle (default runs/bench/banking77-int8)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-src", help="another checkout's src folder: its slm predict is measured too")
    parser.add_argument("--tmp", help="folder for the temporary input and outputs (default: the system's)")
    parser.add_argument("--out", default=str(RESULTS / "predict_throughput"), help="results path without suffix")
    args = parser.parse_args()
    result = run(args)
    write_results(Path(args.out), result, markdown(result))


if __name__ == "__main__":
    main()
