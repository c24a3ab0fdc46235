"""``slm tune`` with a 20-minute budget on the finance-tweets sentiment data, against the default.

    python bench/tune.py                  # runs the search (20 min), then writes the results
    python bench/tune.py --report-only    # only re-renders the results of the last search

The search runs through the public API (the same as ``slm tune DATA -o runs/bench/tune-fin_tweets
--budget 20m --text-col text --label-col label``) on slm's default split of
``../shared/data/fin_tweets_sentiment/sent_train.csv`` (10% validation, 10% test held out, seed 42).
Trial 0 is the default configuration, so whether searching beat it is measured in the same run on
the same validation split. Copies the trials table and writes ``bench/results/tune_fin_tweets.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from slm.hardware import load_average

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "fin_tweets_sentiment" / "sent_train.csv"
STUDY = ROOT.parent / "runs" / "bench" / "tune-fin_tweets"
RESULTS = ROOT / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="20m")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"error: the shared data folder {DATA.parent} is absent", file=sys.stderr)
        return 2
    wall = None
    load_before = load_average()
    if not args.report_only:
        import slm

        if STUDY.exists():
            shutil.rmtree(STUDY)  # a fresh study: continuing one would add to its budget
        started = time.perf_counter()
        slm.tune(DATA, output=STUDY, budget=args.budget, text_col="text", label_col="label", show_progress=False)
        wall = time.perf_counter() - started
    previous = RESULTS / "tune_fin_tweets.json"
    if args.report_only and previous.is_file():  # keep the measured wall time of the search
        minutes = json.loads(previous.read_text()).get("wall_minutes")
        wall = None if minutes is None else minutes * 60
    summary = json.loads((STUDY / "summary.json").read_text())
    trials = json.loads((STUDY / "trials.json").read_text())
    best, default = summary["best_val_macro_f1"], summary["default_val_macro_f1"]
    result = {
        "data": str(DATA.relative_to(ROOT.parent.parent)),
        "budget": args.budget,
        "wall_minutes": None if wall is None else round(wall / 60, 2),
        "best_val_macro_f1": best,
        "default_val_macro_f1": default,
        "gain_points": None if default is None else round((best - default) * 100, 2),
        "beats_default": default is not None and best > default,
        "best_config": summary["best_config"],
        "trials": trials,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tune_fin_tweets.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# slm tune on finance tweets (budget {args.budget}, validation macro-F1)",
        "",
        f"- default configuration (trial 0): **{default}**",
        f"- best found: **{best}** ({result['gain_points']:+.2f} points), method `{summary['best_config']['method']}`",
        f"- trials: {len(trials)} ({sum(t['state'] == 'pruned' for t in trials)} pruned)"
        + ("" if wall is None else f", search wall time {wall / 60:.1f} min")
        + f"; trials trained on {summary['train_examples']:,} of {summary['train_examples_total']:,} training texts",
        "",
        (STUDY / "trials.md").read_text(),
    ]
    (RESULTS / "tune_fin_tweets.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
