"""The robustness report: perturbations, slice metrics, the report section, and a model that measurably breaks.

Perturbations are checked on real BANKING77 and waimai_10k texts where their effect is statistical (typo
rate) and on hand-written texts where it is exact. The acceptance check (issue 26, 5): the n-gram baseline,
fitted in seconds on a BANKING77 slice, loses accuracy under typos on the real test texts while casing costs
it nothing (it lowercases).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

import slm
from slm.models.ngram import NgramClassifier
from slm.models.ngram import settings_for as ngram_settings
from slm.reports.perturbations import (
    ALPHABETIC,
    HAN,
    PERTURBATIONS,
    perturb,
    perturbations_for,
    text_script,
)
from slm.reports.robustness import (
    frequency_buckets,
    length_buckets,
    robustness_report,
    summary,
    token_limit_buckets,
)
from tests.conftest import DATA, require


@pytest.fixture(scope="module")
def banking_test() -> pd.DataFrame:
    return pd.read_csv(require(DATA / "banking77" / "test.csv"))


@pytest.fixture(scope="module")
def waimai_texts() -> list[str]:
    frame = pd.read_csv(require(DATA / "waimai_10k" / "waimai_10k.csv"))
    return frame["review"].astype(str).sample(400, random_state=0).tolist()


# ---------------------------------------------------------------- perturbations


@pytest.mark.parametrize("name", sorted(set(PERTURBATIONS) - {"traditional"}))
def test_every_perturbation_is_deterministic_with_a_seed(name, banking_test, waimai_texts):
    texts = banking_test["text"].head(200).tolist() + waimai_texts[:200]
    assert perturb(texts, name, seed=3) == perturb(texts, name, seed=3)


def test_a_seeded_perturbation_is_the_same_on_every_machine():
    # text i draws from random.Random(f"{seed}:{name}:{i}"), which hashes the string with SHA-512: pinned here
    text = "I would like to know how to activate my new card before travelling abroad next week"
    assert perturb([text], "typos", seed=0) == [
        "I would like to know how to activate my ne card before travelling abraod next week"
    ]


@pytest.mark.parametrize("name", ["typos", "whitespace"])
def test_random_perturbations_change_with_the_seed(name, banking_test):
    texts = banking_test["text"].head(200).tolist()
    assert perturb(texts, name, seed=1) != perturb(texts, name, seed=2)


def _one_slip(clean: str, typed: str) -> bool:
    """Whether ``typed`` is ``clean`` with two adjacent letters swapped, one dropped or one doubled."""
    if len(typed) == len(clean) - 1:
        return any(clean[:i] + clean[i + 1 :] == typed for i in range(len(clean)))
    if len(typed) == len(clean) + 1:
        return any(clean[: i + 1] + clean[i] + clean[i + 1 :] == typed for i in range(len(clean)))
    diff = [i for i in range(len(clean)) if clean[i] != typed[i]] if len(typed) == len(clean) else []
    return len(diff) == 2 and diff[1] == diff[0] + 1 and clean[diff[0]] == typed[diff[1]]


def test_typos_slip_one_letter_in_about_one_word_in_ten(banking_test):
    texts = banking_test["text"].tolist()
    typed = perturb(texts, "typos", seed=0)
    words = changed = 0
    for clean, noisy in zip(texts, typed, strict=True):
        # digits, punctuation and spaces are left alone: the same skeleton around the words
        assert re.sub(r"[^\W\d_]+", "w", clean) == re.sub(r"[^\W\d_]+", "w", noisy)
        pairs = list(zip(re.findall(r"[^\W\d_]+", clean), re.findall(r"[^\W\d_]+", noisy), strict=True))
        for a, b in pairs:
            if len(a) >= 3:
                words += 1
            if a != b:
                changed += 1
                assert len(a) >= 3 and _one_slip(a, b), (a, b)
    assert 0.08 <= changed / words <= 0.12  # TYPO_RATE 0.1 over ~30,000 words


def test_typos_leave_ideographs_alone(waimai_texts):
    only_han = [t for t in waimai_texts if not re.search(r"[A-Za-z]", t)]
    assert len(only_han) > 300
    assert perturb(only_han, "typos", seed=0) == only_han


def test_casing_and_punctuation():
    text = "Why was my card declined at the ATM? It's the 2nd time, $50 lost!"
    assert perturb([text], "lowercase", 0) == [text.lower()]
    assert perturb([text], "uppercase", 0) == [text.upper()]
    assert perturb([text], "no_punctuation", 0) == ["Why was my card declined at the ATM Its the 2nd time $50 lost"]
    # CJK and full-width punctuation goes too; ideographs and digits stay
    assert perturb(["送餐很快，味道不错！（给5星）"], "no_punctuation", 0) == ["送餐很快味道不错给5星"]


def test_whitespace_noise_keeps_the_words(banking_test, waimai_texts):
    texts = banking_test["text"].head(300).tolist()
    noisy = perturb(texts, "whitespace", seed=0)
    assert all(a.split() == b.split() for a, b in zip(texts, noisy, strict=True))
    assert sum(a != b for a, b in zip(texts, noisy, strict=True)) > 200
    assert any("\t" in t for t in noisy) and any("\n" in t for t in noisy) and any("  " in t for t in noisy)
    spaced = perturb(waimai_texts, "whitespace", seed=0)
    assert [re.sub(r"\s", "", t) for t in spaced] == [re.sub(r"\s", "", t) for t in waimai_texts]
    assert sum(t.count(" ") > u.count(" ") for t, u in zip(spaced, waimai_texts, strict=True)) > 250  # 289 of 400


def test_chinese_width_forms():
    assert perturb(["价格１２元，很好！ＯＫ\u3000吗？"], "halfwidth", 0) == ["价格12元,很好!OK 吗?"]
    assert perturb(["送了2瓶可乐, OK!"], "fullwidth", 0) == ["送了２瓶可乐，\u3000ＯＫ！"]
    ascii_text = "Top up 20 GBP, (pending) #3 ~ok?"
    assert perturb(perturb([ascii_text], "fullwidth", 0), "halfwidth", 0) == [ascii_text]
    assert perturb(["没有送水"], "fullwidth", 0) == ["没有送水"]  # ideographs have one width


def test_simplified_to_traditional():
    pytest.importorskip("opencc", reason="the opencc package (slm[train]) is not installed")
    assert perturb(["这家外卖很好吃，汉字简体转换为繁体。"], "traditional", 0) == [
        "這家外賣很好吃，漢字簡體轉換為繁體。"
    ]
    english = "Where is my card? 123"
    assert perturb([english], "traditional", 0) == [english]


def test_the_perturbations_follow_the_script(banking_test, waimai_texts):
    assert text_script(banking_test["text"].tolist()) == ALPHABETIC
    assert text_script(waimai_texts) == HAN
    assert perturbations_for(ALPHABETIC) == ["typos", "lowercase", "uppercase", "no_punctuation", "whitespace"]
    assert perturbations_for(HAN) == ["halfwidth", "fullwidth", "traditional", "no_punctuation", "whitespace"]
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(["x"], "leetspeak", 0)


# ---------------------------------------------------------------- slices


def test_length_and_label_frequency_buckets_on_a_known_input():
    texts = ["a" * n for n in (1, 2, 3, 4, 5, 6, 7, 8)]
    buckets = length_buckets(texts)
    assert [(name, rows.tolist()) for name, rows in buckets] == [
        ("1–2 chars", [0, 1]),
        ("3–4 chars", [2, 3]),
        ("5–6 chars", [4, 5]),
        ("7–8 chars", [6, 7]),
    ]
    assert [rows.tolist() for _, rows in length_buckets(["same"] * 5)] == [[0, 1, 2, 3, 4]]  # ties stay together
    labels = ["a", "b", "c", "d"]
    freq = frequency_buckets({"a": 10, "b": 5, "c": 1, "d": 7}, labels)
    assert [(name.split(":")[0], members) for name, members in freq] == [
        ("head", [0, 3]),
        ("middle", [1]),
        ("tail", [2]),
    ]
    assert frequency_buckets({"a": 3, "b": 3}, ["a", "b"]) == []  # balanced: nothing to compare


def _rule(texts: list[str]) -> dict[str, np.ndarray]:
    """A case-sensitive keyword rule as the model under report: label 1 when 'Card' appears, else 0."""
    proba = np.array([[0.0, 1.0] if "Card" in t else [1.0, 0.0] for t in texts])
    return {"rule": proba}


def test_robustness_report_on_a_known_input():
    texts = ["Card", "Card lost", "my Card is gone", "hello", "Card declined again", "nothing here at all"]
    targets = np.array([1, 1, 1, 0, 0, 0])  # the rule gets 5 of 6: "Card declined again" is labelled 0
    report = robustness_report(
        texts, targets, _rule(texts), _rule, task="single_label", labels=["other", "card"],
        label_counts={"other": 30, "card": 10}, seed=0,
    )  # fmt: skip
    rule = report["models"]["rule"]
    assert report["metric"] == "accuracy" and report["sample"] == {"n": 6, "of": 6, "seed": 0}
    assert rule["overall"] == rule["clean"] == pytest.approx(5 / 6)
    # upper case hides "Card" from the rule: every card text is missed, and the mislabelled one becomes right
    assert rule["perturbations"]["uppercase"] == {
        "score": pytest.approx(3 / 6), "drop_points": 33.33, "broken": 3, "fixed": 1
    }  # fmt: skip
    assert rule["perturbations"]["lowercase"]["drop_points"] == 33.33
    assert rule["perturbations"]["no_punctuation"]["drop_points"] == 0.0
    assert rule["worst_perturbation"] == {"name": "lowercase", "drop_points": 33.33}
    assert report["perturbations"]["uppercase"]["changed"] == 6
    frequency = {s["name"].split(":")[0]: s for s in rule["slices"]["label_frequency"]}
    assert frequency["head"]["n"] == 3 and frequency["head"]["score"] == pytest.approx(2 / 3)  # label "other"
    assert frequency["tail"]["gap_points"] == pytest.approx(100 * (1 - 5 / 6), abs=0.01)  # label "card": 3 of 3
    lengths = rule["slices"]["length"]
    assert sum(s["n"] for s in lengths) == 6 and [s["n"] for s in lengths] == [2, 1, 1, 2]
    assert rule["worst_slices"] == []  # every slice is under MIN_SLICE texts: none is listed
    assert summary(report) == {"metric": "accuracy", "sample": 6, "rule": {"name": "lowercase", "drop_points": 33.33}}


def test_texts_over_the_token_limit_are_a_slice_of_their_own():
    texts = ["Card", "Card lost", "my Card is gone", "hello", "Card declined again", "nothing here at all"]
    targets = np.array([1, 1, 1, 0, 0, 0])  # the rule misses only "Card declined again"
    over = np.array([False, False, True, False, True, True])
    report = robustness_report(
        texts, targets, _rule(texts), _rule, task="single_label", labels=["other", "card"], seed=0,
        over_limit=over, token_limit=3,
    )  # fmt: skip
    within, beyond = report["models"]["rule"]["slices"]["tokens"]
    assert (within["name"], within["n"], within["score"]) == ("at most 3 tokens (read whole)", 3, 1.0)
    assert (beyond["name"], beyond["n"]) == ("over 3 tokens (cut to the first 3)", 3)
    assert beyond["score"] == pytest.approx(2 / 3) and beyond["gap_points"] == pytest.approx(-16.67, abs=0.01)
    # no text over the limit (or no limit known): no such slices, the other kinds unchanged
    for mask, limit in ((np.zeros(6, dtype=bool), 3), (over, None), (None, 3)):
        assert token_limit_buckets(mask, limit) == []
        plain = robustness_report(
            texts, targets, _rule(texts), _rule, task="single_label", labels=["other", "card"], seed=0,
            over_limit=mask, token_limit=limit,
        )  # fmt: skip
        assert set(plain["models"]["rule"]["slices"]) == {"length", "label_frequency"}


def test_the_runtime_and_training_tokenizers_mark_the_same_texts_over_the_limit(untrained_exported: Path):
    """The evaluation (tokenizers, no PyTorch) and the training run (transformers) cut at the same text."""
    from slm.bundle.manifest import read_manifest
    from slm.training.batching import load_tokenizer
    from slm.training.robustness import over_token_limit

    model = slm.load(untrained_exported)
    manifest = read_manifest(untrained_exported)
    limit = manifest.components.onnx.max_length
    # [CLS] + one token a word + [SEP]: limit - 2 words fill the limit exactly, one more word is cut
    texts = ["hello", "card " * (limit - 2), "card " * (limit - 1), "card " * 5000]
    over, found = model.over_token_limit(texts)
    assert found == limit and over.tolist() == [False, False, True, True]
    tokenizer, _ = load_tokenizer(untrained_exported / manifest.components.transformer.tokenizer)
    assert over_token_limit(tokenizer, texts, limit).tolist() == over.tolist()


def test_multi_label_robustness_uses_micro_f1():
    texts = ["Card and PIN", "PIN", "Card", "nothing"]
    targets = np.array([[1, 1], [0, 1], [1, 0], [0, 0]])

    def rule(batch: list[str]) -> dict[str, np.ndarray]:
        return {"rule": np.array([[float("Card" in t), float("PIN" in t)] for t in batch])}

    report = robustness_report(
        texts, targets, rule(texts), rule, task="multi_label", labels=["card", "pin"],
        thresholds={"rule": [0.5, 0.5]}, seed=0,
    )  # fmt: skip
    model = report["models"]["rule"]
    assert report["metric"] == "micro_f1" and model["clean"] == 1.0
    assert model["perturbations"]["lowercase"]["score"] == 0.0  # nothing predicted: no true positive
    assert report["label_counts_source"] == "evaluation set"
    assert report["notes"] == ["label-frequency slices left out: every label has the same count (evaluation set)"]


# ---------------------------------------------------------------- the report files


def test_evaluation_report_has_the_robustness_section(untrained_exported: Path, banking_test_csv: Path, tmp_path):
    report = slm.evaluate(untrained_exported, banking_test_csv, output=tmp_path / "eval")
    section = report["robustness"]
    assert set(section["models"]) == {"transformer", "ngram_baseline"}  # the shipped model and the baseline
    assert list(section["perturbations"]) == perturbations_for(ALPHABETIC)
    assert section["sample"]["n"] == 120 and section["label_counts_source"] == "evaluation set"
    for model in section["models"].values():
        assert set(model["perturbations"]) == set(section["perturbations"])
        assert len(model["slices"]["length"]) == 4
    written = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert written["robustness"]["models"]["ngram_baseline"]["clean"] == pytest.approx(
        section["models"]["ngram_baseline"]["clean"]
    )
    markdown = (tmp_path / "eval" / "report.md").read_text()
    for heading in ("## Robustness", "### Slices", "### Worst slices"):
        assert heading in markdown
    assert (
        "| Perturbation | Texts changed | transformer accuracy | transformer drop | ngram_baseline accuracy" in markdown
    )
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "<h2>Robustness</h2>" in html and "<h3>Worst slices</h3>" in html and "Length: " in html

    # texts longer than the transformer reads (this bundle: 48 tokens) get their own slices, in the files too
    frame = pd.read_csv(banking_test_csv)
    frame.loc[::3, "text"] = frame.loc[::3, "text"] * 10
    long_csv = tmp_path / "long.csv"
    frame.to_csv(long_csv, index=False)
    long = slm.evaluate(untrained_exported, long_csv, output=tmp_path / "eval-long")["robustness"]
    within, cut = long["models"]["ngram_baseline"]["slices"]["tokens"]
    over, limit = slm.load(untrained_exported).over_token_limit(frame["text"].tolist())
    assert cut["name"] == f"over {limit} tokens (cut to the first {limit})"
    assert cut["n"] == over.sum() >= len(frame.loc[::3]) and within["n"] + cut["n"] == len(frame)
    assert "| Transformer input: over 48 tokens" in (tmp_path / "eval-long" / "report.md").read_text()

    plain = slm.evaluate(untrained_exported, banking_test_csv, robustness=False)
    assert "robustness" not in plain


# ---------------------------------------------------------------- acceptance: a model that measurably breaks


def test_ngram_baseline_loses_accuracy_under_typos_but_not_under_casing(banking_test):
    """Issue 26, acceptance 5: a perturbation-sensitive model shows a measurable drop in the report."""
    train = pd.read_csv(require(DATA / "banking77" / "train.csv"))
    train = train.sample(frac=1.0, random_state=0).groupby("category").head(10)  # 770 texts: ~2 s to fit
    labels = sorted(train["category"].unique())
    index = {name: i for i, name in enumerate(labels)}
    model = NgramClassifier(seed=0, **ngram_settings(train["text"].tolist()))
    model.fit(train["text"].tolist(), train["category"].map(index).to_numpy(), n_classes=len(labels))
    texts, targets = banking_test["text"].tolist(), banking_test["category"].map(index).to_numpy()

    def predict(batch: list[str]) -> dict[str, np.ndarray]:
        return {"ngram_baseline": model.predict_proba(batch)}

    report = robustness_report(
        texts, targets, predict(texts), predict, task="single_label", labels=labels, seed=0,
        sample_size=len(texts), perturbations=["typos", "lowercase", "uppercase"],
    )  # fmt: skip
    assert list(report["perturbations"]) == ["typos", "lowercase", "uppercase"]
    scores = report["models"]["ngram_baseline"]["perturbations"]
    typos = scores["typos"]
    assert typos["drop_points"] >= 1.0  # measured 1.8 points on the 3,080 test texts
    # beyond noise: far more texts go from right to wrong under typos than the other way (paired sign test)
    assert binomtest(typos["broken"], typos["broken"] + typos["fixed"], 0.5, alternative="greater").pvalue < 1e-3
    # casing costs it nothing: the n-gram features are lowercased, so not one prediction changes
    for casing in ("lowercase", "uppercase"):
        assert scores[casing] == {"score": scores[casing]["score"], "drop_points": 0.0, "broken": 0, "fixed": 0}


def test_a_training_run_reports_robustness_and_keeps_its_summary(tiny_bundle: Path, banking_test_csv: Path):
    """slow (trains, through tiny_bundle): the training report's section, and the manifest's short form."""
    report = json.loads((tiny_bundle / "report" / "report.json").read_text())
    section = report["robustness"]
    shipped = report["shipped"]
    assert set(section["models"]) == {shipped, "ngram_baseline"}
    assert section["label_counts_source"] == "training" and section["sample"] == {"n": 120, "of": 120, "seed": 7}
    # the slice every model is scored on adds up to the evaluation split, and "overall" is the report's figure
    for name, model in section["models"].items():
        assert sum(s["n"] for s in model["slices"]["length"]) == 120
        assert model["overall"] == pytest.approx(report["models"][name]["accuracy"])
    assert "## Robustness" in (tiny_bundle / "report" / "report.md").read_text()
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["metrics"]["robustness"] == summary(section)
    # slm evaluate reads the training label counts the manifest records
    evaluated = slm.evaluate(tiny_bundle, banking_test_csv)["robustness"]
    assert evaluated["label_counts_source"] == "training (drift reference)"
    for name in section["models"]:
        assert evaluated["models"][name]["perturbations"] == section["models"][name]["perturbations"]
