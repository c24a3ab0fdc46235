"""CSV formula injection (issue 21, defect 6): text cells a spreadsheet would run get a leading quote.

Covers ``slm predict -o x.csv|x.tsv`` (and ``--raw-csv``), the Ray path's CSV shards (its Predictor on a
real Arrow batch, no cluster needed) and ``slm app support unanswered``. The bundle is the kept untrained one
(``untrained_exported``): what is checked is how cells are written, whatever the model answers.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys

from typer.testing import CliRunner

from slm.cli import app

# Real BANKING77 test questions with a formula prefix, as a hostile customer would type them.
FORMULAS = [
    '=HYPERLINK("http://evil.example","my card has not arrived")',
    "+1+cmd|' /C calc'!A0 where is my card?",
    "-2+3 why was I charged twice?",
    "@SUM(1,2) how do I change my PIN?",
    "\t=1+1 my top up failed",
    "\r=1+1 refund please",
]
HOSTILE = {text: "'" + text for text in FORMULAS}
# Not formulas: numbers and ordinary text stay exactly as they were.
HARMLESS = ["-0.5", "+33", "1e-3", "How do I locate my card?", "I'd like a refund - please"]


def _input(tmp_path):
    texts = [*HOSTILE, *HARMLESS]
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:  # csv quotes the carriage return, pandas not
        csv.writer(handle).writerows([["text", "ref"], *([t, f"r{i}" if i else "=A1"] for i, t in enumerate(texts))])
    return source, texts


def _cells(path, delimiter=","):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def test_predict_csv_and_tsv_neutralise_formulas_and_raw_csv_keeps_them(untrained_exported, tmp_path):
    source, texts = _input(tmp_path)
    runner = CliRunner()
    for suffix, delimiter in (("csv", ","), ("tsv", "\t")):
        out = tmp_path / f"out.{suffix}"
        done = runner.invoke(app, ["predict", str(untrained_exported), str(source), "-o", str(out), "-q"])
        assert done.exit_code == 0, done.output
        rows = _cells(out, delimiter)
        assert rows[0] == ["text", "ref", "label", "score", "probabilities"]
        assert [r[0] for r in rows[1:]] == [*HOSTILE.values(), *HARMLESS]
        assert rows[1][1] == "'=A1" and rows[2][1] == "r1"
        assert all(float(r[3]) > 0 and json.loads(r[4]) for r in rows[1:])  # numbers and JSON untouched
    raw = tmp_path / "raw.csv"
    done = runner.invoke(app, ["predict", str(untrained_exported), str(source), "-o", str(raw), "-q", "--raw-csv"])
    assert done.exit_code == 0, done.output
    assert [r[0] for r in _cells(raw)[1:]] == texts
    # JSON lines and Parquet hold values, not formulas: never changed.
    done = runner.invoke(
        app, ["predict", str(untrained_exported), str(source), "-o", str(tmp_path / "out.jsonl"), "-q"]
    )
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["text"] for line in lines] == texts
    wrong = runner.invoke(
        app, ["predict", str(untrained_exported), str(source), "-o", str(tmp_path / "x.jsonl"), "--raw-csv"]
    )
    assert wrong.exit_code == 2 and "--raw-csv applies to CSV and TSV" in wrong.output


def test_ray_csv_shards_neutralise_formulas_like_local_predict(untrained_exported):
    import pyarrow as pa

    from slm.runtime.ray_predict import Predictor

    texts = [*HOSTILE, *HARMLESS]
    batch = pa.table({"text": texts, "amount": [-0.5] * len(texts)})
    names = ("label", "score", "probabilities")
    shard = Predictor(str(untrained_exported), None, 1, "text", names, "csv")(batch)
    assert shard.column("text").to_pylist() == [*HOSTILE.values(), *HARMLESS]
    assert shard.column("amount").to_pylist() == [-0.5] * len(texts)  # a numeric column is left alone
    raw = Predictor(str(untrained_exported), None, 1, "text", names, "csv", raw_csv=True)(batch)
    assert raw.column("text").to_pylist() == texts
    parquet = Predictor(str(untrained_exported), None, 1, "text", names, "parquet")(batch)
    assert parquet.column("text").to_pylist() == texts


def test_support_unanswered_export_neutralises_customer_questions(tmp_path):
    from slm.apps.support.conversations import UNANSWERED, ConversationLog, Turn

    db = tmp_path / "support.sqlite"
    log = ConversationLog.open(db)
    questions = [*HOSTILE, *HARMLESS]
    log.record([Turn(f"2025-01-01T00:00:{i:02d}.000Z", f"=conv{i}" if i == 0 else f"c{i}", "help", q, UNANSWERED,
                     "out_of_scope", None, None, None, None, None) for i, q in enumerate(questions)])  # fmt: skip
    log.close()
    out = tmp_path / "to-label.csv"
    command = [sys.executable, "-m", "slm", "app", "support", "unanswered", str(db), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = _cells(out)
    assert [r[0] for r in rows[1:]] == [*HOSTILE.values(), *HARMLESS]
    assert rows[1][3] == "'=conv0" and rows[1][4] == "2025-01-01T00:00:00.000Z"
    raw = subprocess.run([*command, "--raw-csv"], capture_output=True, text=True, timeout=120)
    assert raw.returncode == 0, raw.stderr
    assert [r[0] for r in _cells(out)[1:]] == questions
    with sqlite3.connect(db) as check:  # the log itself keeps what the customer wrote
        assert check.execute("SELECT question FROM turns ORDER BY id LIMIT 1").fetchone()[0] == questions[0]
