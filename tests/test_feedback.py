"""Feedback on predictions: the endpoint (auth, bad bodies, idempotency, recall by request id, new labels), the
store on SQLite and on a real PostgreSQL server, retention, and ``slm feedback import|export``.

Servers run the kept untrained tiny bundle (``untrained_exported``): its labels are meaningless but real, which
is all feedback needs. PostgreSQL comes from SLM_TEST_POSTGRES_URL (``.ci/postgres`` starts one), each test in
a schema of its own; without a reachable server those cases skip, or fail under SLM_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slm.errors import ConfigError, DataError
from slm.feedback import FeedbackStore, read_feedback
from slm.serving.recall import ENTRY_OVERHEAD, RecentPredictions
from tests.conftest import DATA, require
from tests.servers import KEY, error_of, running
from tests.test_cli import assert_one_line_error, slm
from tests.test_install import NOT_IN_CORE, run_cli
from tests.test_monitor_storage import _postgres_url

DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """An empty feedback database of each kind (PostgreSQL: a fresh schema, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedback.sqlite'}"
        return
    import sqlalchemy as sa

    base = _postgres_url()
    schema = f"feedback_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield (
            sa.engine.make_url(base)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def banking_rows(n: int) -> list[tuple[str, str]]:
    """``n`` (text, intent) rows of the BANKING77 test split, every 37th (it is sorted by intent)."""
    with require(DATA / "banking77" / "test.csv").open(encoding="utf-8") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle)]
    return rows[::37][:n]


class Heard:
    """An observer that records the feedback the server reports (as the drift signals would count it)."""

    def __init__(self) -> None:
        self.corrections: list[tuple[str, str | None, bool | None]] = []

    def predicted(self, *args) -> None:
        pass

    def corrected(self, model: str, version: str | None, correct: bool | None) -> None:
        self.corrections.append((model, version, correct))


# ---------------------------------------------------------------- the store


def test_the_store_is_idempotent_filters_expires_and_reads_in_chunks(db_url):
    store = FeedbackStore.open(db_url)
    try:
        now = time.time()
        rows = [{"id": f"r{i}", "model": "tiny" if i % 3 else "other", "text": text, "label": label,
                 "predicted": "card_arrival", "verdict": "correct" if label == "card_arrival" else "wrong",
                 "created_at": now - i * DAY} for i, (text, label) in enumerate(banking_rows(30))]  # fmt: skip
        first = store.add_many(rows)
        again = store.add_many([*rows[:5], {**rows[5], "label": "not_an_intent", "verdict": "wrong"}])
        assert (first.inserted, first.duplicates, first.conflicts) == (30, 0, 0)
        assert (again.inserted, again.duplicates, again.conflicts, again.conflict_ids) == (0, 5, 1, ("r5",))
        assert store.count() == 30 and store.count(model="tiny") == 20 and store.count(since=now - 9.5 * DAY) == 10
        rate = store.error_rate("tiny")
        assert rate.wrong + rate.correct == 20 and rate.rate == pytest.approx(rate.wrong / 20)
        chunks = list(store.chunks(model="tiny", size=7))
        assert [len(c) for c in chunks] == [7, 7, 6]
        times = [row["created_at"] for chunk in chunks for row in chunk]
        assert times == sorted(times) and len({row["id"] for chunk in chunks for row in chunk}) == 20
        assert store.purge(14.5 * DAY) == 15 and store.count() == 15
        records = read_feedback(db_url, model="tiny")
        assert {r.id for r in records} == {f"r{i}" for i in range(15) if i % 3}
        assert all(r.model == "tiny" and r.label for r in records)
    finally:
        store.close()


# ---------------------------------------------------------------- the endpoint


@pytest.fixture(scope="module")
def server(untrained_exported, tmp_path_factory) -> Iterator[tuple[str, Path, Heard]]:
    db = tmp_path_factory.mktemp("feedback") / "feedback.sqlite"
    with running([("tiny", untrained_exported)], max_chars=300, feedback_db=str(db)) as (url, service):
        heard = Heard()
        service.observers.add(heard)
        yield url, db, heard


