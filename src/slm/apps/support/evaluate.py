"""Evaluate an assistant: intent accuracy, out-of-scope precision/recall, retrieval Recall@k and MRR.

Retrieval is scored next to its baselines on the same queries: BM25 alone and the un-fine-tuned
encoder. (The n-gram intent baseline needs the validation split to set its threshold: see
``bench/support_clinc.py``.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slm.apps.support.assistant import Assistant
from slm.apps.support.scope import oos_metrics, tradeoff


def split_scope(labels: list[str], known: list[str], oos_label: str) -> tuple[np.ndarray, np.ndarray]:
    """Class index per query (-1 for out of scope) and the in-scope mask."""
    index = {label: k for k, label in enumerate(known)}
    targets = np.array([-1 if lab == oos_label else index.get(lab, -1) for lab in labels])
    return targets, targets >= 0


def scope_evaluation(assistant: Assistant, texts: list[str], labels: list[str]) -> dict:
    """Intent accuracy and out-of-scope detection on labelled queries (the assistant's ``oos_label`` = out of scope)."""
    targets, in_scope = split_scope(labels, assistant.labels, assistant.oos_label)
    scored = assistant.classify(texts)
    predicted = scored["predicted"]
    explicit = (
        predicted == assistant.labels.index(assistant.oos_label)
        if assistant.oos_label in assistant.labels
        else np.zeros(len(texts), dtype=bool)
    )
    correct = (predicted == targets) & in_scope & ~explicit
    rejected = ~scored["in_scope"]
    curve = tradeoff(scored["score"], correct, in_scope, explicit)
    return {
        "queries": len(texts),
        "in_scope": int(in_scope.sum()),
        "out_of_scope": int((~in_scope).sum()),
        "accuracy_without_rejection": float(correct[in_scope].mean()) if in_scope.any() else None,
        **oos_metrics(rejected, correct, in_scope),
        "threshold": assistant.scope.threshold,
        "curve": curve,
        "scores": {"score": scored["score"], "confidence": scored["confidence"], "distance": scored["distance"],
                   "correct": correct, "in_scope": in_scope, "explicit": explicit},
    }  # fmt: skip


def with_weight(retriever, weight: float):
    """A shallow copy of ``retriever`` ranking with another dense weight (1: dense only, 0: BM25 only)."""
    import copy

    other = copy.copy(retriever)
    other.weight = weight
    return other


def ranking_metrics(ranked: list[list[str]], gold: list[set[str]]) -> dict:
    from slm.apps.support.ranking import mrr, recall_at_k

    return {
        "recall_at_1": recall_at_k(ranked, gold, 1),
        "recall_at_5": recall_at_k(ranked, gold, 5),
        "mrr_at_10": mrr(ranked, gold, 10),
        "queries": len(gold),
    }


def retrieval_evaluation(
    assistant: Assistant, questions: list[str], gold: list[set[str]], *, untuned: bool = True
) -> dict:
    """Recall@1/5 and MRR@10 of the assistant's retriever, BM25 alone, and (optionally) the un-tuned encoder."""
    from slm.apps.support.retrieval import Retriever

    if assistant.knowledge is None or assistant.retriever is None:
        return {}
    knowledge: Retriever = assistant.knowledge
    vectors = assistant.retriever.embed(questions, batch_size=1)
    out = {}
    hits = knowledge.search(vectors, questions, k=10)
    out["assistant_hybrid"] = ranking_metrics([[h.entry.id for h in row] for row in hits], gold)
    dense = with_weight(knowledge, 1.0).search(vectors, questions, k=10)
    out["retriever_dense"] = ranking_metrics([[h.entry.id for h in row] for row in dense], gold)
    lexical = with_weight(knowledge, 0.0).search(vectors, questions, k=10)
    out["bm25"] = ranking_metrics([[h.entry.id for h in row] for row in lexical], gold)
    if untuned and assistant.manifest.extra["retrieval"].get("tuned"):  # the assistant's own section
        base = untuned_retriever(assistant)
        plain = with_weight(base.knowledge, 1.0).search(base.retriever.embed(questions, batch_size=1), questions, k=10)
        out["untuned_dense"] = ranking_metrics([[h.entry.id for h in row] for row in plain], gold)
    return out


def untuned_retriever(assistant: Assistant):
    """The assistant's knowledge base re-embedded with the base encoder, un-tuned (needs the train extra)."""
    import atexit
    import shutil
    import tempfile

    from slm.apps.common.encoders import Encoder
    from slm.apps.support.build import SupportConfig, build_retriever
    from slm.apps.support.retrieval import Retriever

    retriever = assistant.manifest.components.retriever
    # A tuned retriever has a knowledge base, and build_retriever records the base model it was tuned from.
    assert assistant.knowledge is not None and retriever is not None and retriever.base_model is not None
    config = SupportConfig(base_model=retriever.base_model, tune_retriever=False)
    tmp = Path(tempfile.mkdtemp(prefix="slm-untuned-"))
    atexit.register(shutil.rmtree, tmp, True)  # the models are read into memory; the files go at exit
    spec, _ = build_retriever(assistant.knowledge.kb, [], tmp, config, show_progress=False)

    class Base:
        retriever = Encoder(tmp, spec)
        knowledge = Retriever.load(tmp / "knowledge")

    return Base


def plot_tradeoff(curve: list[dict], chosen: dict, path: Path, title: str, baseline: list[dict] | None = None) -> Path:
    """PNG of the threshold sweep: OOS recall/precision against in-scope accuracy, and OOS precision vs recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def column(rows: list[dict], key: str) -> list[float]:
        return [np.nan if r[key] is None else r[key] for r in rows]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    acc = column(curve, "in_scope_accuracy")
    left.plot(acc, column(curve, "oos_recall"), label="out-of-scope recall", color="tab:blue")
    left.plot(acc, column(curve, "oos_precision"), label="out-of-scope precision", color="tab:orange")
    right.plot(column(curve, "oos_recall"), column(curve, "oos_precision"), color="tab:blue", label="assistant")
    if baseline:
        base_acc = column(baseline, "in_scope_accuracy")
        left.plot(base_acc, column(baseline, "oos_recall"), "--", label="n-gram baseline: recall", color="tab:gray")
        right.plot(column(baseline, "oos_recall"), column(baseline, "oos_precision"), "--", color="tab:gray",
                   label="n-gram baseline")  # fmt: skip
    point = f"chosen threshold ({chosen['in_scope_accuracy']:.1%} in-scope, {chosen['oos_recall']:.1%} recall)"
    left.scatter([chosen["in_scope_accuracy"]], [chosen["oos_recall"]], color="black", zorder=5, label=point)
    if chosen.get("oos_precision") is not None:
        right.scatter([chosen["oos_recall"]], [chosen["oos_precision"]], color="black", zorder=5, label="chosen")
    left.set_xlim(max(0.0, min(0.75, chosen["in_scope_accuracy"] - 0.1)), 1.0)  # the region a user would choose in
    left.set_xlabel("in-scope accuracy (rejections count as wrong)")
    left.set_ylabel("out-of-scope recall / precision")
    right.set_xlabel("out-of-scope recall")
    right.set_ylabel("out-of-scope precision")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
