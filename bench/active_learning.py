"""Active learning beats random labelling? ``slm suggest`` vs a random pick on BANKING77 (issue 23, acceptance 2).

    python bench/active_learning.py                          # 3 seeds, 8 per class + 400 (about an hour on 2 cores)
    python bench/active_learning.py --seeds 0 --intents 5 --add 20 --name active_learning-smoke   # a smoke run
    python bench/active_learning.py --report                 # only rebuild the .md from the .json

For each seed: 8 labelled texts per intent (616) are drawn from the official train split; one of each
intent's 8 is the validation file (77 texts, the same for all three trainings of the seed, so early
stopping and the ensemble weight are judged on the same texts in each arm, and every added label is
trained on), the other 7 (539) the training file. The rest of the train split is the pool, given to
``slm.api.suggest`` without its labels. A bundle is trained on the labelled set with the public API
(``slm.api.train``, default method ``auto``: few-shot at this size), then ``slm.api.suggest`` picks 400
pool texts with ``--strategy auto`` and 400 with ``--strategy random`` (the baseline, same seed); their
hidden labels are revealed, each arm is retrained from the base model on 539 + 400, and every bundle
is scored on the whole official test split (3,080 texts) by ``slm.api.train(test=...)``. The TF-IDF +
logistic-regression baseline comes from the same training calls, on the same labelled texts.

Target: the shipped component (what ``slm predict`` answers with) of the suggest arm beats the random
arm by at least 2 points of test accuracy, mean over the seeds. Results accumulate by seed in
``bench/results/<name>.json`` (a finished seed is not rerun); each seed refreshes ``<name>.md``.
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
TARGET_POINTS = 2.0
ARMS = ("auto", "random")


def draw(train: pd.DataFrame, per_class: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training texts, validation texts: one per intent, pool) from the train split, seeded."""
    picked = pd.concat([g.sample(per_class, random_state=seed) for _, g in train.groupby("category")])
    validation = picked.groupby("category").head(1)
    return picked.drop(validation.index), validation, train.drop(picked.index)


def train_bundle(data: Path, validation: Path, test: Path, output: Path, seed: int) -> dict:
    """``slm.api.train`` as a user would call it; the test scores and times from its manifest."""
    from slm import api
    from slm.training.config import TrainConfig

    started = time.perf_counter()
    bundle = api.train(
        data, output=output, validation=validation, test=test, config=TrainConfig(seed=42 + seed), show_progress=False
    )
    wall = time.perf_counter() - started
    manifest = bundle.manifest.to_json()
    metrics = manifest["metrics"]["test"]
    shipped = bundle.default_component
    return {
        "n_train": manifest["data"]["n_train"],
        "method": manifest["training"].get("method") or (manifest["training"].get("method_choice") or {}).get("method"),
        "shipped": shipped,
        "accuracy": {name: round(m["accuracy"], 5) for name, m in metrics.items()},
        "shipped_accuracy": round(metrics[shipped]["accuracy"], 5),
        "train_minutes": round(manifest["training"]["wall_time_s"] / 60, 2),
        "call_minutes": round(wall / 60, 2),
    }


