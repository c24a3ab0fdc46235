"""The support assistant: build, decision paths, out-of-scope detection, languages, evaluation, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, FAQ_ANSWERS, banking_frame, require


@pytest.fixture(scope="module")
def assistant(assistant_bundle):
    from slm.apps.support.assistant import Assistant

    return Assistant(assistant_bundle)


def clinc_oos(n: int) -> list[str]:
    data = json.loads(require(DATA / "clinc150" / "data_full.json").read_text())
    return [text for text, _ in data["oos_test"][:n]]


# ------------------------------------------------------------------ decision paths


def test_template_answer_fills_slots_from_defaults_and_context(assistant) -> None:
    plain = assistant.answer("my new card has not arrived yet")
    assert plain.decision == "intent" and plain.intent["label"] == "card_arrival"
    assert plain.answer == "Cards arrive within 3-5 working days, there."
    named = assistant.answer("my new card has not arrived yet", context={"name": "Ana"})
    assert named.answer == "Cards arrive within 3-5 working days, Ana."
    assert any("template" in step for step in named.path)


def test_missing_slot_is_asked_for_and_a_pattern_fills_it(assistant) -> None:
    asked = assistant.answer("how much does it cost to withdraw cash")
    assert asked.intent["label"] == "cash_withdrawal_charge"
    assert (asked.decision, asked.reason) == ("intent", "missing_slot:amount")
    assert asked.answer == "How much did you withdraw?"
    found = assistant.answer("how much does it cost to withdraw cash", context={"amount": "200"})
    assert found.answer == "Withdrawals over 200 cost 2%."


def test_human_only_intent_hands_off(assistant) -> None:
    reply = assistant.answer("I lost my card yesterday")
    assert (reply.decision, reply.reason, reply.answer) == ("handoff", "intent_requires_human", None)
    assert reply.intent["label"] == "lost_or_stolen_card"


def test_intent_without_template_answers_from_the_knowledge_base(assistant) -> None:
    for question, intent in (("what exchange rate do you use for euros?", "exchange_rate"),
                             ("my top up did not go through", "top_up_failed")):  # fmt: skip
        reply = assistant.answer(question)
        assert reply.decision == "faq", reply.path
        assert reply.answer == FAQ_ANSWERS[intent]
        assert reply.faq["id"].startswith("faq-") and reply.faq["similarity"] >= assistant.faq_threshold
        entry = next(e for e in assistant.knowledge.kb.entries if e.id == reply.faq["id"])
        assert entry.intent == intent


def test_out_of_scope_questions_hand_off(assistant) -> None:
    replies = assistant.answer_many(clinc_oos(40))
    handed = [r for r in replies if r.decision == "handoff"]
    assert len(handed) >= 30, [(r.intent, r.path) for r in replies if r.decision != "handoff"]
    assert {r.reason for r in handed} <= {"out_of_scope", "no_answer", "unsupported_language"}
    assert any(r.reason == "out_of_scope" for r in handed)


@pytest.mark.parametrize("question", [
    "Meine Karte ist noch nicht angekommen, was soll ich tun?",
    "¿Dónde está mi tarjeta nueva? No ha llegado todavía",
    "我的新卡还没有到",
    "Моя новая карта ещё не пришла",
])  # fmt: skip
def test_unexpected_language_hands_off_instead_of_guessing(assistant, question) -> None:
    reply = assistant.answer(question)
    assert (reply.decision, reply.reason) == ("handoff", "unsupported_language"), reply.path


def test_in_domain_english_is_never_flagged_as_foreign(assistant) -> None:
    texts = banking_frame("test", per_class=10)["text"].tolist() + ["pin blocked", "top up failed", "exchange rate"]
    flagged = [t for t in texts if assistant.language.check(t) is not None]
    assert flagged == []


def test_blank_questions_are_refused(assistant) -> None:
    from slm.errors import ConfigError

    with pytest.raises(ConfigError):
        assistant.answer_many(["fine", "  "])


# ------------------------------------------------------------------ build


def test_manifest_records_every_step(assistant_bundle) -> None:
    manifest = json.loads((assistant_bundle / "manifest.json").read_text())
    assert manifest["task"] == "support_assistant"
    assert manifest["knowledge_base"]["entries"] == 24  # 25 rows, one exact duplicate dropped
    assert any("exact" in w or "repeat" in w for w in manifest["knowledge_base"]["warnings"])
    assert manifest["scope"]["target_in_scope_accuracy"] == 0.9
    assert manifest["retrieval"]["tuned"] is False and "64" in manifest["retrieval"]["reason"]
    assert 0.3 <= manifest["retrieval"]["faq_threshold"]["value"] <= 1.0
    assert (assistant_bundle / "intent_bundle" / "manifest.json").is_file()
    assert manifest["components"]["intent"]["outputs"] == ["logits", "embedding"]


def test_tampered_bundle_is_refused(assistant_bundle, tmp_path) -> None:
    import shutil

    from slm.apps.support.assistant import Assistant
    from slm.errors import BundleError

    copy = tmp_path / "copy"
    shutil.copytree(assistant_bundle, copy)
    settings = copy / "assistant.json"
    settings.write_text(settings.read_text().replace('"oos"', '"other"'))
    with pytest.raises(BundleError, match="modified"):
        Assistant(copy)


def test_empty_knowledge_base_and_conflicting_questions(tmp_path, tiny_bundle, banking_csv, support_files) -> None:
    from slm.apps.support.assistant import Assistant
    from slm.apps.support.build import SupportConfig, build_assistant

    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\n")
    out = tmp_path / "no-faq"
    manifest = build_assistant(banking_csv, empty, output=out, templates=support_files["templates"],
                               intent_bundle=tiny_bundle, config=SupportConfig(target_accuracy=0.9),
                               show_progress=False)  # fmt: skip
    assert manifest.extra["knowledge_base"]["entries"] == 0 and manifest.components.retriever is None
    assistant = Assistant(out)
    reply = assistant.answer("what exchange rate do you use for euros?")
    assert (reply.decision, reply.reason) == ("handoff", "no_answer")
    assert assistant.answer("my new card has not arrived yet").decision == "intent"


def test_same_question_with_two_answers_keeps_the_first_and_warns(tmp_path) -> None:
    from slm.apps.support.knowledge import read_knowledge_base

    path = tmp_path / "kb.csv"
    questions = ["How do I top up?", "how do i top up? ", "Where is my card?"]
    pd.DataFrame({"question": questions, "answer": ["Use the app.", "Use a bank transfer.", "In the post."]}).to_csv(
        path, index=False
    )
    kb = read_knowledge_base(path)
    assert [e.answer for e in kb.entries] == ["Use the app.", "In the post."]
    assert any("different answer" in w or "same question" in w for w in kb.warnings), kb.warnings


def test_bad_input_is_one_line_and_keeps_the_previous_bundle(tmp_path, assistant_bundle, banking_csv, support_files):
    import shutil

    out = tmp_path / "kept"
    shutil.copytree(assistant_bundle, out)
    before = (out / "manifest.json").read_bytes()
    bad_templates = tmp_path / "templates.json"
    bad_templates.write_text(json.dumps({"no_such_intent": "hello"}))
    cases = [
        ["--intents", str(tmp_path / "missing.csv"), "--knowledge", str(support_files["kb"])],
        ["--intents", str(banking_csv), "--knowledge", str(support_files["kb"]), "--templates", str(bad_templates)],
        ["--intents", str(banking_csv), "--target-accuracy", "1.5"],
    ]
    for args in cases:
        done = subprocess.run([sys.executable, "-m", "slm", "app", "support", "build", *args, "-o", str(out)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and done.stderr.strip().endswith(errors[0]), done.stderr  # warnings may come first
        assert "Traceback" not in done.stderr
    assert (out / "manifest.json").read_bytes() == before


# ------------------------------------------------------------------ scope model


def test_threshold_is_the_highest_that_keeps_the_target() -> None:
    from slm.apps.support.scope import choose_threshold

    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 1], dtype=bool)
    threshold, accuracy = choose_threshold(score, correct, 0.7)
    assert threshold == pytest.approx(0.3) and accuracy == pytest.approx(0.7)
    threshold, accuracy = choose_threshold(score, correct, 0.95)  # unreachable: nothing is rejected
    assert threshold == float("-inf") and accuracy == pytest.approx(0.9)


def test_out_of_scope_validation_examples_choose_the_mix(tmp_path, tiny_bundle, banking_csv) -> None:
    from slm.apps.support.build import SupportConfig, build_assistant

    val = banking_frame("test", per_class=8).rename(columns={"category": "intent"})
    oos = pd.DataFrame({"text": clinc_oos(40), "intent": "oos"})
    path = tmp_path / "val.csv"
    pd.concat([val, oos]).to_csv(path, index=False)
    manifest = build_assistant(banking_csv, None, output=tmp_path / "a", validation=path, intent_bundle=tiny_bundle,
                               config=SupportConfig(target_accuracy=0.85), show_progress=False)  # fmt: skip
    scope = manifest.extra["scope"]
    assert scope["validation_out_of_scope"] == 40 and scope["validation_in_scope"] == 80
    assert len(scope["weight_auroc"]) == 11 and max(scope["weight_auroc"].values()) > 0.8
    assert scope["validation_in_scope_accuracy"] >= 0.85
    assert scope["validation_oos_recall"] > 0.5


# ------------------------------------------------------------------ evaluation and CLI


def test_evaluation_reports_intents_oos_and_retrieval(assistant, tmp_path) -> None:
    from slm.apps.support.report import evaluation_report

    test = banking_frame("test", per_class=6).rename(columns={"category": "intent"})
    intents = tmp_path / "test.csv"
    pd.concat([test, pd.DataFrame({"text": clinc_oos(30), "intent": "oos"})]).to_csv(intents, index=False)
    by_intent: dict[str, list[str]] = {}
    for entry in assistant.knowledge.kb.entries:
        by_intent.setdefault(entry.intent, []).append(entry.id)
    pool = pd.read_csv(require(DATA / "banking77" / "test.csv"))
    rows = [{"question": q, "id": "|".join(ids)} for intent, ids in by_intent.items()
            for q in pool[pool["category"] == intent]["text"].head(5)]  # fmt: skip
    queries = tmp_path / "queries.csv"
    pd.DataFrame(rows).to_csv(queries, index=False)
    report = evaluation_report(assistant, intents=intents, queries=queries, output=tmp_path / "report")
    scope = report["intents"]
    assert scope["in_scope"] == 60 and scope["out_of_scope"] == 30
    assert 0.0 <= scope["oos_recall"] <= 1.0 and scope["oos_precision"] is not None
    assert (tmp_path / "report" / "tradeoff.png").stat().st_size > 1000
    retrieval = report["retrieval"]
    assert set(retrieval) == {"assistant_hybrid", "retriever_dense", "bm25"}
    assert retrieval["assistant_hybrid"]["recall_at_5"] >= retrieval["assistant_hybrid"]["recall_at_1"] > 0.5
    assert json.loads((tmp_path / "report" / "report.json").read_text())["retrieval"]["bm25"]["queries"] == 15


def test_cli_ask_prints_json_replies(assistant_bundle) -> None:
    done = subprocess.run([sys.executable, "-m", "slm", "app", "support", "ask", str(assistant_bundle), "--json",
                           "I lost my card yesterday", "what exchange rate do you use for euros?"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["decision"] for r in replies] == ["handoff", "faq"]
    assert replies[1]["faq"]["id"].startswith("faq-")


def test_answering_needs_no_torch_transformers_sklearn_or_pandas(assistant_bundle) -> None:
    script = (
        "import sys; from slm.apps.support.assistant import Assistant; "
        f"a = Assistant({str(assistant_bundle)!r}); r = a.answer('what exchange rate do you use for euros?'); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'sklearn', 'pandas') if m in sys.modules); "
        "print(r.decision, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["faq", "[]"]


@pytest.mark.slow(reason="trains a model: the assistant's intent classifier")
def test_an_explicit_out_of_scope_class_is_trained_when_examples_exist(tmp_path, banking_csv) -> None:
    from slm.apps.support.assistant import Assistant
    from slm.apps.support.build import SupportConfig, build_assistant
    from slm.training.config import TrainConfig
    from tests.conftest import TINY_CONFIG

    data = json.loads(require(DATA / "clinc150" / "data_full.json").read_text())
    intents = pd.read_csv(banking_csv).rename(columns={"category": "intent"})
    oos = pd.DataFrame({"text": [t for t, _ in data["oos_train"][:40]], "intent": "oos"})
    path = tmp_path / "intents.csv"
    pd.concat([intents, oos]).to_csv(path, index=False)
    manifest = build_assistant(path, None, output=tmp_path / "a", config=SupportConfig(target_accuracy=0.8),
                               train_config=TrainConfig(**TINY_CONFIG), show_progress=False)  # fmt: skip
    assert "oos" in (manifest.labels or [])
    assistant = Assistant(tmp_path / "a")
    scored = assistant.classify(clinc_oos(30))
    assert (~scored["in_scope"]).mean() >= 0.6  # the class and the threshold together reject most
    oos_index = assistant.labels.index("oos")
    assert not scored["in_scope"][scored["predicted"] == oos_index].any()  # predicting the class is a rejection