def predict(url: str, texts: list[str]) -> dict:
    answer = httpx.post(f"{url}/v1/models/tiny/predict", json={"texts": texts})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_feedback_by_request_id_is_stored_once_and_a_new_label_is_welcome(untrained_exported, db_url):
    texts = [text for text, _ in banking_rows(3)]
    with running([("tiny", untrained_exported)], feedback_db=db_url) as (url, service):
        heard = Heard()
        service.observers.add(heard)
        answer = predict(url, texts)
        given = answer["predictions"][1]["label"]
        body = {"id": "client-1", "request_id": answer["request_id"], "index": 1, "label": "card_delivery_estimate",
                "user_id": "agent-7", "note": "a new intent"}  # fmt: skip
        stored = httpx.post(f"{url}/v1/models/tiny/feedback", json=body)
        assert stored.status_code == 201, stored.text
        assert stored.json() == {"id": "client-1", "model": "tiny", "version": answer["version"], "verdict": "wrong",
                                 "label": "card_delivery_estimate", "duplicate": False}  # fmt: skip
        repeat = httpx.post(f"{url}/v1/models/tiny/feedback", json=body)
        assert repeat.status_code == 200 and repeat.json()["duplicate"] is True
        other = httpx.post(f"{url}/v1/models/tiny/feedback", json={**body, "label": "card_arrival"})
        assert error_of(other, 409)["code"] == "id_conflict"
        right = httpx.post(f"{url}/v1/models/tiny/feedback", json={"request_id": answer["request_id"],
                                                                    "verdict": "correct"})  # fmt: skip
        assert right.status_code == 201 and right.json()["label"] == answer["predictions"][0]["label"]
        by_text = httpx.post(f"{url}/v1/models/tiny/feedback", json={"text": texts[2], "label": "card_arrival"})
        assert by_text.status_code == 201 and by_text.json()["verdict"] is None  # no predicted label: no verdict
    assert heard.corrections == [("tiny", answer["version"], False), ("tiny", answer["version"], True),
                                 ("tiny", None, None)]  # fmt: skip
    store = FeedbackStore.open(db_url)
    try:
        assert store.count() == 3
        row = store.get("client-1")
        assert row is not None and row["text"] == texts[1] and row["predicted"] == given
        assert (row["request_id"], row["version"], row["user_id"]) == (answer["request_id"], answer["version"],
                                                                      "agent-7")  # fmt: skip
    finally:
        store.close()


def test_a_retry_after_the_text_left_memory_is_still_a_duplicate(untrained_exported, tmp_path):
    db = tmp_path / "f.sqlite"
    with running([("tiny", untrained_exported)], feedback_db=str(db), feedback_recall_mb=0.001) as (url, _):
        first = predict(url, ["where is my card?"])
        body = {"id": "k", "request_id": first["request_id"], "label": "card_arrival"}
        assert httpx.post(f"{url}/v1/models/tiny/feedback", json=body).status_code == 201
        predict(url, ["x" * 2000])  # over the 1 kB of recall: the first request is forgotten
        assert httpx.post(f"{url}/v1/models/tiny/feedback", json=body).json()["duplicate"] is True
        other = httpx.post(f"{url}/v1/models/tiny/feedback", json={**body, "label": "exchange_rate"})
        assert error_of(other, 409)["code"] == "id_conflict"
        gone = httpx.post(f"{url}/v1/models/tiny/feedback", json={**body, "id": "new"})
        assert error_of(gone, 404)["code"] == "unknown_request"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        ({}, 422, "invalid_request"),
        ({"text": "where is my card?"}, 422, "invalid_request"),  # neither label nor verdict
        ({"text": "where is my card?", "label": "x", "surprise": 1}, 422, "invalid_request"),
        ({"text": "where is my card?", "verdict": "maybe"}, 422, "invalid_request"),
        ({"text": "where is my card?", "label": "  "}, 422, "invalid_request"),
        ({"text": "where is my card?", "label": 3}, 422, "invalid_request"),
        ({"text": " \u200b ", "label": "card_arrival"}, 422, "empty_text"),
        ({"text": "where is my card?", "label": "x", "note": "n" * 2001}, 422, "invalid_request"),
        ({"text": "where is my card?", "label": "x", "id": "has spaces"}, 422, "invalid_request"),
        ({"text": "where?", "predicted": "a", "label": "b", "verdict": "correct"}, 422, "invalid_request"),
        ({"text": "where?", "predicted": "a", "label": "a", "verdict": "wrong"}, 422, "invalid_request"),
        ({"text": "where?", "verdict": "correct"}, 422, "invalid_request"),  # correct, but which label?
        ({"request_id": "never-seen", "label": "card_arrival"}, 404, "unknown_request"),
    ],
)
def test_bad_bodies_get_their_4xx(server, body, status, code):
    url, _, _ = server
    sent = {"content": body} if isinstance(body, str) else {"json": body}
    refused = error_of(httpx.post(f"{url}/v1/models/tiny/feedback", **sent), status)
    assert refused["code"] == code


