"""Differentially private training against non-private training, same split: BANKING77 and finance tweets.

    python bench/dp.py                              # both datasets, epsilon 1, 3 and 8
    python bench/dp.py --datasets banking77 --eps 8 --keep /work/artifacts

For each dataset, on one split (BANKING77: the official test file, 10% of the train file for validation, seed
42; finance tweets: 10% test, 10% validation of sent_train.csv, seed 42), trains

- ``default``: slm's default training (full fine-tuning of minilm-l6 plus the n-gram ensemble), not private;
- ``head``: the DP default recipe's model without noise (``--method head``: a linear head on the frozen
  encoder's unit-length embeddings, fitted exactly by logistic regression), not private;
- ``dp-eps{E}``: ``--dp-epsilon E`` (delta = 1/n training rows) with the default DP recipe,

each with a 20-minute training budget, and records test accuracy and macro-F1 of the shipped model beside the
TF-IDF n-gram baseline (scored on the same split; not private), the spent (epsilon, delta) and the training
minutes. Results are written after every run to ``bench/results/dp.{json,md}`` (runs already there are kept
unless ``--fresh``). ``--keep DIR`` keeps BANKING77's ``dp-eps8`` bundle as DIR/dp8, the non-private default
as DIR/nondp and the head model as DIR/nondp-head, with the split's files in DIR/dp-split/.
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
SHARED = ROOT.parent.parent / "shared" / "data"
RESULTS = ROOT / "results"
RUNS = ROOT.parent / "runs" / "bench-dp"
DATASETS = {
    "banking77": {
        "file": "banking77/train.csv",
        "test": "banking77/test.csv",
        "text": "text",
        "label": "category",
    },
    "fin_tweets": {"file": "fin_tweets_sentiment/sent_train.csv", "test": None, "text": "text", "label": "label"},
}
BUDGET_MINUTES = 20.0
# How the default DP recipe was chosen (measured before this bench, same machine, load 7-9 of 2 cores).
NOTES = [
    "Recipe choice (pilots at epsilon 8, delta 1/n; the default recipe is the one that fits the budget):",
    "",
    "- head (linear head on frozen minilm-l6 embeddings), whole BANKING77 split: 88.3% test accuracy with Adam "
    "lr 0.1, 88.5% with SGD lr 1 (60 epochs of 1,024-row Poisson batches, noise multiplier 1.58, 540 steps); "
    "2.5 min of DP-SGD under load 7 after one embedding pass.",
    "- lora (r 8 on every linear layer) and full (every weight but the embeddings): on a 2,250-row BANKING77 "
    "sample, 3 minutes gave 6 noisy steps of 64 rows (about 2 examples/s with per-example gradients) and 3.8% "
    "(lora) / 2.6% (full) test accuracy on 800 test texts; an earlier lora run with 256-row batches did not "
    "finish one epoch of 2,250 rows in 7 minutes. A whole BANKING77 epoch (9,002 rows) would take over an hour, "
    "so neither fits the 20-minute budget on this machine; on a GPU they may well win.",
]
# Issue 24, acceptance 3: within 5 points of non-private training at epsilon 8 on BANKING77, in 20 minutes.
TARGET_GAP_POINTS = 5.0
TARGET_EPSILON = 8.0


def _config(run: str):
    from slm.training.config import TrainConfig

    common = {"base_model": "minilm-l6", "max_minutes": BUDGET_MINUTES}
    if run == "default":
        return TrainConfig(**common)
    if run == "head":
        return TrainConfig(method="head", **common)
    return TrainConfig(dp_epsilon=float(run.removeprefix("dp-eps")), **common)


def _record(name: str, run: str, bundle, seconds: float) -> dict:
    manifest = bundle.manifest
    metrics = manifest.metrics["test"]
    shipped = {"ensemble": "ensemble", "transformer": "transformer"}[manifest.default_component]
    privacy = manifest.privacy.to_json() if manifest.privacy is not None else None
    training = manifest.training or {}
    return {
        "dataset": name,
        "run": run,
        "shipped": shipped,
        "accuracy": round(metrics[shipped]["accuracy"], 4),
        "macro_f1": round(metrics[shipped]["macro_f1"], 4),
        "transformer_accuracy": round(metrics["transformer"]["accuracy"], 4),
        "ngram_baseline_accuracy": round(metrics["ngram_baseline"]["accuracy"], 4),
        "ngram_baseline_macro_f1": round(metrics["ngram_baseline"]["macro_f1"], 4),
        "train_minutes": round(training.get("wall_time_s", 0.0) / 60, 2),
        "run_minutes": round(seconds / 60, 2),
        "method": training.get("method"),
        "epochs_run": training.get("epochs_run"),
        "stopped_by_budget": training.get("stopped_by_budget"),
        "n_train": (manifest.data or {}).get("n_train"),
        "privacy": privacy,
        "load_average": load_average(),
    }


def _train(name: str, run: str) -> dict:
    import slm

    spec = DATASETS[name]
    test = SHARED / spec["test"] if spec["test"] else None
    out = RUNS / name / run
    started = time.perf_counter()
    bundle = slm.train(
        SHARED / spec["file"], output=out, test=test, text_col=spec["text"], label_col=spec["label"],
        val_size=0.1, test_size=0.1, config=_config(run), show_progress=False, force=True,
    )  # fmt: skip
    assert bundle is not None
    return _record(name, run, bundle, time.perf_counter() - started)


def _keep(keep: Path) -> None:
    """BANKING77's eps=8 and non-private bundles, and the split they were trained on, for the privacy audit."""
    from slm.pipeline import DataSource, prepare_splits

    spec = DATASETS["banking77"]
    for run, target in (("dp-eps8", "dp8"), ("default", "nondp"), ("head", "nondp-head")):
        source = RUNS / "banking77" / run
        if (source / "manifest.json").is_file():
            shutil.rmtree(keep / target, ignore_errors=True)
            shutil.copytree(source, keep / target)
    splits = prepare_splits(
        DataSource(SHARED / spec["file"], spec["text"], spec["label"], None, None),
        validation=None, test=SHARED / spec["test"], val_size=0.1, test_size=0.1, seed=42,
    )  # fmt: skip
    folder = keep / "dp-split"
    folder.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    for part in ("train", "validation", "test"):
        ds = getattr(splits, part)
        pd.DataFrame({"text": ds.texts, "category": ds.labels}).to_csv(folder / f"{part}.csv", index=False)


