"""Accuracy against labelled examples per class on BANKING77, per training method, with the baseline.

    python bench/learning_curves.py                                   # everything below (hours on 2 cores)
    python bench/learning_curves.py --sizes 8,16 --draws 3 --methods fewshot
    python bench/learning_curves.py --sizes 8 --draws 3 --methods fewshot --self-training
    python bench/learning_curves.py --sizes 8 --draws 3 --methods auto --self-training --rounds 1
    python bench/learning_curves.py --report                          # only rebuild the table and plot

Each run draws K labelled examples per class from the official train split (seeded draw), trains a
bundle with ``slm.train`` (validation carved out of those K: 1 per class at K=8, 10% above), and
scores it on the full official test split (3,080 texts). The TF-IDF (word + character n-grams) +
logistic-regression baseline is trained by the same call on the same split, so every row carries
its baseline. With ``--self-training`` the rest of the train split is given without labels
(``--rounds``: pseudo-labelling rounds); a self-training run is compared with the labelled-only run of
the same draw and method, or of the method ``auto`` chose for the labelled texts (round 0).

Runs accumulate in ``bench/results/learning_curves.json`` (keyed by size, draw, method), so the
script can be run in pieces; each call refreshes ``learning_curves.md`` and ``learning_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
RESULTS_FILE = RESULTS / "learning_curves.json"
METHODS = ("fewshot", "head", "full", "lora")
# Acceptance targets (issue #4): mean test accuracy over 3 draws, and minutes per training run.
TARGETS = {8: 0.80, 16: 0.86}
MAX_RUN_MINUTES = 10.0
# Fine-tuning settings per method: more epochs for the small sizes (few steps per epoch); on the
# whole train split the settings of bench/classification.py (3 epochs), LoRA one more.
METHOD_CONFIG = {
    "auto": {},
    "fewshot": {},
    "head": {},
    "full": {"epochs": 10, "patience": 3},
    "lora": {"epochs": 10, "patience": 3},
}
FULL_DATA_CONFIG = {"full": {"epochs": 3}, "lora": {"epochs": 4}}


def draw(train: pd.DataFrame, k: int | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """K examples per class (all when None) and the rest of the train split."""
    if k is None:
        return train, train.iloc[:0]
    picked = pd.concat([group.sample(k, random_state=seed) for _, group in train.groupby("category")])
    return picked, train.drop(picked.index)


def val_size_for(k: int | None) -> float:
    return 0.125 if k is not None and k <= 8 else 0.1


def run_one(k: int | None, seed: int, method: str, self_training: bool, rounds: int = 2) -> dict:
    import slm
    from slm.training.config import TrainConfig

    train = pd.read_csv(DATA / "train.csv")
    labelled, rest = draw(train, k, seed)
    with tempfile.TemporaryDirectory(prefix="slm-curves-") as tmp:
        data = Path(tmp) / "labelled.csv"
        labelled.to_csv(data, index=False)
        unlabeled = None
        if self_training:
            unlabeled = Path(tmp) / "unlabeled.csv"
            rest[["text"]].to_csv(unlabeled, index=False)
        settings = FULL_DATA_CONFIG.get(method, {}) if k is None else METHOD_CONFIG[method]
        config = TrainConfig(method=method, seed=42 + seed, self_training_rounds=rounds, **settings)
        load_before = load_average()
        started = time.perf_counter()
        bundle = slm.train(
            data,
            output=Path(tmp) / "bundle",
            test=DATA / "test.csv",
            val_size=val_size_for(k),
            config=config,
            unlabeled=unlabeled,
            show_progress=False,
        )
        wall = time.perf_counter() - started
        manifest = bundle.manifest.to_json()  # the JSON record, for the results file
    training = manifest["training"]
    metrics = manifest["metrics"]["test"]
    return {
        "k": k,
        "draw": seed,
        "method": method,
        "self_training": self_training,
        "resolved_method": training.get("method"),
        "shipped": manifest.get("default_component"),
        "rounds": rounds if self_training else 0,
        "n_train": manifest["data"]["n_train"],
        "n_validation": manifest["data"]["n_validation"],
        "accuracy": {name: round(m["accuracy"], 5) for name, m in metrics.items()},
        "macro_f1": {name: round(m["macro_f1"], 5) for name, m in metrics.items()},
        "train_minutes": round(training["wall_time_s"] / 60, 2),
        "call_minutes": round(wall / 60, 2),
        "parameters": training.get("parameters"),
        "self_training_record": training.get("self_training"),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def _rounds(run: dict) -> int:
    """Self-training rounds asked for (older records: the rounds they ran)."""
    if "rounds" in run:
        return int(run["rounds"])
    return len((run.get("self_training_record") or {}).get("rounds") or [0, 0]) - 1


def _key(run: dict) -> str:
    if not run["self_training"]:
        return f"{run['k']}/{run['draw']}/{run['method']}"
    return f"{run['k']}/{run['draw']}/{run['method']}+self{'' if _rounds(run) == 1 else _rounds(run)}"


def load_runs() -> dict[str, dict]:
    if RESULTS_FILE.exists():
        return {_key(r): r for r in json.loads(RESULTS_FILE.read_text())["runs"]}
    return {}


def save_runs(runs: dict[str, dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    payload = {
        "dataset": "banking77",
        "cpu_count": machine["cpu_count"],
        "platform": machine["platform"],
        "runs": sorted(runs.values(), key=lambda r: (r["k"] or 10**9, r["method"], r["self_training"], r["draw"])),
    }
    RESULTS_FILE.write_text(json.dumps(payload, indent=2) + "\n")


def _mean(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: dict[str, dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs.values():
        name = r["method"] + (f" + self-training ({_rounds(r)} round(s))" if r["self_training"] else "")
        groups.setdefault((r["k"], name), []).append(r)
    rows = []
    for (k, name), members in sorted(groups.items(), key=lambda kv: (kv[0][0] or 10**9, kv[0][1])):
        acc, acc_sd = _mean([m["accuracy"]["transformer"] for m in members])
        base, base_sd = _mean([_labelled_only_baseline(m) for m in members])
        ens, _ = _mean([m["accuracy"]["ensemble"] for m in members])
        rows.append(
            {
                "k": k,
                "method": name,
                "draws": len(members),
                "transformer": acc,
                "transformer_sd": acc_sd,
                "baseline": base,
                "baseline_sd": base_sd,
                "ensemble": ens,
                "max_train_minutes": max(m["train_minutes"] for m in members),
                "target": TARGETS.get(k) if not members[0]["self_training"] else None,
            }
        )
    return rows


def _labelled_only_baseline(run: dict) -> float:
    """The n-gram baseline trained on the labelled texts alone: with self-training the bundle's n-gram side is
    refitted on the pseudo-labels too, and the labelled-only model's score is in the self-training record."""
    recorded = (run.get("self_training_record") or {}).get("ngram_labelled_only")
    return float(recorded["accuracy"]) if recorded else float(run["accuracy"]["ngram_baseline"])


