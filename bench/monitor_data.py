"""Data for the monitor replay benchmark: the fin_tweets 80/20 split and the bench's sentiment bundle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench" / "monitor"
LEXICON = Path(__file__).resolve().parent / "monitor_lexicon.txt"
# The dataset's own label codes: 0 bearish, 1 bullish, 2 neutral.
NEGATIVE, POSITIVE = "0", "1"


def split(workdir: Path = WORK) -> tuple[Path, Path]:
    """The stratified 80/20 split (seed 42) of bench/classification.py: train for the model, test for replay."""
    from classification import DATASETS, _split_8020

    paths = workdir / "train.csv", workdir / "test.csv"
    if not all(p.exists() for p in paths):
        workdir.mkdir(parents=True, exist_ok=True)
        return _split_8020(DATASETS["fin_tweets"], workdir)
    return paths


def sentiment_bundle(workdir: Path = WORK, *, max_minutes: float = 12.0) -> Path:
    """The int8 fin_tweets sentiment bundle, trained on the 80% split (reused when present)."""
    int8 = workdir / "sentiment-int8"
    if (int8 / "manifest.json").exists():
        return int8
    train, heldout = split(workdir)
    fp32 = workdir / "sentiment"
    slm = [sys.executable, "-m", "slm"]
    if not (fp32 / "manifest.json").exists():
        subprocess.run([*slm, "train", str(train), "-o", str(fp32), "--test", str(heldout), "--text-col", "text",
                        "--label-col", "label", "--epochs", "3", "--max-length", "128", "--class-weight",
                        "balanced", "--max-minutes", str(max_minutes)], check=True)  # fmt: skip
    subprocess.run([*slm, "compress", str(fp32), "--quantize", "int8", "-o", str(int8)], check=True)
    return int8


if __name__ == "__main__":
    print(sentiment_bundle())
