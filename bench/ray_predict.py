"""Batch prediction on Ray Data (``slm predict --engine ray``) beside one process of slm's runtime (issue #10).

    python bench/ray_predict.py              # 100,000 texts, 3 rounds: ~20 min on 2 cores
    python bench/ray_predict.py --rows 20000 # shorter

The texts are the 3,080 official BANKING77 test texts repeated to ``--rows`` rows, each with a unique
id, in one CSV. The bundle is the int8 BANKING77 bundle from ``bench/compression.py``
(``runs/bench/banking77-int8``). Three runs, each in its own process, one after another:

- **one process, 1 thread**: ``Bundle.predict_proba`` over every text, already in memory, with one
  ONNX Runtime thread, pinned to one core (``taskset``; round i uses core i mod cores) with tokenizer
  threads off (faster for short texts): the single-process runtime's per-core throughput, with no
  file reading or writing counted (the strictest baseline).
- **Ray Data**: the real ``slm predict BUNDLE texts.csv -o OUT --engine ray --threads 1`` on a local
  Ray cluster (one actor per core), end to end: reading, predicting, writing Parquet shards,
  counting rows, the manifest. Throughput is timed from the job's start (the manifest's ``seconds``);
  the wall time with Ray's start-up is shown too.
- **every core at once**: one such 1-thread process per core, pinned, each labelling its share of the
  texts, started together: the runtime with nothing between it and the model, under the same shared
  cache and memory as Ray's actors (shows what Ray itself costs).
- **local slm predict**: the same command without ``--engine ray`` (one process, every core), for context.

Per-core throughput = texts/s divided by the cores the run used. Writes ``bench/results/ray_predict.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slm.hardware import load_average

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
BUNDLE = ROOT.parent / "runs" / "bench" / "banking77-int8"
RESULTS = ROOT / "results"
TARGET = 0.9

ONE_PROCESS = """
import sys, time
import pandas as pd
from slm.runtime.bundle import Bundle
texts = pd.read_csv(sys.argv[2])["text"].tolist()
if len(sys.argv) > 3:  # "i/n": this process's share
    i, n = map(int, sys.argv[3].split("/"))
    texts = texts[i::n]
model = Bundle(sys.argv[1], threads=1)
model.predict_proba(texts[:256])  # load and warm up outside the timing
started = time.perf_counter()
model.predict_proba(texts, batch_size=64)
print(time.perf_counter() - started)
"""


def texts_csv(rows: int, folder: Path) -> Path:
    import pandas as pd

    texts = pd.read_csv(DATA / "test.csv")["text"].tolist()
    path = folder / "texts.csv"
    pd.DataFrame({"id": range(rows), "text": [texts[i % len(texts)] for i in range(rows)]}).to_csv(path, index=False)
    return path


def one_process(source: Path, rows: int, core: int) -> dict:
    load = load_average()
    # One core, really: pinned to one CPU, and no tokenizer threads on the others.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["taskset", "-c", str(core), sys.executable, "-c", ONE_PROCESS, str(BUNDLE), str(source)],
                          check=True, capture_output=True, text=True, env=env)  # fmt: skip
    seconds = float(done.stdout.strip().splitlines()[-1])
    return {"run": "one process, 1 thread, 1 core (runtime, texts in memory)", "cores": 1,
            "seconds": round(seconds, 2), "wall_seconds": None, "texts_per_second": round(rows / seconds, 1),
            "load_average_before": load}  # fmt: skip


def two_processes(source: Path, rows: int) -> dict:
    """The runtime on every core with nothing between it and the model: one 1-thread process per core,
    each labelling its share of the texts, all at once (same memory and cache contention as Ray's actors)."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    load = load_average()
    jobs = [subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", ONE_PROCESS, str(BUNDLE),
                              str(source), f"{core}/{cores}"], stdout=subprocess.PIPE, text=True, env=env)
            for core in range(cores)]  # fmt: skip
    seconds = max(float(job.communicate()[0].strip().splitlines()[-1]) for job in jobs)
    return {"run": f"{cores} processes at once, 1 thread and 1 core each (runtime, texts in memory)",
            "cores": cores, "seconds": round(seconds, 2), "wall_seconds": None,
            "texts_per_second": round(rows / seconds, 1), "load_average_before": load}  # fmt: skip


