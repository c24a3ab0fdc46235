"""Redaction where text is kept: the feedback store (server and import), the support log, training data read
with ``redact``. Each case also runs with redaction off, to show the scan would catch a leak."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pandas as pd
import pytest

from slm.feedback import FeedbackStore
from slm.pipeline import DataSource
from slm.privacy import Redactor
from tests.pii import PLANTED, leaks, sentences
from tests.servers import running
from tests.test_cli import slm


@pytest.mark.parametrize("redact", [True, False])
def test_feedback_texts_notes_and_user_ids_are_stored_redacted(untrained_exported, tmp_path, redact):
    db = tmp_path / "feedback.sqlite"
    settings = {"feedback_db": str(db), "redact_stored": redact, "feedback_recall_seconds": 1.0}
    with running([("tiny", untrained_exported)], **settings) as (url, _):
        texts = sentences()
        answer = httpx.post(f"{url}/v1/models/tiny/predict", json={"texts": texts[:2]}).json()
        by_id = {"id": "fb-2", "request_id": answer["request_id"], "index": 1, "label": "card_arrival",
                 "note": texts[4]}  # fmt: skip
        assert httpx.post(f"{url}/v1/models/tiny/feedback", json=by_id).status_code == 201
        body = {"id": "fb-1", "text": texts[2], "label": "card_arrival", "note": texts[3],
                "user_id": PLANTED["EMAIL"]}  # fmt: skip
        first = httpx.post(f"{url}/v1/models/tiny/feedback", json=body)
        again = httpx.post(f"{url}/v1/models/tiny/feedback", json=body)  # a retry: the same content, redacted
        assert first.status_code == 201 and again.status_code == 200 and again.json()["duplicate"] is True
        time.sleep(1.5)  # the request is no longer recalled: a retry by id is compared with the stored row
        retry = httpx.post(f"{url}/v1/models/tiny/feedback", json=by_id)
        assert retry.status_code == 200 and retry.json()["duplicate"] is True, retry.text
    found = leaks([tmp_path])
    if redact:
        assert found == []
        store = FeedbackStore.open(f"sqlite:///{db}")
        row = store.get("fb-1")
        store.close()
        assert row is not None and "<IBAN>" in row["text"] and "<IP>" in row["note"] and row["user_id"] == "<EMAIL>"
    else:
        assert any("IBAN" in place for place in found) and any("PHONE" in place for place in found)


@pytest.mark.parametrize("redact", [True, False])
def test_feedback_import_redacts_unless_told_not_to(tmp_path, redact):
    source = tmp_path / "corrections.csv"
    pd.DataFrame({"text": sentences(), "label": "card_arrival"}).to_csv(source, index=False)
    db = tmp_path / "db" / "feedback.sqlite"
    db.parent.mkdir()
    flags = [] if redact else ["--no-redact"]
    proc = slm("feedback", "import", source, "--db", db, "--model", "tiny", *flags)
    assert proc.returncode == 0, proc.stderr
    found = leaks([db.parent])
    assert (found == []) is redact, found


@pytest.mark.parametrize("redact", [True, False])
def test_the_support_log_stores_questions_answers_and_conversation_ids_redacted(tmp_path, redact):
    from slm.apps.support.conversations import ConversationLog, Turn, utc_now

    path = tmp_path / "support.sqlite"
    log = ConversationLog.open(path, redactor=Redactor() if redact else None)
    texts = sentences()
    log.record([Turn(utc_now(), PLANTED["EMAIL"], "bank", text, "intent", None, "card_arrival", 0.9, None, None,
                     f"Cards arrive soon, {PLANTED['PHONE']}") for text in texts])  # fmt: skip
    log.close()
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT question, answer, conversation_id FROM turns").fetchall()
    assert len(stored) == len(texts)
    found = leaks([tmp_path])
    assert (found == []) is redact, found
    if redact:
        assert stored[0] == ("my card <CARD> was charged twice, mail me at <EMAIL>", "Cards arrive soon, <PHONE>",
                             "<EMAIL>")  # fmt: skip


def test_training_data_read_with_redact_holds_placeholders_only(tmp_path):
    path = tmp_path / "train.csv"
    texts = sentences() * 2  # the repeats make the data report quote a duplicate text
    pd.DataFrame({"text": texts, "label": ["a", "b"] * len(sentences())}).to_csv(path, index=False)
    plain, plain_report = DataSource(path).load()
    ds, report = DataSource(path, redact=True).load()
    assert ds.labels == plain.labels and len(ds.texts) == len(plain.texts)
    assert leaks([], *plain.texts) and leaks([], *plain_report.warnings)  # the scan sees them unredacted
    assert leaks([], *ds.texts, *report.warnings) == []
    assert "<CARD>" in ds.texts[0] and "<CN_ID>" in ds.texts[4]
