"""The support assistant over HTTP: a real Uvicorn server, the real BANKING77 assistant, a real SQLite log."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from slm.apps.support.conversations import COLUMNS
from tests.conftest import FAQ_ANSWERS
from tests.servers import KEY, error_of, running, serve_once

FAQ_QUESTION = "Do you know what your exchange rates are?"  # a knowledge-base question of exchange_rate (no template)
# (question, context, decision, reason, answer): one per decision path of the assistant.
CASES = {
    "template": ("my new card has not arrived", {"name": "Ana"}, "intent", None,
                 "Cards arrive within 3-5 working days, Ana."),
    "slot_from_context": ("how much was I charged for withdrawing cash", {"amount": 50}, "intent", None,
                          "Withdrawals over 50 cost 2%."),
    "missing_slot_prompt": ("how much was I charged for withdrawing cash", None, "intent", "missing_slot:amount",
                            "How much did you withdraw?"),
    "faq": (FAQ_QUESTION, None, "faq", None, FAQ_ANSWERS["exchange_rate"]),
    "human_only_intent": ("I lost my card", None, "handoff", "intent_requires_human", None),
    "out_of_scope": ("book me a flight to rome", None, "handoff", "out_of_scope", None),
    "unexpected_language": ("Meine Karte ist noch nicht angekommen", None, "handoff", "unsupported_language", None),
}  # fmt: skip
HANDOFFS = [name for name, case in CASES.items() if case[2] == "handoff"]


@pytest.fixture(scope="module")
def reference(assistant_bundle):
    """The same assistant loaded in-process: what every HTTP answer must equal (one question per run)."""
    from slm.apps.support.assistant import Assistant

    return Assistant(assistant_bundle, threads=1)


@pytest.fixture(scope="module")
def served(assistant_bundle, exported, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """An assistant ('help') and a classification bundle ('tiny') in one server; yields its URL and its log."""
    db = tmp_path_factory.mktemp("support-log") / "turns.sqlite"
    with running([("help", assistant_bundle), ("tiny", exported)], support_db=db, max_chars=300,
                 max_body_bytes=8192) as (url, _):  # fmt: skip
        yield url, db


def ask(url: str, question: str, **fields) -> dict:
    response = httpx.post(f"{url}/v1/support/answer", json={"question": question, **fields}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def turns(db: Path, where: str = "1", *params) -> list[dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(row) for row in con.execute(f"SELECT * FROM turns WHERE {where} ORDER BY id", params)]


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize("case", list(CASES))
def test_each_decision_path_over_http(served, reference, case: str) -> None:
    url, db = served
    question, context, decision, reason, answer = CASES[case]
    body = ask(url, question, context=context)
    assert (body["decision"], body["reason"], body["answer"]) == (decision, reason, answer), body["path"]
    assert body["assistant"] == "help" and body["latency_ms"] > 0 and len(body["conversation_id"]) == 32
    local = reference.answer(question, context=context).to_dict()
    assert {k: body[k] for k in local} == local  # the server answers exactly what the bundle does, path included
    if decision == "faq":
        assert body["faq"]["id"].startswith("faq-") and body["faq"]["question"] == FAQ_QUESTION
        assert body["faq"]["similarity"] >= reference.faq_threshold
    else:
        assert body["faq"] is None
    if reason == "intent_requires_human":
        assert body["intent"]["label"] == "lost_or_stolen_card" and body["intent"]["in_scope"]
    if reason == "out_of_scope":
        assert body["intent"]["in_scope"] is False
    [stored] = turns(db, "conversation_id = ?", body["conversation_id"])
    kept = (stored["question"], stored["decision"], stored["reason"], stored["answer"])
    assert kept == (question, decision, reason, answer)
    assert stored["assistant"] == "help" and stored["intent"] == body["intent"]["label"]
    assert stored["confidence"] == pytest.approx(body["intent"]["confidence"])
    assert stored["faq_id"] == (body["faq"] or {}).get("id")
    assert stored["similarity"] == (body["faq"] or {}).get("similarity")


def test_a_conversation_id_is_made_then_kept(served) -> None:
    url, db = served
    first = ask(url, "my new card has not arrived")
    conversation = first["conversation_id"]
    assert len(conversation) == 32 and int(conversation, 16) >= 0  # a uuid4, hex
    second = ask(url, "I lost my card", conversation_id=conversation)
    third = httpx.post(f"{url}/v1/support/help/answer", json={"question": FAQ_QUESTION, "conversation_id":
                                                                conversation}).json()  # fmt: skip
    assert second["conversation_id"] == third["conversation_id"] == conversation
    assert ask(url, "hello")["conversation_id"] != conversation  # a new one each time none is given
    assert ask(url, "hello", conversation_id="ticket-42:web")["conversation_id"] == "ticket-42:web"
    stored = turns(db, "conversation_id = ?", conversation)
    assert [t["question"] for t in stored] == ["my new card has not arrived", "I lost my card", FAQ_QUESTION]
    assert [t["decision"] for t in stored] == ["intent", "handoff", "faq"]
    assert stored[0]["ts"] <= stored[1]["ts"] <= stored[2]["ts"] and stored[0]["ts"].endswith("Z")


def test_concurrent_questions_get_the_answers_they_get_alone(served, reference) -> None:
    url, db = served
    questions = [case[0] for case in CASES.values()] * 3
    with ThreadPoolExecutor(len(questions)) as pool:
        bodies = list(pool.map(lambda q: ask(url, q, conversation_id="burst"), questions))
    for question, body in zip(questions, bodies, strict=True):
        local = reference.answer(question).to_dict()
        assert (body["decision"], body["reason"], body["answer"]) == (local["decision"], local["reason"],
                                                                      local["answer"])  # fmt: skip
    assert sorted(t["question"] for t in turns(db, "conversation_id = 'burst'")) == sorted(questions)


def test_the_log_holds_every_turn_and_lists_the_unanswered(served) -> None:
    url, db = served
    conversation = "log-check"
    for name in CASES:
        question, context = CASES[name][:2]
        ask(url, question, context=context, conversation_id=conversation)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in con.execute("PRAGMA table_info(turns)")]
    assert columns == ["id", *COLUMNS]
    stored = turns(db, "conversation_id = ?", conversation)
    assert [t["question"] for t in stored] == [case[0] for case in CASES.values()]
    assert [t["reason"] for t in stored if t["decision"] == "handoff"] == [CASES[n][3] for n in HANDOFFS]

    listed = httpx.get(f"{url}/v1/support/unanswered", params={"limit": 500}).json()["unanswered"]
    everything = turns(db, "decision = 'handoff'")
    assert [row["id"] for row in listed] == [t["id"] for t in reversed(everything)]  # all of them, newest first
    mine = [row for row in listed if row["conversation_id"] == conversation]
    assert [row["question"] for row in mine] == [CASES[n][0] for n in reversed(HANDOFFS)]
    assert set(mine[0]) == {"id", "ts", "conversation_id", "assistant", "question", "reason", "predicted_intent",
                            "confidence"}  # fmt: skip
    assert mine[-1]["predicted_intent"] == "lost_or_stolen_card" and mine[-1]["reason"] == "intent_requires_human"
    two = httpx.get(f"{url}/v1/support/unanswered", params={"limit": 2}).json()["unanswered"]
    assert two == listed[:2]
    assert httpx.get(f"{url}/v1/support/unanswered", params={"assistant": "other"}).json() == {"unanswered": []}
    for bad in ("0", "1001", "many"):
        assert error_of(httpx.get(f"{url}/v1/support/unanswered", params={"limit": bad}), 422)["code"] == (
            "invalid_request"
        )


def test_the_cli_exports_the_unanswered_questions_to_label(served, tmp_path) -> None:
    url, db = served
    ask(url, "book me a flight to rome", conversation_id="export-check")
    out = tmp_path / "to-label.csv"
    # The server is still running, its log open for writing: the export reads it alongside.
    done = subprocess.run(
        [sys.executable, "-m", "slm", "app", "support", "unanswered", str(db), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["text", "intent", "reason", "conversation_id", "ts"]
    expected = turns(db, "decision = 'handoff'")
    assert [r[0] for r in rows[1:]] == [t["question"] for t in expected]  # oldest first
    assert all(r[1] == "" for r in rows[1:])  # the column to fill in
    assert rows[-1][2:4] == ["out_of_scope", "export-check"] and rows[-1][4] == expected[-1]["ts"]
    assert "to label" in done.stdout

    only = subprocess.run([sys.executable, "-m", "slm", "app", "support", "unanswered", str(db), "-o",
                           str(tmp_path / "none.csv"), "--assistant", "other"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert only.returncode == 0 and (tmp_path / "none.csv").read_text() == "text,intent,reason,conversation_id,ts\n"
    missing = subprocess.run([sys.executable, "-m", "slm", "app", "support", "unanswered", str(tmp_path / "no.db"),
                              "-o", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "no support log" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "no.db").exists() and not (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------- mixed serving, models, metrics


def test_an_assistant_and_a_classifier_in_one_server(served, assistant_bundle, reference) -> None:
    url, _ = served
    listed = httpx.get(f"{url}/v1/models").json()["models"]
    assert [m["name"] for m in listed] == ["tiny", "help"]
    tiny, helper = listed
    assert tiny["task"] == "single_label" and "kind" not in tiny  # the classifier's summary is unchanged
    assert helper["kind"] == helper["task"] == "support_assistant"
    assert helper["intents"] == len(reference.labels) == 10 and helper["faq_entries"] == len(reference.knowledge.kb)
    assert helper["handoff_intents"] == ["lost_or_stolen_card"] and helper["templates"] == 4
    assert str(assistant_bundle) not in json.dumps(listed) and "/tmp" not in json.dumps(listed)  # never a path
    assert httpx.get(f"{url}/v1/models/help").json() == helper
    assert httpx.get(f"{url}/readyz").json()["models"] == ["help", "tiny"]

    predicted = httpx.post(f"{url}/v1/models/tiny/predict", json={"text": "my card has not arrived"})
    assert predicted.status_code == 200 and predicted.json()["predictions"][0]["label"] == "card_arrival"
    wrong = error_of(httpx.post(f"{url}/v1/models/help/predict", json={"text": "hi"}), 404)
    assert "/v1/support/help/answer" in wrong["message"]
    assert error_of(httpx.post(f"{url}/v1/support/tiny/answer", json={"question": "hi"}), 404)["code"] == (
        "unknown_assistant"
    )
    schema = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert "question" in json.dumps(schema["/v1/support/answer"]["post"]["requestBody"])
    assert {"/v1/support/{name}/answer", "/v1/support/unanswered"} <= set(schema)


def test_metrics_count_answers_by_decision_and_handoff_reason(served) -> None:
    url, _ = served
    ask(url, "I lost my card")
    ask(url, FAQ_QUESTION)
    text = httpx.get(f"{url}/metrics").text
    assert 'slm_support_answers_total{assistant="help",decision="handoff",reason="intent_requires_human"}' in text
    assert 'slm_support_answers_total{assistant="help",decision="faq",reason=""}' in text
    assert 'slm_http_requests_total{method="POST",route="/v1/support/answer",status="200"}' in text
    assert 'slm_model_info{backend="onnx",base_model="minilm-l6",labels="10",model="help",task="support_assistant"}' \
        in text  # fmt: skip
    assert 'slm_support_log_failures_total{assistant="help"}' not in text


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("answer", b'{"question": "unterminated', 400, "invalid_json"),
        ("answer", b"", 400, "invalid_json"),
        ("answer", b"{}", 422, "invalid_request"),
        ("answer", b'["a list"]', 422, "invalid_request"),
        ("answer", b'{"question": 5}', 422, "invalid_request"),
        ("answer", b'{"question": "hi", "colour": "red"}', 422, "invalid_request"),
        ("answer", b'{"question": ""}', 422, "empty_text"),
        ("answer", b'{"question": "  \\n "}', 422, "empty_text"),
        ("answer", json.dumps({"question": "my card " * 40}).encode(), 422, "text_too_long"),
        ("answer", b'{"question": "hi", "conversation_id": "has spaces"}', 422, "invalid_request"),
        ("answer", b'{"question": "hi", "conversation_id": ""}', 422, "invalid_request"),
        ("answer", b'{"question": "hi", "context": ["Ana"]}', 422, "invalid_request"),
        ("answer", b'{"question": "hi", "context": {"name": true}}', 422, "invalid_request"),
        ("answer", b'{"question": "hi", "context": {"name": {"first": "Ana"}}}', 422, "invalid_request"),
        ("answer", b'{"question": "hi", "assistant": 3}', 422, "invalid_request"),
        ("answer", b'{"question": "hi", "assistant": "nobody"}', 404, "unknown_assistant"),
        ("answer", b'{"question": "hi", "assistant": "tiny"}', 404, "unknown_assistant"),
        ("nobody/answer", b'{"question": "hi"}', 404, "unknown_assistant"),
        ("help/answer", b'{"question": "hi", "assistant": "tiny"}', 422, "invalid_request"),
        ("answer", json.dumps({"question": "x" * 9000}).encode(), 413, "body_too_large"),
    ],
)
def test_bad_requests_get_a_json_error_and_leave_no_turn(served, path: str, body: bytes, status: int,
                                                         code: str) -> None:  # fmt: skip
    url, db = served
    before = len(turns(db))
    response = httpx.post(f"{url}/v1/support/{path}", content=body, headers={"content-type": "application/json"})
    assert error_of(response, status)["code"] == code
    assert len(turns(db)) == before


def test_several_assistants_need_a_name_and_api_keys_guard_them(assistant_bundle, tmp_path) -> None:
    db = tmp_path / "log.sqlite"
    specs = [("first", assistant_bundle), ("second", assistant_bundle)]
    with running(specs, support_db=db, api_keys=(KEY,)) as (url, _):
        bearer = {"Authorization": f"Bearer {KEY}"}
        for method, path in [("POST", "/v1/support/answer"), ("POST", "/v1/support/first/answer"),
                             ("GET", "/v1/support/unanswered"), ("GET", "/support")]:  # fmt: skip
            denied = httpx.request(method, url + path, json={"question": "hi", "assistant": "first"})
            assert error_of(denied, 401)["code"] == "unauthorized"
        assert httpx.get(url + "/support").headers["www-authenticate"].startswith("Basic")  # the browser prompts
        assert httpx.get(url + "/support", auth=("anyone", KEY)).status_code == 200
        assert turns(db) == []

        unnamed = httpx.post(f"{url}/v1/support/answer", json={"question": "I lost my card"}, headers=bearer)
        assert "first, second" in error_of(unnamed, 422)["message"]
        named = httpx.post(f"{url}/v1/support/answer", json={"question": "I lost my card", "assistant": "second"},
                           headers={"X-API-Key": KEY})  # fmt: skip
        assert named.status_code == 200 and named.json()["assistant"] == "second"
        listed = httpx.get(f"{url}/v1/support/unanswered", headers=bearer).json()["unanswered"]
        assert [(row["assistant"], row["reason"]) for row in listed] == [("second", "intent_requires_human")]
    assert [t["assistant"] for t in turns(db)] == ["second"]


def test_overload_gets_fast_503s_and_only_answered_turns_are_logged(assistant_bundle, tmp_path) -> None:
    db = tmp_path / "log.sqlite"
    with running([("help", assistant_bundle)], support_db=db, workers=1, max_queue=1, max_texts=1) as (url, _):

        def one(i: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/support/help/answer", json={"question": f"my card {i} has not arrived"})

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(one, range(40)))
        codes = [a.status_code for a in answers]
        assert set(codes) == {200, 503}, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert error_of(busy, 503)["code"] == "overloaded" and int(busy.headers["retry-after"]) >= 1
        assert ask(url, "I lost my card")["reason"] == "intent_requires_human"  # recovered
        metrics = httpx.get(f"{url}/metrics").text
        assert f'slm_rejected_requests_total{{model="help",reason="queue_full"}} {codes.count(503)}.0' in metrics
    assert len(turns(db)) == codes.count(200) + 1


def test_the_assistant_is_reloaded_when_replaced(assistant_bundle, tmp_path) -> None:
    served = tmp_path / "bundles" / "help"
    shutil.copytree(assistant_bundle, served, copy_function=os.link)  # cheap copies; the swap below is atomic
    with running([("help", served)], support_db=tmp_path / "log.sqlite", watch=True, watch_interval=0.2) as (url, _):
        before = httpx.get(f"{url}/v1/models/help").json()["loaded_at"]
        time.sleep(1.1)  # loaded_at has one-second resolution
        fresh = tmp_path / "bundles" / "help.new"
        shutil.copytree(assistant_bundle, fresh, copy_function=os.link)
        (fresh / "manifest.json").unlink()
        shutil.copy(assistant_bundle / "manifest.json", fresh / "manifest.json")  # a new manifest file: a new version
        old = tmp_path / "bundles" / "help.old"
        served.rename(old)
        fresh.rename(served)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/models/help").json()["loaded_at"] == before:
            assert time.monotonic() < deadline, "the replaced assistant was not reloaded"
            time.sleep(0.1)
        assert ask(url, "I lost my card")["reason"] == "intent_requires_human"
        assert 'slm_model_reloads_total{model="help",result="ok"} 1.0' in httpx.get(f"{url}/metrics").text


# ---------------------------------------------------------------- startup


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm", "serve", *args, "--port", "0"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def test_startup_refuses_a_log_it_cannot_open_in_one_line(assistant_bundle, exported, tmp_path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database, just some bytes " * 100)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE turns (id INTEGER PRIMARY KEY, text TEXT)")
    cases = [
        (tmp_path / "absent" / "log.sqlite", "does not exist"),
        (tmp_path, "is a folder"),
        (assistant_bundle / "log.sqlite", "inside the bundle"),
        (exported / "log.sqlite", "inside the bundle"),
        (garbage, "not a database"),
        (foreign, "without the columns"),
    ]
    for db, message in cases:
        done = _serve(str(assistant_bundle), f"tiny={exported}", "--support-db", str(db))
        assert done.returncode == 2, (db, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, (db, done.stderr)
    assert not (assistant_bundle / "log.sqlite").exists() and not (exported / "log.sqlite").exists()
    # From the environment too, like every serve option.
    env = {**os.environ, "SLM_SERVE_SUPPORT_DB": str(tmp_path / "absent" / "env.sqlite")}
    done = subprocess.run([sys.executable, "-m", "slm", "serve", str(assistant_bundle), "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2 and "env.sqlite" in done.stderr


def test_without_an_assistant_there_is_no_log_and_no_support_answer(exported, tmp_path) -> None:
    db = tmp_path / "never.sqlite"
    with running([("tiny", exported)], support_db=db) as (url, service):
        assert service.groups == {}  # no app serves a bundle here: no conversation log is opened
        assert error_of(httpx.post(f"{url}/v1/support/answer", json={"question": "hi"}), 404)["code"] == (
            "unknown_assistant"
        )
        assert error_of(httpx.get(f"{url}/v1/support/unanswered"), 404)["code"] == "unknown_assistant"
        assert httpx.get(f"{url}/support").status_code == 200  # the page itself says no assistant is served
    assert not db.exists()


def test_serving_an_assistant_never_imports_torch(assistant_bundle, tmp_path) -> None:
    result = serve_once(assistant_bundle, tmp_path / "log.sqlite", "/v1/support/answer", {"question": "I lost my card"})
    assert result["heavy"] == [] and result["reply"]["reason"] == "intent_requires_human"


def test_an_assistant_with_an_empty_knowledge_base_hands_off_what_it_cannot_template(
    tiny_bundle, banking_csv, support_files, tmp_path
) -> None:
    from slm.apps.support.build import SupportConfig, build_assistant

    header_only = tmp_path / "empty.csv"
    header_only.write_text("question,answer\n")
    out = tmp_path / "no-faq"
    config = SupportConfig(target_accuracy=0.9)
    build_assistant(banking_csv, header_only, output=out, templates=support_files["templates"],
                    intent_bundle=tiny_bundle, config=config, show_progress=False)  # fmt: skip
    with running([("nofaq", out)], support_db=tmp_path / "log.sqlite") as (url, _):
        models = httpx.get(f"{url}/v1/models", timeout=10).json()["models"]
        assert models[0]["faq_entries"] == 0
        no_template = ask(url, "what exchange rate do you use for euros?")
        assert (no_template["decision"], no_template["reason"], no_template["faq"]) == ("handoff", "no_answer", None)
        assert ask(url, "my new card has not arrived")["decision"] == "intent"
        assert ask(url, "book me a flight to rome")["reason"] == "out_of_scope"
