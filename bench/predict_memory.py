"""Peak memory of ``slm predict`` against the number of rows and the length of one text (issue 21, acceptance 3).

    python bench/predict_memory.py                                   # 1,000 and 200,000 rows, one 200 MB text
    python bench/predict_memory.py --rows 1000,20000 --text-mb 20    # shorter
    python bench/predict_memory.py --src /tmp/slm-base/src --label before --bundle B   # another checkout's code

Each case runs the real ``slm predict BUNDLE INPUT -o OUT.csv -q`` as its own process, under a small watcher
process that polls its VmHWM in /proc every 20 ms and takes ``ru_maxrss`` from ``wait4`` when it exits
(under the watcher, not under this script: Linux starts a child's ``ru_maxrss`` at its parent's memory).
A process above ``--cap-mb`` is killed, so the code before the fix cannot exhaust a shared machine; its
peak is then reported as "> cap".

Inputs (``id,text`` CSV files): the 13,083 BANKING77 texts (train + test) repeated to each row count, and
one row holding ``--text-mb`` MiB of those texts joined on one line; plus one text of 7 MB, under the
line limit, which the model reads cut (``slm.bundle.textlimit``). The bundle is ``runs/bench/banking77-int8``
if it exists, else ``--bundle``, else a small 77-intent BANKING77 bundle trained and exported here
(``runs/bench/predict-memory``). Results merge by ``--label`` into ``bench/results/predict_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from slm.benchmark.peak import run_measured
from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
INT8 = ROOT.parent / "runs" / "bench" / "banking77-int8"
BUILT = ROOT.parent / "runs" / "bench" / "predict-memory"
ROWS_TARGET_MB = 100  # acceptance 3: 1,000 vs 200,000 rows differ by at most this
TEXT_TARGET_MB = 1024  # and one 200 MB text is handled under 1 GB


def texts() -> list[str]:
    import pandas as pd

    frames = [pd.read_csv(DATA / f"{split}.csv") for split in ("train", "test")]
    return [t.replace("\n", " ").replace("\r", " ") for t in pd.concat(frames)["text"]]


def rows_csv(pool: list[str], rows: int, folder: Path) -> Path:
    import pandas as pd

    path = folder / f"rows-{rows}.csv"
    pd.DataFrame({"id": range(rows), "text": [pool[i % len(pool)] for i in range(rows)]}).to_csv(path, index=False)
    return path


def one_text_csv(pool: list[str], mb: float, folder: Path) -> Path:
    """One ``id,text`` row whose text is ``mb`` MiB of BANKING77 texts on one line, written in pieces."""
    path = folder / f"one-text-{mb:g}mb.csv"
    size, i = int(mb * 1024 * 1024), 0
    with path.open("w", encoding="utf-8") as handle:
        handle.write('id,text\n1,"')
        written = 0
        while written < size:
            piece = (" ".join(pool[(i + k) % len(pool)] for k in range(1000)) + " ").replace('"', '""')
            handle.write(piece[: size - written])
            written += len(piece[: size - written])
            i += 1000
        handle.write('"\n')
    return path


def bundle(chosen: str | None) -> Path:
    if chosen:
        return Path(chosen)
    if INT8.is_dir():
        return INT8
    if not (BUILT / "onnx").is_dir():
        import pandas as pd

        import slm
        from slm.compression.export import export_bundle
        from slm.training.config import TrainConfig

        BUILT.mkdir(parents=True, exist_ok=True)
        train = pd.read_csv(DATA / "train.csv").groupby("category").head(12)
        train.to_csv(BUILT / "train.csv", index=False)
        slm.train(BUILT / "train.csv", output=BUILT / "model", show_progress=False,
                  config=TrainConfig(epochs=1, batch_size=16, max_length=64, seed=7))  # fmt: skip
        export_bundle(BUILT / "model", BUILT / "onnx")
    return BUILT / "onnx"


def measure(model: Path, source: Path, out: Path, src: str | None, cap_mb: float) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if src:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, "-m", "slm", "predict", str(model), str(source), "-o", str(out), "-q"]
    load = load_average()
    started = time.perf_counter()
    done = run_measured(cmd, cap_mb=cap_mb, env=env, timeout=24 * 3600)
    seconds = time.perf_counter() - started
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return {"peak_mb": round(done.peak_mb, 1), "killed_above_cap": done.killed,
            "exit_code": done.returncode, "seconds": round(seconds, 1), "load_before": load,
            "error": lines[-1][:300] if lines else None}  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    pool = texts()
    model = bundle(args.bundle)
    cases = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        inputs = [(f"{rows:,} rows", rows_csv(pool, rows, folder), rows) for rows in args.rows]
        inputs += [(f"one {mb:g} MB text", one_text_csv(pool, mb, folder), 1) for mb in (7, args.text_mb)]
        for name, source, rows in inputs:
            print(f"{args.label}: {name} …", flush=True)
            case = {"case": name, "rows": rows, "input_mb": round(source.stat().st_size / 2**20, 1)}
            case |= measure(model, source, folder / "out.csv", args.src, args.cap_mb)
            print(f"  peak {case['peak_mb']} MB{' (killed at the cap)' if case['killed_above_cap'] else ''}, "
                  f"exit {case['exit_code']}, {case['seconds']} s", flush=True)  # fmt: skip
            cases.append(case)
            source.unlink()
    return {"label": args.label, "code": args.src or "this checkout", "bundle": str(model),
            "cap_mb": args.cap_mb, "cores": machine_info()["cpu_count"], "cases": cases}  # fmt: skip


def verdict(entry: dict) -> dict:
    by_rows = {c["rows"]: c for c in entry["cases"] if c["case"].endswith("rows")}
    texts = [c for c in entry["cases"] if c["case"].startswith("one ")]
    fewest, most = by_rows[min(by_rows)], by_rows[max(by_rows)]
    growth = None if most["killed_above_cap"] else round(most["peak_mb"] - fewest["peak_mb"], 1)
    longest = texts[-1]
    return {
        "rows_growth_mb": growth,
        "rows_target_met": growth is not None and growth <= ROWS_TARGET_MB,
        "longest_text_peak_mb": longest["peak_mb"],
        "longest_text_target_met": not longest["killed_above_cap"]
        and longest["peak_mb"] <= TEXT_TARGET_MB
        and longest["exit_code"] in (0, 2),
    }


def markdown(results: dict) -> str:
    lines = ["# Peak memory of `slm predict` (issue 21, acceptance 3)", "",
             "`python bench/predict_memory.py`: peak RSS of one `slm predict BUNDLE INPUT -o OUT.csv -q` process per "
             "case (VmHWM polled from /proc and `ru_maxrss` at exit). Inputs: BANKING77 texts repeated to N rows; "
             "one row holding one text of the given size. Exit 2 = refused with a one-line error.", ""]  # fmt: skip
    for label, entry in results.items():
        check = entry["verdict"]
        lines += [
            f"## {label}: {entry['code']}",
            "",
            f"Bundle `{entry['bundle']}`, {entry['cores']} cores, processes killed above {entry['cap_mb']:,.0f} MB.",
            "",
            "| case | input MB | peak RSS MB | exit | seconds | load before |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for c in entry["cases"]:
            peak = f"> {entry['cap_mb']:,.0f} (killed)" if c["killed_above_cap"] else f"{c['peak_mb']:,.1f}"
            lines.append(f"| {c['case']} | {c['input_mb']:,.1f} | {peak} | {c['exit_code']} | {c['seconds']} | "
                         f"{c['load_before']} |")  # fmt: skip
        growth = check["rows_growth_mb"]
        lines += ["", f"- rows: peak grows {'more than the cap allows' if growth is None else f'{growth} MB'} from "
                  f"the fewest to the most rows (target ≤ {ROWS_TARGET_MB} MB): "
                  f"{'met' if check['rows_target_met'] else 'MISSED'}",
                  f"- longest text: peak {check['longest_text_peak_mb']} MB (target ≤ {TEXT_TARGET_MB} MB, "
                  f"predicted or refused): {'met' if check['longest_text_target_met'] else 'MISSED'}"]  # fmt: skip
        errors = {c["error"] for c in entry["cases"] if c["error"]}
        lines += [f"- error line: `{e}`" for e in sorted(errors)] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 200_000])
    parser.add_argument("--text-mb", type=float, default=200.0)
    parser.add_argument("--bundle", help="an exported bundle (default: runs/bench/banking77-int8, else built)")
    parser.add_argument("--src", help="PYTHONPATH for the slm under test, e.g. /tmp/slm-base/src")
    parser.add_argument("--label", default="after")
    parser.add_argument("--cap-mb", type=float, default=6000)
    parser.add_argument("--tmp", help="folder for the inputs (default: the system's temporary folder)")
    args = parser.parse_args()
    entry = run(args)
    entry["verdict"] = verdict(entry)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "predict_memory.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.label] = entry
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "predict_memory.md").write_text(markdown(results))
    print(markdown({args.label: entry}))


if __name__ == "__main__":
    main()