def _gaps(rows: list[dict]) -> None:
    """Points below the non-private runs of the same dataset (default training and the head recipe)."""
    for row in rows:
        for ref in ("default", "head"):
            other = next((r for r in rows if r["dataset"] == row["dataset"] and r["run"] == ref), None)
            row[f"gap_vs_{ref}_points"] = (
                None if other is None else round((other["accuracy"] - row["accuracy"]) * 100, 2)
            )


def _checks(rows: list[dict]) -> dict:
    dp8 = next((r for r in rows if r["dataset"] == "banking77" and r["run"] == "dp-eps8"), None)
    if dp8 is None:
        return {}
    out = {}
    for ref in ("default", "head"):
        gap = dp8.get(f"gap_vs_{ref}_points")
        out[f"banking77_eps8_gap_vs_{ref}"] = {
            "target": TARGET_GAP_POINTS,
            "measured": gap,
            "met": gap is not None and gap <= TARGET_GAP_POINTS,
        }
    out["banking77_eps8_train_minutes"] = {
        "target": BUDGET_MINUTES,
        "measured": dp8["train_minutes"],
        "met": dp8["train_minutes"] <= BUDGET_MINUTES,
    }
    return out


def _markdown(result: dict) -> str:
    lines = [
        "# Differentially private training vs non-private (minilm-l6, same split, 2 CPU cores)",
        "",
        "`python bench/dp.py`. delta = 1/n training rows; accuracy and macro-F1 on the test split of the shipped",
        "model; the TF-IDF n-gram baseline is scored on the same split (not private, not shipped by DP runs).",
        "",
        "Gaps are points of test accuracy below the non-private run's *shipped* model (the ensemble, for the",
        "non-private runs); the transformer-alone column shows the model without the n-gram ensemble.",
        "",
        "| dataset | run | epsilon (target / spent) | delta | noise | steps | accuracy | macro-F1 | transformer "
        "alone | TF-IDF baseline acc | gap vs default (pts) | gap vs head (pts) | train min | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        p = r["privacy"] or {}
        eps = f"{p['epsilon_target']:g} / {p['epsilon_spent']:.2f}" if p else "∞ (not private)"
        delta = f"{p['delta']:.2g}" if p else "—"
        noise = f"{p['noise_multiplier']:.3g}" if p else "—"
        steps = str(p.get("steps", "—")) if p else "—"
        gd, gh = r.get("gap_vs_default_points"), r.get("gap_vs_head_points")
        lines.append(
            f"| {r['dataset']} | {r['run']} ({r['method']}, shipped {r['shipped']}) | {eps} | {delta} | {noise} "
            f"| {steps} | {r['accuracy']:.2%} | {r['macro_f1']:.2%} | {r['transformer_accuracy']:.2%} "
            f"| {r['ngram_baseline_accuracy']:.2%} "
            f"| {'—' if gd is None else gd} | {'—' if gh is None else gh} | {r['train_minutes']} "
            f"| {r['load_average'][0] if r['load_average'] else '—'} |"
        )
    lines += ["", "Targets (issue 24, acceptance 3):", ""]
    for name, check in result["checks"].items():
        verdict = "met" if check["met"] else "MISSED"
        lines.append(f"- {name}: target {check['target']}, measured {check['measured']} → {verdict}")
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


def _write(result: dict) -> None:
    _gaps(result["runs"])
    result["checks"] = _checks(result["runs"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dp.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "dp.md").write_text(_markdown(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="banking77,fin_tweets")
    parser.add_argument("--eps", default="8,3,1", help="epsilons to train at, comma-separated")
    parser.add_argument("--runs", default="dp,head,default", help="which of dp, head, default to train")
    parser.add_argument("--keep", type=Path, default=None, help="copy BANKING77's eps=8 and non-private bundles here")
    parser.add_argument("--fresh", action="store_true", help="forget the runs already in bench/results/dp.json")
    args = parser.parse_args(argv)
    if not SHARED.exists():
        print(f"error: the shared data folder {SHARED} is absent", file=sys.stderr)
        return 2
    from slm.hardware import machine_info

    previous = RESULTS / "dp.json"
    result = json.loads(previous.read_text()) if previous.is_file() and not args.fresh else {"runs": []}
    result["machine"] = machine_info(("torch", "transformers", "opacus"))
    kinds = args.runs.split(",")
    for name in args.datasets.split(","):
        # The most telling runs first (the first epsilon, then its non-private twin), so that a bench cut short
        # still compares something; slm's default training, the slowest, last.
        private = [f"dp-eps{float(e):g}" for e in args.eps.split(",")] if "dp" in kinds else []
        plan = private[:1] + (["head"] if "head" in kinds else []) + private[1:]
        plan += ["default"] if "default" in kinds else []
        for run in plan:
            print(f"{name}: training {run}", file=sys.stderr, flush=True)
            row = _train(name, run)
            result["runs"] = [r for r in result["runs"] if (r["dataset"], r["run"]) != (name, run)] + [row]
            _write(result)
            print(json.dumps(row), flush=True)
        if name == "banking77" and args.keep is not None:
            _keep(args.keep)
    _write(result)
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