def test_a_recalled_request_is_checked_against_what_the_body_says(server):
    url, _, _ = server
    answer = predict(url, ["my card has not arrived yet", "how do I change my PIN?"])
    base = {"request_id": answer["request_id"], "label": "card_arrival"}
    assert "index" in error_of(httpx.post(f"{url}/v1/models/tiny/feedback", json={**base, "index": 2}), 422)["message"]
    wrong_text = httpx.post(f"{url}/v1/models/tiny/feedback", json={**base, "text": "something else"})
    assert "differs" in error_of(wrong_text, 422)["message"]
    served = answer["predictions"][0]["label"]
    other = next(label for label in ("card_arrival", "exchange_rate") if label != served)
    claimed = httpx.post(f"{url}/v1/models/tiny/feedback", json={**base, "predicted": other})
    assert "was answered" in error_of(claimed, 422)["message"]
    unknown = httpx.post(f"{url}/v1/models/nope/feedback", json=base)
    assert error_of(unknown, 404)["code"] == "unknown_model"


def test_the_database_is_made_on_the_first_feedback_and_texts_stay_out_of_the_logs(
    untrained_exported, tmp_path, caplog
):
    db = tmp_path / "made-later.sqlite"
    secret = "my card ending 4242 has not arrived"
    with caplog.at_level("DEBUG"), running([("tiny", untrained_exported)], feedback_db=str(db)) as (url, _):
        answer = predict(url, [secret])
        assert not db.exists()  # predictions alone make no database
        body = {"request_id": answer["request_id"], "label": "card_arrival", "note": "customer upset"}
        assert httpx.post(f"{url}/v1/models/tiny/feedback", json=body).status_code == 201
        assert db.exists()
    assert secret not in caplog.text and "4242" not in caplog.text


def test_expired_feedback_is_purged_when_the_server_starts(untrained_exported, tmp_path):
    db = f"sqlite:///{tmp_path / 'old.sqlite'}"
    store = FeedbackStore.open(db)
    old, recent = time.time() - 100 * DAY, time.time() - 10 * DAY
    store.add_many(
        [
            {"id": "old", "model": "tiny", "text": "a", "label": "card_arrival", "created_at": old},
            {"id": "recent", "model": "tiny", "text": "b", "label": "card_arrival", "created_at": recent},
        ]
    )
    with running([("tiny", untrained_exported)], feedback_db=db, feedback_retention=30 * DAY):
        assert store.get("old") is None and store.get("recent") is not None
    store.close()


def test_feedback_expires_while_the_server_runs(untrained_exported, tmp_path):
    db = f"sqlite:///{tmp_path / 'short.sqlite'}"
    with running([("tiny", untrained_exported)], feedback_db=db, feedback_retention=1.0) as (url, _):
        body = {"text": "where is my card?", "label": "card_arrival"}
        assert httpx.post(f"{url}/v1/models/tiny/feedback", json=body).status_code == 201
        store = FeedbackStore.open(db)
        try:
            deadline = time.monotonic() + 30  # purged every retention / 4 here: within about 1.25 s
            while store.count() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert store.count() == 0
        finally:
            store.close()


