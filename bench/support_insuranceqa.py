"""FAQ retrieval of the support assistant on InsuranceQA (issue 6, acceptance 2).

    python bench/support_insuranceqa.py                    # 220 fine-tuning steps (~10 min on 2 idle cores)
    python bench/support_insuranceqa.py --steps 400 --learning-rate 5e-5

The knowledge base is the package's 27,413 English answers. The retriever (``minilm-l6``) is
fine-tuned by the assistant's own build code (``slm.apps.support.build.tune_retriever``: in-batch
negatives, kept only if it beats the un-tuned encoder on held-out training pairs) on the training
questions and their answers, exported to ONNX (int8 when it agrees with fp32) and every answer is
embedded. Each test question then ranks its pool from the package (its correct answers + 200
negatives, the standard InsuranceQA protocol) by, side by side:

- BM25 (bm25s) over the same answers;
- the un-fine-tuned encoder, exported and embedded the same way;
- the fine-tuned encoder;
- the hybrid of the fine-tuned encoder and BM25 that the assistant uses, its weight chosen on the
  validation split.

Answers are truncated to ``--document-tokens`` (128) for speed on 2 cores. Writes
``bench/results/support_insuranceqa.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support_data import insuranceqa  # noqa: E402

from slm.apps.common.encoders import RETRIEVER_OUTPUTS, Encoder, embedding_graph, export_encoder  # noqa: E402
from slm.apps.support.build import SupportConfig, tune_retriever  # noqa: E402
from slm.apps.support.contrastive import RetrieverTraining  # noqa: E402
from slm.apps.support.lexical import LexicalIndex  # noqa: E402
from slm.apps.support.ranking import mrr, recall_at_k  # noqa: E402
from slm.hardware import load_average  # noqa: E402
from slm.logs import quiet_transformers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_POINTS = 5.0
WEIGHTS = tuple(w / 10 for w in range(11))


def rank_pools(questions: list[dict], scores_of, seed: int = 0) -> tuple[list[list[str]], list[set[str]]]:
    """Top-10 of each question's pool by ``scores_of(i, pool_positions)``; ties broken by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    ranked, gold = [], []
    for i, item in enumerate(questions):
        pool = np.array(item["pool"], dtype=object)[rng.permutation(len(item["pool"]))]
        order = np.argsort(-scores_of(i, pool), kind="stable")
        ranked.append([str(p) for p in pool[order[:10]]])
        gold.append(set(item["answers"]))
    return ranked, gold


def metrics(ranked, gold) -> dict:
    return {
        "recall_at_1": round(recall_at_k(ranked, gold, 1), 4),
        "recall_at_5": round(recall_at_k(ranked, gold, 5), 4),
        "mrr_at_10": round(mrr(ranked, gold, 10), 4),
    }


