"""Behaviour tests for slm.reports on real data (BANKING77, CLINC150) with a small TF-IDF + LR model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, hamming_loss
from sklearn.multiclass import OneVsRestClassifier

from slm.reports import (
    multi_label_metrics,
    plot_confusion,
    primary_metric,
    recommend,
    single_label_metrics,
    tune_thresholds,
    write_report,
)
from tests.conftest import DATA, require

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def banking() -> dict:
    """Small TF-IDF + LR fitted on a BANKING77 slice; real test-set probabilities."""
    pd = pytest.importorskip("pandas")
    train = pd.read_csv(require(DATA / "banking77" / "train.csv")).sample(2500, random_state=0)
    test = pd.read_csv(require(DATA / "banking77" / "test.csv")).sample(600, random_state=0)
    labels = sorted(train["category"].unique())
    test = test[test["category"].isin(labels)]
    index = {name: i for i, name in enumerate(labels)}
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    clf = LogisticRegression(C=10.0, solver="saga", max_iter=300)  # saga: ~1 s on 2 cores
    clf.fit(vec.fit_transform(train["text"]), train["category"].map(index).to_numpy())
    assert list(clf.classes_) == list(range(len(labels)))
    proba = clf.predict_proba(vec.transform(test["text"]))
    return {
        "y": test["category"].map(index).to_numpy(),
        "proba": proba,
        "labels": labels,
        "texts": test["text"].tolist(),
    }


@pytest.fixture(scope="module")
def clinc_multi() -> dict:
    """Real multi-label matrix: pairs of CLINC150 utterances concatenated, labels = their intents."""
    raw = json.loads(require(DATA / "clinc150" / "data_full.json").read_text())
    intents = sorted({intent for _, intent in raw["train"]})[:8]
    col = {name: j for j, name in enumerate(intents)}

    def build(split: str, seed: int) -> tuple[list[str], np.ndarray]:
        rows = [(t, col[i]) for t, i in raw[split] if i in col]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(rows))
        texts, y = [], []
        for a, b in zip(order[::2], order[1::2], strict=False):
            (ta, ia), (tb, ib) = rows[a], rows[b]
            single = rng.random() < 0.3
            target = np.zeros(len(intents), dtype=int)
            target[ia] = 1
            if not single:
                target[ib] = 1
            texts.append(ta if single else f"{ta} and also {tb}")
            y.append(target)
        return texts, np.array(y)

    train_x, train_y = build("train", 0)
    val_x, val_y = build("val", 1)
    vec = TfidfVectorizer(sublinear_tf=True)
    clf = OneVsRestClassifier(LogisticRegression(C=0.5, max_iter=300))
    clf.fit(vec.fit_transform(train_x), train_y)
    return {"y": val_y, "proba": clf.predict_proba(vec.transform(val_x)), "labels": intents, "texts": val_x}


# ----------------------------------------------------------------------------- single-label


def test_single_label_metrics_agree_with_sklearn(banking: dict) -> None:
    y, proba, labels = banking["y"], banking["proba"], banking["labels"]
    m = single_label_metrics(y, proba, labels, texts=banking["texts"])
    pred = proba.argmax(axis=1)
    ids = list(range(len(labels)))
    assert m["n"] == len(y)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, labels=ids, average="macro", zero_division=0))
    assert m["micro_f1"] == pytest.approx(f1_score(y, pred, labels=ids, average="micro", zero_division=0))
    weighted = f1_score(y, pred, labels=ids, average="weighted", zero_division=0)
    assert m["weighted_f1"] == pytest.approx(weighted)
    assert 0.5 < m["accuracy"] < 1.0  # a real, imperfect model
    assert set(m["per_class"]) == set(labels)
    assert sum(c["support"] for c in m["per_class"].values()) == len(y)
    json.dumps(m)  # JSON-serialisable


def test_confusion_matrix_sums_and_diagonal(banking: dict) -> None:
    y, proba = banking["y"], banking["proba"]
    m = single_label_metrics(y, proba, banking["labels"])
    cm = np.array(m["confusion_matrix"])
    pred = proba.argmax(axis=1)
    assert cm.shape == (len(banking["labels"]),) * 2
    assert cm.sum() == len(y)
    assert np.trace(cm) == int((pred == y).sum())
    assert (cm.sum(axis=1) == np.bincount(y, minlength=cm.shape[0])).all()  # rows are true labels


def test_ece_extremes(banking: dict) -> None:
    y, k = banking["y"], len(banking["labels"])
    perfect = np.eye(k)[y]
    assert single_label_metrics(y, perfect, banking["labels"])["ece"] == pytest.approx(0.0)
    wrong = np.eye(k)[(y + 1) % k]
    assert single_label_metrics(y, wrong, banking["labels"])["ece"] == pytest.approx(1.0)
    real = single_label_metrics(y, banking["proba"], banking["labels"])["ece"]
    assert 0.0 < real < 0.5


def test_confident_mistakes_are_real_and_sorted(banking: dict) -> None:
    y, proba, labels, texts = banking["y"], banking["proba"], banking["labels"], banking["texts"]
    m = single_label_metrics(y, proba, labels, texts=texts, n_mistakes=15)
    mistakes = m["confident_mistakes"]
    assert 0 < len(mistakes) <= 15
    confidences = [x["confidence"] for x in mistakes]
    assert confidences == sorted(confidences, reverse=True)
    for x in mistakes:
        assert x["true"] != x["predicted"]
        i = x["index"]
        assert x["text"] == texts[i]
        assert labels[y[i]] == x["true"] and labels[proba[i].argmax()] == x["predicted"]
        assert x["confidence"] == pytest.approx(proba[i].max())
    # The most confident mistake overall is first.
    wrong = proba.argmax(axis=1) != y
    assert confidences[0] == pytest.approx(proba.max(axis=1)[wrong].max())
    assert "text" not in single_label_metrics(y, proba, labels)["confident_mistakes"][0]


def test_primary_metric() -> None:
    assert primary_metric("single_label") == "accuracy"
    assert primary_metric("multi_label") == "micro_f1"
    with pytest.raises(ValueError):
        primary_metric("regression")


def test_bad_inputs_raise(banking: dict) -> None:
    with pytest.raises(ValueError, match="no examples"):
        single_label_metrics(np.array([], dtype=int), np.zeros((0, 3)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="proba must be"):
        single_label_metrics(banking["y"], banking["proba"][:, :5], banking["labels"])


# ----------------------------------------------------------------------------- multi-label


def test_multi_label_metrics_agree_with_sklearn(clinc_multi: dict) -> None:
    y, proba, labels = clinc_multi["y"], clinc_multi["proba"], clinc_multi["labels"]
    thresholds = np.full(len(labels), 0.3)
    m = multi_label_metrics(y, proba, thresholds, labels, texts=clinc_multi["texts"])
    pred = (proba >= 0.3).astype(int)
    assert m["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert m["samples_f1"] == pytest.approx(f1_score(y, pred, average="samples", zero_division=0))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, pred))
    for j, name in enumerate(labels):
        c = m["label_confusion"][name]
        assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == len(y)
        assert c["tp"] == int(((pred[:, j] == 1) & (y[:, j] == 1)).sum())
        assert m["per_class"][name]["support"] == int(y[:, j].sum())
    mistakes = m["confident_mistakes"]
    decisions = [x["probability"] if x["predicted"] else 1 - x["probability"] for x in mistakes]
    assert decisions == sorted(decisions, reverse=True)
    for x in m["confident_mistakes"]:
        assert x["truth"] != (x["probability"] >= 0.3)
    assert 0.0 <= m["ece"] <= 1.0
    assert multi_label_metrics(y, y.astype(float), 0.5, labels)["ece"] == pytest.approx(0.0)
    json.dumps(m)


def test_tune_thresholds_never_worse_than_half(clinc_multi: dict) -> None:
    y, proba = clinc_multi["y"], clinc_multi["proba"]
    tuned = tune_thresholds(y, proba)
    assert tuned.shape == (y.shape[1],)
    assert ((tuned >= 0.05 - 1e-9) & (tuned <= 0.95 + 1e-9)).all()
    f1_half = f1_score(y, proba >= 0.5, average=None, zero_division=0)
    f1_tuned = f1_score(y, proba >= tuned, average=None, zero_division=0)
    assert (f1_tuned >= f1_half - 1e-12).all()
    assert f1_tuned.mean() > f1_half.mean()  # under-confident one-vs-rest LR: tuning really helps


def test_tune_thresholds_edge_cases() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    proba = np.array([[0.9, 0.8], [0.1, 0.7], [0.8, 0.2], [0.2, 0.9]])
    tuned = tune_thresholds(y, proba)
    assert tuned[1] == 0.5  # no positives
    assert tuned[0] == 0.5  # every threshold in (0.2, 0.8] is perfect; ties go to the one nearest 0.5
    assert tune_thresholds(y, proba, grid=np.array([0.85, 0.15]))[0] == 0.15  # F1 1.0 beats 0.67


# ----------------------------------------------------------------------------- recommendation


def _models(cand: float, base: float, metric: str = "accuracy") -> dict:
    return {"ensemble": {metric: cand}, "ngram_baseline": {metric: base}}


@pytest.mark.parametrize(
    ("cand", "base", "verdict"),
    [
        (0.855, 0.85, "baseline"),  # +0.5 points
        (0.86, 0.85, "transformer"),  # exactly the 1-point margin
        (0.8599, 0.85, "baseline"),  # just under
        (0.84, 0.85, "baseline"),  # worse
        (0.90, 0.85, "transformer"),
    ],
)
def test_recommend_margin(cand: float, base: float, verdict: str) -> None:
    rec = recommend(_models(cand, base), task="single_label", candidate="ensemble")
    assert rec["verdict"] == verdict
    assert rec["primary_metric"] == "accuracy"
    assert rec["gain_points"] == pytest.approx((cand - base) * 100, abs=1e-6)
    assert f"{base * 100:.1f}%" in rec["message"] and f"{cand * 100:.1f}%" in rec["message"]
    if verdict == "baseline":
        assert "100x cheaper" in rec["message"]
    else:
        assert "earns its place" in rec["message"]


def test_recommend_multi_label_and_custom_margin() -> None:
    models = _models(0.72, 0.70, "micro_f1")
    rec = recommend(models, task="multi_label", candidate="ensemble")
    assert rec["primary_metric"] == "micro_f1" and rec["verdict"] == "transformer"
    strict = recommend(models, task="multi_label", candidate="ensemble", margin_points=3.0)
    assert strict["verdict"] == "baseline"
    with pytest.raises(ValueError):
        recommend(models, task="multi_label", candidate="transformer")


# ----------------------------------------------------------------------------- report files


def _report(banking: dict) -> dict:
    y, proba, labels, texts = banking["y"], banking["proba"], banking["labels"], list(banking["texts"])
    shipped = single_label_metrics(y, proba, labels, texts=texts)
    evil = "<script>alert('x')</script> pay | with\ncard " + "long " * 60
    shipped["confident_mistakes"].insert(
        0, {"text": evil, "true": labels[0], "predicted": labels[1], "confidence": 0.99}
    )
    baseline = single_label_metrics(y, proba**2 / (proba**2).sum(1, keepdims=True), labels)
    models = {"transformer": shipped, "ngram_baseline": baseline, "ensemble": shipped}
    return {
        "title": "Banking <support> model",
        "task": "single_label",
        "created": "2025-01-01T00:00:00+00:00",
        "dataset": {
            "source": "banking77/train.csv",
            "splits": {"train": 2500, "validation": 0, "test": len(y)},
            "warnings": ["3 duplicate texts removed"],
        },
        "models": models,
        "shipped": "ensemble",
        "recommendation": recommend(models, task="single_label", candidate="ensemble"),
        "training": {
            "base_model": "all-MiniLM-L6-v2",
            "wall_time_s": 312.5,
            "examples_per_s": 41.2,
            "epochs_run": 3,
            "best_epoch": 2,
            "stopped_early": True,
            "history": [{"epoch": 1, "train_loss": 2.1, "val_macro_f1": 0.71, "seconds": 100.0}],
        },
        "baseline": {"fit_seconds": 2.4},
        "environment": {
            "load_average": [1.0, 0.5, 0.25],
            "threads": 2,
            "python": "3.12",
            "torch": "2.13.0",
            "transformers": "5.0",
        },
    }


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_write_report_files(banking: dict, tmp_path: Path) -> None:
    report = _report(banking)
    paths = write_report(report, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["confusion.png", "report.html", "report.json", "report.md"]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left

    assert (tmp_path / "out" / "confusion.png").read_bytes()[:8] == PNG_MAGIC
    loaded = json.loads((tmp_path / "out" / "report.json").read_text())
    assert loaded["models"]["ensemble"]["accuracy"] == report["models"]["ensemble"]["accuracy"]

    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Banking &lt;support&gt; model" in page
    assert "data:image/png;base64," in page
    assert report["recommendation"]["message"].split(".")[0] in page

    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("# Banking")
    assert md.index("> ") < md.index("## Models")  # recommendation comes first
    assert "<script>" not in md
    rows = [line for line in md.splitlines() if "alert(" in line]
    assert len(rows) == 1  # newline in the text did not split the row
    header = next(line for line in md.splitlines() if line.startswith("| Text |"))
    assert _unescaped_pipes(rows[0]) == _unescaped_pipes(header)
    assert "pay \\| with card" in rows[0]
    cell = rows[0].split(" | ")[0].lstrip("| ")
    assert len(cell.replace("\\|", "|").replace("&lt;", "<")) <= 160
    # Per-class table: worst F1 first.
    per_class = md.split("## Per-class results")[1].split("##")[0]
    rows = [r for r in per_class.splitlines() if r.startswith("| ")][1:]  # skip the header
    f1s = [float(r.split("|")[4].strip().rstrip("%")) for r in rows]
    assert f1s == sorted(f1s) and len(f1s) == len(banking["labels"])
    assert "3 duplicate texts removed" in md and "all-MiniLM-L6-v2" in md


def test_write_report_tolerates_missing_keys(tmp_path: Path, clinc_multi: dict) -> None:
    names = [p.name for p in write_report({}, tmp_path / "empty")]
    assert names == ["report.json", "report.md", "report.html"]
    y, proba, labels = clinc_multi["y"], clinc_multi["proba"], clinc_multi["labels"]
    m = multi_label_metrics(y, proba, tune_thresholds(y, proba), labels, texts=clinc_multi["texts"])
    report = {"task": "multi_label", "models": {"ensemble": m}, "shipped": "ensemble"}
    paths = write_report(report, tmp_path / "ml")
    assert "confusion.png" not in [p.name for p in paths]
    md = (tmp_path / "ml" / "report.md").read_text()
    assert "Subset accuracy" in md and "Threshold" in md


def test_plot_confusion_many_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, size=(120, 120)) + np.eye(120, dtype=int) * 30
    out = plot_confusion(cm.tolist(), [f"label_{i}" for i in range(120)], tmp_path / "cm.png", "many")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]
