"""Every store slm writes keeps rows for a retention only: the support log, the monitor and the feedback
database purge from the command line (the server also purges at start and hourly)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from slm.durations import describe_duration
from tests.test_cli import assert_one_line_error, slm

DAY = 86400.0


def _support_log(path, ages_days: list[float]) -> None:
    from slm.apps.support.conversations import ConversationLog, Turn, utc_iso

    log = ConversationLog.open(path)
    now = time.time()
    log.record([Turn(utc_iso(now - age * DAY), f"c{i}", "bank", f"question {i}", "handoff", "out_of_scope", None,
                     None, None, None, None) for i, age in enumerate(ages_days)])  # fmt: skip
    log.close()


def test_support_purge_deletes_only_turns_older_than_asked(tmp_path):
    db = tmp_path / "support.sqlite"
    _support_log(db, [100, 45, 5, 0])
    proc = slm("app", "support", "purge", db, "--older-than", "30d")
    assert proc.returncode == 0, proc.stderr
    assert "deleted 2 turns" in proc.stdout
    with sqlite3.connect(db) as conn:
        left = [row[0] for row in conn.execute("SELECT question FROM turns ORDER BY id")]
    assert left == ["question 2", "question 3"]


def test_support_purge_refuses_a_missing_log_and_a_bad_duration_in_one_line(tmp_path):
    assert_one_line_error(slm("app", "support", "purge", tmp_path / "none.sqlite"), "no support log", code=None)
    _support_log(tmp_path / "s.sqlite", [1])
    assert_one_line_error(slm("app", "support", "purge", tmp_path / "s.sqlite", "--older-than", "soon"), "older-than",
                          code=None)  # fmt: skip


@pytest.mark.parametrize("age_days, kept", [(100, False), (10, True)])
def test_feedback_purge_deletes_feedback_older_than_asked(tmp_path, age_days, kept):
    from slm.feedback.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    store = FeedbackStore.open(db)
    store.add_many([{"id": "x", "model": "m", "text": "t", "label": "a", "created_at": time.time() - age_days * DAY}])
    store.close()
    proc = slm("feedback", "purge", "--db", db, "--older-than", "30")
    assert proc.returncode == 0, proc.stderr
    assert f"deleted {0 if kept else 1} feedback row" in proc.stdout
    store = FeedbackStore.open(db)
    assert (store.get("x") is not None) is kept
    store.close()


def test_durations_are_described_in_their_largest_whole_unit():
    assert [describe_duration(s) for s in (90 * DAY, 36 * 3600, 90, 1.5)] == ["90d", "36h", "90s", "1.5s"]
