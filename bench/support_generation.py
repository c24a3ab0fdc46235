"""Grounded generation of the support assistant: SmolLM2-135M rewriting retrieved answers (issue 6).

    python bench/support_generation.py              # 20 InsuranceQA test questions
    python bench/support_generation.py --n 50

Each test question's first correct answer (what the retriever returns when it is right) is rewritten
by ``slm.apps.support.generation.GroundedGenerator`` exactly as ``slm serve`` does for an assistant
built with ``--generator smollm2-135m``. Reports load time, new tokens/s on this CPU, seconds per
reply, and how many rewrites passed the grounding check (the others fall back to the answer).
Writes ``bench/results/support_generation.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support_data import insuranceqa  # noqa: E402

from slm.apps.support.generation import GroundedGenerator  # noqa: E402
from slm.hardware import load_average  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    answers, test = insuranceqa("test")
    started = time.perf_counter()
    generator = GroundedGenerator(threads=args.threads).load()
    load_seconds = time.perf_counter() - started
    rows = []
    for item in test[: args.n]:
        answer = answers[item["answers"][0]]
        rewrite = generator.rewrite(item["question"], answer)
        rows.append({"question": item["question"], "answer": answer, "reply": rewrite.text,
                     "grounded": rewrite.grounded, "new_tokens": rewrite.new_tokens,
                     "seconds": round(rewrite.seconds, 3)})  # fmt: skip
    tokens = sum(r["new_tokens"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    result = {
        "benchmark": "support_generation",
        "generator": generator.name,
        "threads": args.threads,
        "replies": len(rows),
        "load_seconds": round(load_seconds, 1),
        "tokens_per_second": round(tokens / seconds, 1),
        "seconds_per_reply_median": round(float(np.median([r["seconds"] for r in rows])), 2),
        "grounded_share": round(float(np.mean([r["grounded"] for r in rows])), 3),
        "load_average": load_average(),
        "examples": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "support_generation.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "# Grounded generation (support assistant, SmolLM2-135M-Instruct Q4_1 via transformers)",
        "",
        f"{len(rows)} InsuranceQA test questions, greedy decoding restricted to the answer's tokens, {args.threads} "
        "threads.",
        "",
        "| load (s) | new tokens/s | s per reply (median) | rewrites kept (passed the grounding check) |",
        "|---:|---:|---:|---:|",
        f"| {result['load_seconds']} | {result['tokens_per_second']} | {result['seconds_per_reply_median']} | "
        f"{result['grounded_share']:.0%} |",
        "",
        "Examples that passed:",
        "",
    ]
    for r in [r for r in rows if r["grounded"]][:3]:
        lines += [f"- **{r['question']}** → {r['reply']}"]
    lines.append("")
    (RESULTS / "support_generation.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