def test_api_keys_guard_the_feedback_route(untrained_exported, tmp_path):
    with running([("tiny", untrained_exported)], api_keys=(KEY,), feedback_db=str(tmp_path / "f.sqlite")) as (url, _):
        body = {"text": "where is my card?", "label": "card_arrival"}
        denied = httpx.post(f"{url}/v1/models/tiny/feedback", json=body)
        assert error_of(denied, 401)["code"] == "unauthorized"
        assert not (tmp_path / "f.sqlite").exists()
        allowed = httpx.post(f"{url}/v1/models/tiny/feedback", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert allowed.status_code == 201


def test_no_feedback_answers_404_and_remembers_no_text(untrained_exported, tmp_path):
    with running([("tiny", untrained_exported)], feedback=False, feedback_db=str(tmp_path / "f.sqlite")) as (
        url,
        service,
    ):
        assert not any(isinstance(o, RecentPredictions) for o in service.observers)
        off = httpx.post(f"{url}/v1/models/tiny/feedback", json={"text": "hi", "label": "card_arrival"})
        assert error_of(off, 404)["code"] == "feedback_disabled" and "--no-feedback" in off.json()["error"]["message"]
    assert not (tmp_path / "f.sqlite").exists()


def test_recall_is_bounded_by_size_and_by_age():
    now = [0.0]
    texts = [text for text, _ in banking_rows(40)]
    one = [{"label": "card_arrival"}]
    size = ENTRY_OVERHEAD + max(map(len, texts)) + 60  # bytes of one remembered request, at most
    recent = RecentPredictions(max_bytes=10 * size, max_age_s=60, clock=lambda: now[0])
    for i, text in enumerate(texts):
        now[0] = float(i)
        recent.predicted("tiny", "v1", f"r{i}", [text], one)
    assert recent.bytes <= 10 * size and 10 <= len(recent) < 40
    assert recent.recall("tiny", "r0") is None and recent.recall("tiny", "r39").texts == (texts[39],)
    assert recent.recall("other", "r39") is None
    now[0] = 39 + 61.0
    assert recent.recall("tiny", "r39") is None and len(recent) == 0 and recent.bytes == 0


def test_remembered_requests_are_left_alone_by_the_cyclic_collector():
    """Tens of thousands of entries must not lengthen every full collection (they held the event loop)."""
    import gc

    recent = RecentPredictions(max_bytes=10**8, max_age_s=3600)
    for i, (text, label) in enumerate(banking_rows(200)):
        recent.predicted("tiny", "v1", f"r{i}", [text, text.upper()], [{"label": label}, {"score": 0.5}])
    gc.collect()
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in recent._entries.values())
    recalled = recent.recall("tiny", "r7")
    assert recalled is not None and recalled.labels[1] is None and recalled.texts[1] == recalled.texts[0].upper()


# ---------------------------------------------------------------- files and the CLI


def write_corrections(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "predicted", "verdict", "note"])
        for i, (text, label) in enumerate(rows):
            predicted = label if i % 2 else "card_arrival"
            writer.writerow([text, label if i % 5 else "", predicted, "correct" if i % 5 == 0 else "", "n"])
        writer.writerow(['=HYPERLINK("http://x")', "brand_new_intent", "exchange_rate", "wrong", ""])


def test_import_and_export_round_trip_through_the_cli(tmp_path):
    from slm.api import export_feedback, import_feedback

    rows = banking_rows(20)
    corrections, db = tmp_path / "corrections.csv", tmp_path / "feedback.sqlite"
    write_corrections(corrections, rows)
    done = slm("feedback", "import", corrections, "--db", db, "--model", "tiny", "--no-redact")
    assert done.returncode == 0, done.stderr
    assert "21 rows" in done.stdout and "21 new, 0 already stored, 0 conflicts" in done.stdout
    again = import_feedback(corrections, db, model="tiny", redact=False)
    assert (again.rows, again.inserted, again.duplicates) == (21, 0, 21)
    out_jsonl, out_csv = tmp_path / "out.jsonl", tmp_path / "out.csv"
    done = slm("feedback", "export", "--db", db, "-o", out_jsonl, "--model", "tiny", "--since", "1d")
    assert done.returncode == 0 and "wrote 21 rows" in done.stdout, done.stderr
    exported = [json.loads(line) for line in out_jsonl.read_text(encoding="utf-8").splitlines()]
    assert list(exported[0]) == ["text", "label", "predicted", "verdict", "model", "version", "id", "created_at"]
    assert len(exported) == 21 and {r["label"] for r in exported} >= {"brand_new_intent"}
    assert all(r["verdict"] == ("correct" if r["label"] == r["predicted"] else "wrong") for r in exported)
    formula = next(r for r in exported if r["label"] == "brand_new_intent")["text"]
    assert formula == '=HYPERLINK("http://x")'  # JSON lines keep texts exactly
    assert export_feedback(f"sqlite:///{db}", out_csv).rows == 21
    assert "'=HYPERLINK" in out_csv.read_text(encoding="utf-8")  # CSV cells are formula-neutralised
    copy = tmp_path / "copy.sqlite"
    assert import_feedback(out_jsonl, copy, redact=False).inserted == 21  # model and ids from the file
    same = sorted((r.id, r.text, r.label, r.verdict) for r in read_feedback(str(out_jsonl)))
    assert sorted((r.id, r.text, r.label, r.verdict) for r in read_feedback(f"sqlite:///{copy}")) == same
    assert sorted((r.id, r.text, r.label, r.verdict) for r in read_feedback(f"sqlite:///{db}", model="tiny")) == same
    assert import_feedback(out_jsonl, db, redact=False).duplicates == 21  # what was exported is what is stored