def pick(bundle: Path, pool: pd.DataFrame, folder: Path, strategy: str, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """``slm.api.suggest`` on the pool (labels hidden); the picked rows with their labels revealed."""
    from slm import api

    hidden = folder / "pool.csv"
    if not hidden.exists():
        pool[["text"]].to_csv(hidden, index=False)
    started = time.perf_counter()
    run = api.suggest(bundle, hidden, n=n, output=folder / f"to_label-{strategy}.csv", strategy=strategy, seed=seed)
    wall = time.perf_counter() - started
    rows = [s.row - 1 for s in run.suggestions]
    picked = pool.iloc[rows][["text", "category"]]
    wrong = sum(s.predicted_label != label for s, label in zip(run.suggestions, picked["category"], strict=True))
    counts = picked["category"].value_counts()
    return picked, {
        "minutes": round(wall / 60, 2),
        "picked": len(rows),
        "base_model_wrong_on_picks": round(wrong / len(rows), 4),
        "intents_covered": int(len(counts)),
        "most_per_intent": int(counts.max()),
        "near_duplicates_skipped": run.near_duplicates,
        "component": run.component,
    }


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    train = pd.read_csv(DATA / "train.csv")
    test = pd.read_csv(DATA / "test.csv")
    if args.intents:
        keep = sorted(train["category"].unique())[: args.intents]
        train, test = train[train["category"].isin(keep)], test[test["category"].isin(keep)]
    labelled, validation, pool = draw(train, args.per_class, seed)
    pool = pool.reset_index(drop=True)
    record: dict = {"seed": seed, "labelled": len(labelled) + len(validation), "validation": len(validation),
                    "pool": len(pool), "load_average_before": load_average()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="slm-al-") as tmp:
        folder = Path(args.keep) / f"seed-{seed}" if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"train": folder / "train.csv", "validation": folder / "validation.csv", "test": folder / "test.csv"}
        labelled.to_csv(paths["train"], index=False)
        validation.to_csv(paths["validation"], index=False)
        test.to_csv(paths["test"], index=False)
        print(f"seed {seed}: training the base bundle on {record['labelled']} labelled texts", flush=True)
        record["base"] = train_bundle(paths["train"], paths["validation"], paths["test"], folder / "base", seed)
        print(f"  base: {record['base']['accuracy']}", flush=True)
        for arm in ARMS:
            picked, stats = pick(folder / "base", pool, folder, arm, args.add, seed)
            data = folder / f"train-{arm}.csv"
            pd.concat([labelled, picked]).to_csv(data, index=False)
            print(f"  {arm}: picked {stats}; retraining", flush=True)
            result = train_bundle(data, paths["validation"], paths["test"], folder / f"bundle-{arm}", seed)
            record[arm] = {"pick": stats, **result}
            print(f"  {arm}: {result['accuracy']}", flush=True)
    record["gain_points"] = round((record["auto"]["shipped_accuracy"] - record["random"]["shipped_accuracy"]) * 100, 2)
    record["load_average_after"] = load_average()
    return record


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def markdown(payload: dict) -> str:
    runs = payload["runs"]
    setup = payload["setup"]
    lines = [
        f"# Active learning on BANKING77: `slm suggest` vs random ({setup['per_class']} labelled per intent "
        f"+ {setup['add']} more)",
        "",
        "Test accuracy (%) on the official test split of each bundle's shipped component (what `slm predict` "
        "answers with; the transformer's in brackets); the TF-IDF + LR baseline is trained by the same call on the "
        f"same labelled texts. Target: suggest − random ≥ +{TARGET_POINTS:g} points (mean over seeds). "
        "The random arm is `slm suggest --strategy random`: a seeded uniform sample under the same exclusions "
        "(repeats, training texts and their near-duplicates), a harder baseline than a plain random sample, "
        "whose texts near a training text are the easy ones.",
        "",
        "| seed | base (labelled only) | suggest (auto) | random | gain (points) | baseline: base / suggest / random "
        "| train min (base / suggest / random) | suggest min (auto / random) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def acc(r: dict) -> str:
        return f"{r['shipped_accuracy'] * 100:.2f} ({r['accuracy']['transformer'] * 100:.2f})"

    for r in runs:
        base = [r[k]["accuracy"]["ngram_baseline"] * 100 for k in ("base", "auto", "random")]
        minutes = [r[k]["train_minutes"] for k in ("base", "auto", "random")]
        lines.append(
            f"| {r['seed']} | {acc(r['base'])} | {acc(r['auto'])} | {acc(r['random'])} | {r['gain_points']:+.2f} "
            f"| {' / '.join(f'{b:.2f}' for b in base)} "
            f"| {' / '.join(f'{m:.1f}' for m in minutes)} "
            f"| {r['auto']['pick']['minutes']:.1f} / {r['random']['pick']['minutes']:.1f} |"
        )
    if runs:
        gains = [r["gain_points"] for r in runs]
        mean_gain = statistics.mean(gains)
        met = "met" if mean_gain >= TARGET_POINTS else "MISSED"

        def col(arm: str, key: str = "shipped_accuracy") -> str:
            return _mean_sd([r[arm][key] * 100 for r in runs])

        def baseline(arm: str) -> str:
            return _mean_sd([r[arm]["accuracy"]["ngram_baseline"] * 100 for r in runs])

        lines.append(
            f"| mean ± sd | {col('base')} | {col('auto')} | {col('random')} | {_mean_sd(gains)} "
            f"| {baseline('base')} / {baseline('auto')} / {baseline('random')} | | |"
        )
        lines += ["", f"**Gain of suggest over random: {mean_gain:+.2f} points (target ≥ +{TARGET_POINTS:g}: {met}).**"]
        lines += ["", "The gain per component (each bundle's shipped one is chosen on its validation texts):", ""]
        lines += ["| component | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean ± sd |"]
        lines += ["|---|" + "---|" * (len(runs) + 1)]
        for component in ("transformer", "ensemble", "ngram_baseline"):
            diffs = [(r["auto"]["accuracy"][component] - r["random"]["accuracy"][component]) * 100 for r in runs]
            lines.append(f"| {component} | " + " | ".join(f"{d:+.2f}" for d in diffs) + f" | {_mean_sd(diffs)} |")
        shipped = [f"{r['auto']['shipped']} / {r['random']['shipped']}" for r in runs]
        lines += ["", "Shipped component (suggest / random): " + "; ".join(
            f"seed {r['seed']}: {s}" for r, s in zip(runs, shipped, strict=True)) + "."]  # fmt: skip
        lines += ["", "What was picked (base model wrong on the picks; intents covered; most picks of one intent):", ""]
        for r in runs:
            parts = []
            for arm in ARMS:
                p = r[arm]["pick"]
                parts.append(f"{arm}: {p['base_model_wrong_on_picks']:.0%} wrong, {p['intents_covered']} intents, "
                             f"at most {p['most_per_intent']} of one")  # fmt: skip
            lines.append(f"- seed {r['seed']}: " + "; ".join(parts))
    machine = payload["machine"]
    lines += ["", f"Machine: {machine['cpu']['model']}, {machine['cpu_count']} CPUs, {machine['platform']}; "
              f"load average before/after each seed in the JSON."]  # fmt: skip
    return "\n".join(lines) + "\n"


def save(name: str, payload: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(payload))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--add", type=int, default=400)
    parser.add_argument("--intents", type=int, default=0, help="only the first N intents (smoke runs)")
    parser.add_argument("--name", default="active_learning")
    parser.add_argument("--report", action="store_true", help="only rebuild the .md from the .json")
    parser.add_argument("--keep", help="keep the data, picks and bundles of each seed under this folder")
    args = parser.parse_args(argv)
    path = RESULTS / f"{args.name}.json"
    payload = json.loads(path.read_text()) if path.exists() else {"runs": []}
    payload["setup"] = {"per_class": args.per_class, "add": args.add, "intents": args.intents or 77,
                        "validation": "1 per intent of the labelled texts, fixed per seed"}  # fmt: skip
    payload["machine"] = machine_info(packages=("torch", "transformers", "scikit-learn"))
    if not args.report:
        done = {r["seed"] for r in payload["runs"]}
        for seed in (int(s) for s in args.seeds.split(",")):
            if seed in done:
                print(f"seed {seed}: already in {path}", flush=True)
                continue
            payload["runs"].append(run_seed(seed, args))
            payload["runs"].sort(key=lambda r: r["seed"])
            save(args.name, payload)
    save(args.name, payload)
    print((RESULTS / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