def ray_job(source: Path, rows: int, out: Path, cores: int) -> dict:
    load = load_average()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "slm", "predict", str(BUNDLE), str(source), "-o", str(out),
                    "--engine", "ray", "--threads", "1", "--quiet"], check=True)  # fmt: skip
    wall = time.perf_counter() - started
    manifest = json.loads((out / "_manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == rows, manifest["rows"]
    seconds = manifest["seconds"]
    return {"run": f"Ray Data, {manifest['engine']['actors']} actors x 1 thread (end to end)", "cores": cores,
            "seconds": seconds, "wall_seconds": round(wall, 2), "texts_per_second": round(rows / seconds, 1),
            "shards": len(manifest["shards"]), "engine": manifest["engine"], "load_average_before": load}  # fmt: skip


def local_cli(source: Path, rows: int, out: Path, cores: int) -> dict:
    load = load_average()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "slm", "predict", str(BUNDLE), str(source), "-o", str(out), "--quiet"],
                   check=True)  # fmt: skip
    wall = time.perf_counter() - started
    return {"run": "local slm predict, one process, every core (end to end)", "cores": cores,
            "seconds": round(wall, 2), "wall_seconds": round(wall, 2), "texts_per_second": round(rows / wall, 1),
            "load_average_before": load}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="baseline and Ray runs, interleaved")
    args = parser.parse_args()
    if not (BUNDLE / "manifest.json").is_file():
        sys.exit(f"{BUNDLE} is missing: run python bench/compression.py first")
    cores = os.cpu_count() or 1
    runs = []
    with tempfile.TemporaryDirectory(prefix="slm-ray-bench-") as tmp:
        folder = Path(tmp)
        source = texts_csv(args.rows, folder)
        for index in range(args.rounds):  # interleaved: a noisy minute hits both sides
            runs += [{"round": index + 1, **one_process(source, args.rows, index % cores)},
                     {"round": index + 1, **ray_job(source, args.rows, folder / "ray-out", cores)},
                     {"round": index + 1, **two_processes(source, args.rows)}]  # fmt: skip
        runs.append({"round": None, **local_cli(source, args.rows, folder / "local.parquet", cores)})
    for run in runs:
        run["per_core_texts_per_second"] = round(run["texts_per_second"] / run["cores"], 1)
    one = [r["per_core_texts_per_second"] for r in runs if r["run"].startswith("one process")]
    ray = [r["per_core_texts_per_second"] for r in runs if r["run"].startswith("Ray")]
    every = [r["per_core_texts_per_second"] for r in runs if "processes at once" in r["run"]]
    ratio = statistics.mean(ray) / statistics.mean(one)
    result = {"rows": args.rows, "bundle": str(BUNDLE.relative_to(ROOT.parent)), "cores": cores, "runs": runs,
              "round_ratios": [round(r / o, 3) for r, o in zip(ray, one, strict=True)],
              "ray_per_core_vs_every_core_at_once": round(statistics.mean(ray) / statistics.mean(every), 3),
              "ray_per_core_ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_predict.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Batch prediction on Ray Data, {args.rows:,} BANKING77 texts (int8 minilm-l6)",
        "",
        f"{cores} cores; each run in its own process, one after another, {args.rounds} interleaved rounds.",
        "",
        "| round | run | cores | seconds | wall s (with start-up) | texts/s | texts/s per core |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        wall = f"{run['wall_seconds']:.1f}" if run["wall_seconds"] is not None else "-"
        lines.append(f"| {run['round'] or '-'} | {run['run']} | {run['cores']} | {run['seconds']:.1f} | {wall} | "
                     f"{run['texts_per_second']:.0f} | {run['per_core_texts_per_second']:.0f} |")  # fmt: skip
    verdict = "met" if result["met"] else "MISSED"
    lines += ["", f"Ray per core / one process per core (means over the rounds): {ratio:.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}x' for r in result['round_ratios'])}; "
              f"target: at least {TARGET}x: {verdict}).",
              f"Ray per core / the runtime on every core at once: {result['ray_per_core_vs_every_core_at_once']:.2f}x "
              "(what Ray itself costs, with the cores' shared cache and memory the same on both sides)."]  # fmt: skip
    (RESULTS / "ray_predict.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
