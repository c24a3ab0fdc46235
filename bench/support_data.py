"""Benchmark data for the support assistant, and the BM25 baseline on InsuranceQA.

    python bench/support_data.py                   # BM25 on the InsuranceQA test split
    python bench/support_data.py --split valid

InsuranceQA comes from the ``insuranceqa_data`` package (English side of the v2 corpus): 27,413
answers; every question has its correct answers plus 200 sampled negatives, and the standard
evaluation ranks each question's pool (about 200 candidates). CLINC150 is read from
``../shared/data/clinc150/data_full.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLITS = ("train", "valid", "test")


def _clean(text: str) -> str:
    """Whitespace runs (the package doubles the spaces between question words) collapsed, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


def insuranceqa(split: str) -> tuple[dict[str, str], list[dict]]:
    """(answer id -> English answer, the split's questions as {"question", "answers", "pool"}).

    ``pool`` is the question's correct answer ids followed by its negatives: the candidates to rank.
    """
    import insuranceqa_data

    if split not in SPLITS:
        raise SystemExit(f"unknown InsuranceQA split {split!r}; choose one of {', '.join(SPLITS)}")
    answers = {str(key): _clean(value["en"]) for key, value in insuranceqa_data.load_answers().items()}
    loader = {"train": insuranceqa_data.load_train, "valid": insuranceqa_data.load_valid,
              "test": insuranceqa_data.load_test}[split]  # fmt: skip
    questions = []
    for _, item in sorted(loader().items(), key=lambda kv: int(kv[0])):
        good = [str(a) for a in item["answers"]]
        pool = good + [str(n) for n in item["negatives"] if str(n) not in good]
        questions.append({"question": _clean(item["en"]), "answers": good, "pool": pool})
    return answers, questions


def clinc150() -> dict[str, list[tuple[str, str]]]:
    """CLINC150 (full): split name (train, val, test, oos_train, oos_val, oos_test) -> [(text, intent)]."""
    path = DATA / "clinc150" / "data_full.json"
    if not path.is_file():
        raise SystemExit(f"CLINC150 not found at {path}; it is expected in the shared data folder beside the repo")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {split: [(str(text), str(intent)) for text, intent in rows] for split, rows in raw.items()}


def bm25_baseline(split: str = "test", stopwords: str | None = "en", seed: int = 0) -> dict:
    """Recall@1, Recall@5 and MRR@10 of BM25 ranking each question's pool (one index over all answers).

    Ties (e.g. no shared word at all) are broken by a seeded shuffle, never in the gold answers' favour.
    """
    from slm.apps.support.lexical import LexicalIndex
    from slm.apps.support.ranking import mrr, recall_at_k

    start = time.perf_counter()
    answers, questions = insuranceqa(split)
    ids = list(answers)
    position = {answer_id: i for i, answer_id in enumerate(ids)}
    index = LexicalIndex.build([answers[i] for i in ids], stopwords=stopwords)
    built = time.perf_counter()
    rng = np.random.default_rng(seed)
    ranked, gold, no_overlap = [], [], 0
    for item in questions:
        scores = index.scores(item["question"])
        pool = np.array(item["pool"], dtype=object)[rng.permutation(len(item["pool"]))]
        pool_scores = scores[[position[p] for p in pool]]
        no_overlap += int(not pool_scores.any())
        order = np.argsort(-pool_scores, kind="stable")
        ranked.append([str(p) for p in pool[order[:10]]])
        gold.append(set(item["answers"]))
    done = time.perf_counter()
    return {
        "dataset": f"insuranceqa-v2-en/{split}",
        "method": f"bm25 (bm25s lucene k1=1.5 b=0.75, words+cjk tokens, stopwords={stopwords})",
        "questions": len(questions),
        "mean_pool_size": round(float(np.mean([len(q["pool"]) for q in questions])), 1),
        "answers_indexed": len(ids),
        "recall@1": round(recall_at_k(ranked, gold, 1), 4),
        "recall@5": round(recall_at_k(ranked, gold, 5), 4),
        "mrr@10": round(mrr(ranked, gold, 10), 4),
        "questions_without_overlap": no_overlap,
        "index_seconds": round(built - start, 1),
        "search_seconds": round(done - built, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--no-stopwords", action="store_true", help="keep English stopwords")
    args = parser.parse_args(argv)
    result = bm25_baseline(args.split, stopwords=None if args.no_stopwords else "en")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