def test_a_conflicting_import_stores_the_rest_and_fails_in_one_line(tmp_path):
    db = tmp_path / "f.sqlite"
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps({"id": "x", "text": "where is my card?", "label": "card_arrival"}) + "\n")
    second.write_text(json.dumps({"id": "x", "text": "where is my card?", "label": "exchange_rate"}) + "\n"
                      + json.dumps({"id": "y", "text": "rate?", "label": "exchange_rate"}) + "\n")  # fmt: skip
    assert slm("feedback", "import", first, "--db", db, "--model", "tiny").returncode == 0
    done = slm("feedback", "import", second, "--db", db, "--model", "tiny")
    assert_one_line_error(done, "1 row(s) conflict with feedback stored under the same id ('x')")
    assert [r.id for r in read_feedback(f"sqlite:///{db}")] == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("text,predicted\nwhere is my card?,card_arrival\n", "no 'label' column"),
        ("", "file is empty"),
        ("label,note\ncard_arrival,x\n", "text column 'text' not found"),
        ("text,label,verdict\nwhere is my card?,card_arrival,maybe\n", "row 1: verdict 'maybe' is not one of"),
        ("text,label\nwhere is my card?,card_arrival\n   ,card_arrival\n", "row 2: the text is empty"),
        ("text,label,verdict\nwhere is my card?,,\n", "row 1: give the correct label"),
        ("text,label\nwhere is my card?,card_arrival\n", "row 1: no model"),  # importing needs one
    ],
)
def test_a_bad_corrections_file_is_a_one_line_error_that_stores_nothing(tmp_path, content, phrase):
    from slm.api import import_feedback

    path, db = tmp_path / "bad.csv", tmp_path / "f.sqlite"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=phrase) as raised:
        import_feedback(path, db, model=None if "no model" in phrase else "tiny")
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)
    assert not db.exists()
    if "no model" in phrase:
        assert [r.model for r in read_feedback(path)] == [None]  # reading for training needs none
    else:
        with pytest.raises(DataError, match=phrase):
            read_feedback(path)


def test_a_bad_file_on_the_command_line_is_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label,verdict\nwhere is my card?,card_arrival,maybe\n", encoding="utf-8")
    assert_one_line_error(slm("feedback", "import", path, "--model", "tiny", cwd=tmp_path), "verdict 'maybe'")
    assert not (tmp_path / "slm-feedback.sqlite").exists()  # the default database, never made for a bad file


def test_databases_that_cannot_be_used_are_one_line_errors(tmp_path):
    from slm.api import export_feedback

    hidden = "postgresql+psycopg://u:secret@127.0.0.1:1/x?connect_timeout=2"
    done = slm("feedback", "export", "--db", hidden, "-o", tmp_path / "out.csv")
    message = assert_one_line_error(done, "feedback: cannot open 'postgresql+psycopg://u:***@127.0.0.1:1/x")
    assert "secret" not in message and not (tmp_path / "out.csv").exists()
    with pytest.raises(ConfigError, match="cannot open 'postgresql"):
        read_feedback(hidden)
    with pytest.raises(ConfigError, match="does not exist"):
        export_feedback(tmp_path / "none.sqlite", tmp_path / "o.csv")
    assert not (tmp_path / "none.sqlite").exists()
    with pytest.raises(ConfigError, match=r"write \.csv, \.tsv or \.jsonl"):
        export_feedback(tmp_path / "none.sqlite", tmp_path / "o.xlsx")
    with pytest.raises(ConfigError, match="mysql is not supported"):
        FeedbackStore.open("mysql://u@127.0.0.1/x")
    assert_one_line_error(slm("serve", tmp_path, "--feedback-retention", "soon"), "--feedback-retention")


def test_feedback_commands_name_the_serve_extra_when_it_is_missing(tmp_path):
    (tmp_path / "c.csv").write_text("text,label\nwhere is my card?,card_arrival\n", encoding="utf-8")
    db = str(tmp_path / "f.sqlite")
    for args in (["feedback", "import", str(tmp_path / "c.csv"), "--db", db],
                 ["feedback", "export", "--db", db, "-o", str(tmp_path / "o.csv")]):  # fmt: skip
        result = run_cli(args, NOT_IN_CORE)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "pip install 'slm[serve]'" in lines[0], result.stderr