def embed_all(encoder, tokenizer_dir: Path, work: Path, name: str, answers: list[str], questions: list[str],
              settings: RetrieverTraining) -> tuple[np.ndarray, np.ndarray, dict]:  # fmt: skip
    """Export ``encoder`` like the assistant build does, then embed every answer and question."""
    sample = questions[:200] + answers[:100]
    spec = export_encoder(embedding_graph(encoder), encoder.config, tokenizer_dir, work, name, RETRIEVER_OUTPUTS,
                          max_length=settings.query_max_length, check_texts=sample)  # fmt: skip
    runtime = Encoder(work, spec, threads=os.cpu_count())
    started = time.perf_counter()
    docs = runtime.embed(answers, max_length=settings.document_max_length, batch_size=64, show_progress=True)
    seconds = time.perf_counter() - started
    queries = runtime.embed(questions, batch_size=64)
    info = {"precision": spec.precision, "int8_check": spec.int8_check,
            "answers_per_second": round(len(answers) / seconds, 1)}  # fmt: skip
    return docs, queries, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=220,
        help="retriever fine-tuning batches (a fixed count, so the result does not depend on the machine's load)",
    )
    parser.add_argument("--learning-rate", type=float, default=RetrieverTraining.learning_rate)
    parser.add_argument("--document-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    quiet_transformers()
    started = time.perf_counter()
    answers, train = insuranceqa("train")
    _, valid = insuranceqa("valid")
    _, test = insuranceqa("test")
    ids = list(answers)
    position = {a: i for i, a in enumerate(ids)}
    texts = [answers[i] for i in ids]
    pairs = [(q["question"], answers[a]) for q in train for a in q["answers"]]
    settings = RetrieverTraining(epochs=1, batch_size=args.batch_size, max_steps=args.steps,
                                 learning_rate=args.learning_rate,
                                 document_max_length=args.document_tokens)  # fmt: skip
    config = SupportConfig(retriever=settings)
    questions = [q["question"] for q in valid] + [q["question"] for q in test]

    lexical = LexicalIndex.build(texts)
    bm25 = {name: [lexical.scores(q["question"]) for q in split] for name, split in (("valid", valid), ("test", test))}

    def pools(split: list[dict], scores: list[np.ndarray]) -> dict:
        return metrics(*rank_pools(split, lambda i, pool: scores[i][[position[p] for p in pool]]))

    rows: dict[str, dict] = {"BM25 (bm25s)": pools(test, bm25["test"])}
    with tempfile.TemporaryDirectory(prefix="slm-iqa-") as tmp:
        work = Path(tmp)
        tune_started = time.perf_counter()
        tuned, tokenizer, base, report = tune_retriever(pairs, texts, config, show_progress=True)
        tune_seconds = time.perf_counter() - tune_started
        tokenizer.save_pretrained(work / "tokenizer")
        docs_t, queries_t, info_t = embed_all(tuned, work / "tokenizer", work, "tuned", texts, questions, settings)
        from transformers import AutoModel

        untuned = AutoModel.from_pretrained(base.path, add_pooling_layer=False).eval()
        docs_u, queries_u, info_u = embed_all(untuned, work / "tokenizer", work, "untuned", texts, questions, settings)
    n_valid = len(valid)
    dense_t = {"valid": queries_t[:n_valid] @ docs_t.T, "test": queries_t[n_valid:] @ docs_t.T}
    dense_u = queries_u[n_valid:] @ docs_u.T
    rows["un-fine-tuned minilm-l6"] = pools(test, list(dense_u))
    rows["fine-tuned minilm-l6 (slm)"] = pools(test, list(dense_t["test"]))

    def hybrid_pools(split: list[dict], name: str, weight: float) -> dict:
        """The assistant's hybrid score: cosine mixed with BM25 divided by the best BM25 of the candidates."""

        def of(i, pool):
            idx = [position[p] for p in pool]
            lex = bm25[name][i][idx]
            return weight * dense_t[name][i][idx] + (1 - weight) * lex / max(float(lex.max()), 1e-9)

        return metrics(*rank_pools(split, of))

    curve = {w: hybrid_pools(valid, "valid", w)["mrr_at_10"] for w in WEIGHTS}
    weight = max(curve, key=lambda w: (curve[w], -abs(w - 0.5)))
    rows[f"fine-tuned + BM25 hybrid (weight {weight:.1f}, chosen on validation)"] = hybrid_pools(test, "test", weight)

    tuned_r1 = rows["fine-tuned minilm-l6 (slm)"]["recall_at_1"]
    margins = {
        "over_bm25_points": round(100 * (tuned_r1 - rows["BM25 (bm25s)"]["recall_at_1"]), 1),
        "over_untuned_points": round(100 * (tuned_r1 - rows["un-fine-tuned minilm-l6"]["recall_at_1"]), 1),
    }
    met = all(v >= TARGET_POINTS for v in margins.values())
    result = {
        "benchmark": "support_insuranceqa",
        "data": {"answers": len(texts), "train_pairs": len(pairs), "valid_questions": len(valid),
                 "test_questions": len(test), "mean_pool": round(float(np.mean([len(q["pool"]) for q in test])), 1)},
        "rows": rows,
        "acceptance": {"target_points": TARGET_POINTS, "margins": margins, "met": met},
        "retriever": {**report, "tune_seconds": round(tune_seconds, 1)},
        "encoders": {"tuned": info_t, "untuned": info_u},
        "hybrid_validation_mrr": {str(k): v for k, v in curve.items()},
        "document_tokens": args.document_tokens,
        "wall_minutes": round((time.perf_counter() - started) / 60, 2),
        "load_average": load_average(),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "support_insuranceqa.json").write_text(json.dumps(result, indent=2) + "\n")
    training = report.get("training", {})
    lines = [
        "# InsuranceQA FAQ retrieval (support assistant)",
        "",
        f"{len(test):,} test questions, each ranking its pool from the package (mean {result['data']['mean_pool']} "
        f"candidates) among {len(texts):,} answers (truncated to {args.document_tokens} tokens). Fine-tuning: "
        f"{training.get('steps', 0)} steps of {args.batch_size} pairs in {training.get('seconds', 0) / 60:.1f} min "
        f"(of {len(pairs):,} training pairs; learning rate {args.learning_rate:g}).",
        "",
        "| retriever | Recall@1 | Recall@5 | MRR@10 |",
        "|---|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['recall_at_1']:.1%} | {row['recall_at_5']:.1%} | {row['mrr_at_10']:.3f} |")
    lines += [
        "",
        f"Fine-tuned Recall@1 margin: +{margins['over_bm25_points']} points over BM25, "
        f"+{margins['over_untuned_points']} over the un-fine-tuned encoder (target ≥ {TARGET_POINTS:g} each: "
        f"{'met' if met else 'MISSED'}).",
        "",
    ]
    (RESULTS / "support_insuranceqa.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
