"""Where finance tweets loses its macro-F1: the long news rows (issue 26, acceptance 1).

    python bench/fin_tweets_long.py                    # slices of the bench bundle, n-gram cuts, the bound
    python bench/fin_tweets_long.py --specialists      # also minilm-l6 trained on the long rows alone (~15 min)

The file mixes tweets (at most 280 characters) with about 15% long FX news paragraphs (median 1,500
characters), and every long row is bearish or bullish. This reads the bundle ``bench/classification.py``
trains on its 80/20 split (``runs/bench/fin_tweets``; ``--bundle`` for another one trained on the same
split) and reports:

- each component's accuracy and macro-F1 on the tweets and on the long rows of the test split;
- slm's n-gram baseline trained on the long rows alone, reading the whole text, its first 500 characters
  or its last 500 (where the signal is);
- with ``--specialists``: ``minilm-l6`` fine-tuned on the long rows alone at 128 and 256 tokens;
- the bound: the shipped model's macro-F1 if its tweet accuracy rose to 0.85, 0.88 or 0.90 (its tweet
  errors corrected at random, 20 draws) while the long rows stay as they are.

Writes ``bench/results/fin_tweets_long.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from classification import DATASETS, _split_8020
from sklearn.metrics import accuracy_score, f1_score

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BUNDLE = ROOT.parent / "runs" / "bench" / "fin_tweets"
TWEET_CHARS = 280  # the tweet length limit: every row above it is a news paragraph
CUTS = {"whole text": slice(None), "first 500 characters": slice(None, 500), "last 500 characters": slice(-500, None)}
SPECIALISTS = {
    "128 tokens, 4 epochs": {"max_length": 128, "epochs": 4},
    "256 tokens, 3 epochs": {"max_length": 256, "epochs": 3},
}
TWEET_ACCURACIES = (0.85, 0.88, 0.90)


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
    }


def component_slices(bundle: Path, test: pd.DataFrame, long: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every component's scores on all rows, the tweets and the long rows; the shipped predictions."""
    from slm.runtime.bundle import load

    model = load(bundle)
    y = np.array([model.labels.index(label) for label in test["label"]])
    probas = model.component_probas(test["text"].tolist())
    out = {}
    for name, proba in probas.items():
        pred = proba.argmax(1)
        out[name] = {
            "all": scores(y, pred),
            "tweets": scores(y[~long], pred[~long]),
            "long": scores(y[long], pred[long]),
        }
    shipped = probas[model.default_component].argmax(1)
    return {"shipped": model.default_component, "components": out}, y, shipped


def ngram_cuts(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """slm's n-gram baseline fitted on the long training rows alone, each reading one cut of the text."""
    from slm.models.ngram import NgramClassifier

    labels = sorted(set(train["label"]))
    y_train = np.array([labels.index(v) for v in train["label"]])
    y_test = np.array([labels.index(v) for v in test["label"]])
    out = {}
    for name, cut in CUTS.items():
        model = NgramClassifier().fit([t[cut] for t in train["text"]], y_train, n_classes=len(labels))
        pred = model.predict_proba([t[cut] for t in test["text"]]).argmax(1)
        out[name] = round(float(accuracy_score(y_test, pred)), 4)
    return out


def specialists(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """``minilm-l6`` fine-tuned on the long rows alone (10% of them for validation), scored on the long test rows."""
    import slm
    from slm.training.config import TrainConfig

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train.to_csv(work / "train.csv", index=False)
        test.to_csv(work / "test.csv", index=False)
        for name, config in SPECIALISTS.items():
            bundle = slm.train(
                work / "train.csv",
                output=work / f"model-{config['max_length']}",
                test=work / "test.csv",
                text_col="text",
                label_col="label",
                val_size=0.1,
                config=TrainConfig(**config, robustness=False),
            )
            out[name] = round(bundle.manifest.to_json()["metrics"]["test"]["transformer"]["accuracy"], 4)
    return out


def bound(y: np.ndarray, shipped: np.ndarray, long: np.ndarray, draws: int = 20) -> dict[str, float]:
    """Macro-F1 if the tweets reached each accuracy and the long rows stayed as they are."""
    rng = np.random.default_rng(0)
    tweets = ~long
    out = {}
    for target in TWEET_ACCURACIES:
        values = []
        for _ in range(draws):
            pred = shipped.copy()
            wrong = rng.permutation(np.flatnonzero(tweets & (pred != y)))
            fix = wrong[: max(int(round(target * tweets.sum())) - int((pred[tweets] == y[tweets]).sum()), 0)]
            pred[fix] = y[fix]
            values.append(f1_score(y, pred, average="macro"))
        out[f"{target:.2f}"] = round(float(np.mean(values)), 4)
    return out


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# Finance tweets: the tweets and the long news rows (test split of bench/classification.py)",
        "",
        f"Test rows: {rows['test_tweets']} tweets, {rows['test_long']} long rows (> {TWEET_CHARS} characters, "
        f"labels {rows['long_labels']}). Shipped component: {result['slices']['shipped']}.",
        "",
        "| component | all: accuracy | all: macro-F1 | tweets: accuracy | tweets: macro-F1 | long rows: accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["slices"]["components"].items():
        lines.append(
            f"| {name} | {s['all']['accuracy']:.4f} | {s['all']['macro_f1']:.4f} | {s['tweets']['accuracy']:.4f} | "
            f"{s['tweets']['macro_f1']:.4f} | {s['long']['accuracy']:.4f} |"
        )
    lines += ["", "Long rows only (two labels), accuracy on the long test rows:", ""]
    lines += [
        f"- n-gram baseline fitted on the long rows, {cut}: {acc:.4f}" for cut, acc in result["ngram_cuts"].items()
    ]
    lines += [
        f"- minilm-l6 fine-tuned on the long rows, {n}: {acc:.4f}" for n, acc in result.get("specialists", {}).items()
    ]
    lines += ["", "Bound: the shipped model's macro-F1 if its tweet accuracy rose to", ""]
    lines += [f"- {target}: {f1:.4f}" for target, f1 in result["bound"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", type=Path, default=BUNDLE, help="a bundle trained on bench/classification.py's split"
    )
    parser.add_argument("--specialists", action="store_true", help="also fine-tune minilm-l6 on the long rows alone")
    args = parser.parse_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        print(
            f"error: no bundle at {args.bundle}: run `python bench/classification.py fin_tweets` first", file=sys.stderr
        )
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        train, test = (
            pd.read_csv(p, dtype=str, keep_default_na=False) for p in _split_8020(DATASETS["fin_tweets"], Path(tmp))
        )
    long = test["text"].str.len().to_numpy() > TWEET_CHARS
    long_train = train[train["text"].str.len() > TWEET_CHARS]
    slices, y, shipped = component_slices(args.bundle, test, long)
    result = {
        "rows": {
            "test_tweets": int((~long).sum()),
            "test_long": int(long.sum()),
            "long_labels": sorted(set(test["label"][long]) | set(long_train["label"])),
        },
        "slices": slices,
        "ngram_cuts": ngram_cuts(long_train, test[long]),
        "bound": bound(y, shipped, long),
    }
    if args.specialists:
        result["specialists"] = specialists(long_train, test[long])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fin_tweets_long.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "fin_tweets_long.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