def _gain(before: float | None, after: float) -> str:
    return "-" if before is None else f"{before:.2%} → {after:.2%} ({(after - before) * 100:+.2f})"


def _lost_gained(entry: dict) -> str:
    return f"; {entry['val_texts_lost']}/{entry['val_texts_gained']}" if "val_texts_lost" in entry else ""


def markdown(rows: list[dict], runs: dict[str, dict]) -> str:
    lines = [
        "# Learning curves on BANKING77 (minilm-l6; test split, 3,080 texts)",
        "",
        "Mean (± sd over draws) test accuracy; the TF-IDF + LR baseline is trained on the same labelled texts.",
        "",
        "| examples/class | method | draws | transformer | TF-IDF + LR baseline | ensemble | max train min | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = ""
        if r["target"] is not None and r["method"] == "fewshot":
            met = r["transformer"] >= r["target"] and r["max_train_minutes"] <= MAX_RUN_MINUTES
            target = f"≥ {r['target']:.0%}, ≤ {MAX_RUN_MINUTES:g} min: {'met' if met else 'MISSED'}"
        lines.append(
            f"| {r['k'] or 'all'} | {r['method']} | {r['draws']} | {r['transformer']:.2%} ± {r['transformer_sd']:.2%} "
            f"| {r['baseline']:.2%} ± {r['baseline_sd']:.2%} | {r['ensemble']:.2%} | {r['max_train_minutes']:.1f} "
            f"| {target} |"
        )
    self_runs = [r for r in runs.values() if r["self_training"]]
    if self_runs:
        lines += ["", "## Self-training (rest of the train split given without labels)", ""]
        lines += [
            "| examples/class | draw | transformer: labelled only → self-trained (points) | ensemble: same "
            "| n-gram side (pseudo-labels) | rounds kept / asked "
            "| validation macro-F1 by round (pseudo-labels; texts lost/gained) |"
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for r in sorted(self_runs, key=lambda r: (r["k"], _rounds(r), r["draw"])):
            record = r["self_training_record"] or {}
            rounds = record.get("rounds") or [{}]
            plain = runs.get(f"{r['k']}/{r['draw']}/{r['method']}") or runs.get(
                f"{r['k']}/{r['draw']}/{rounds[0].get('method')}"  # what auto chose for the labelled texts
            )
            transformer = _gain(plain["accuracy"]["transformer"] if plain else None, r["accuracy"]["transformer"])
            ensemble = _gain(plain["accuracy"]["ensemble"] if plain else None, r["accuracy"]["ensemble"])
            ngram = _gain(_labelled_only_baseline(r), r["accuracy"]["ngram_baseline"])
            by_round = ", ".join(
                f"{x['val_macro_f1']:.4f} ({x['pseudo_labels']:,}{', ' + x['method'] if x.get('method') else ''}"
                f"{_lost_gained(x)}"
                f"{'' if x['kept'] else ', rejected'})"
                for x in record.get("rounds", [])
            )
            kept = f"{record.get('kept_rounds')} / {_rounds(r)}"
            lines.append(f"| {r['k']} | {r['draw']} | {transformer} | {ensemble} | {ngram} | {kept} | {by_round} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full_size = 10003 / 77
    methods = sorted({r["method"] for r in rows})
    for name in methods:
        points = sorted((r["k"] or full_size, r["transformer"]) for r in rows if r["method"] == name)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    base = {}
    for r in rows:
        base.setdefault(r["k"] or full_size, []).append(r["baseline"])
    points = sorted((k, statistics.mean(v)) for k, v in base.items())
    ax.plot([p[0] for p in points], [p[1] for p in points], "k--", marker="s", label="TF-IDF + LR baseline")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled examples per class (rightmost: the whole train split)")
    ax.set_ylabel("test accuracy")
    ax.set_title("BANKING77 learning curves (minilm-l6, 2 CPU cores)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs: dict[str, dict]) -> str:
    rows = summarise(runs)
    text = markdown(rows, runs)
    (RESULTS / "learning_curves.md").write_text(text)
    if rows:
        plot(rows, RESULTS / "learning_curves.png")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,16,32,64,all", help="examples per class, comma-separated; 'all'")
    parser.add_argument("--draws", type=int, default=3, help="seeded draws per size (1 for 'all')")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--self-training", action="store_true", help="also give the rest of train without labels")
    parser.add_argument("--rounds", type=int, default=2, help="self-training rounds (slm train --self-training-rounds)")
    parser.add_argument("--report", action="store_true", help="only rebuild the table and plot")
    parser.add_argument("--force", action="store_true", help="re-run runs already recorded")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"error: the shared data folder {DATA} is absent", file=sys.stderr)
        return 2
    runs = load_runs()
    if not args.report:
        sizes = [None if s.strip() == "all" else int(s) for s in args.sizes.split(",")]
        for k in sizes:
            for seed in range(1 if k is None else args.draws):
                for method in args.methods.split(","):
                    probe = {
                        "k": k,
                        "draw": seed,
                        "method": method,
                        "self_training": args.self_training,
                        "rounds": args.rounds,
                    }
                    if _key(probe) in runs and not args.force:
                        continue
                    result = run_one(k, seed, method, args.self_training, args.rounds)
                    runs[_key(result)] = result
                    save_runs(runs)
                    print(json.dumps({x: result[x] for x in ("k", "draw", "method", "accuracy", "train_minutes")}))
    print(report(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
