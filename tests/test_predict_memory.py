"""Bounded memory in prediction (issue 21, defect 3): texts are cut before tokenizing, ``slm predict`` streams.

Peak memory is read from /proc (tests/peak_rss.py) for ``slm predict`` run as a real process; every
other check uses real BANKING77, finance and waimai texts and the tiny exported MiniLM bundle, except the
refusal of an overlong line and the streamed formats, which hold whatever the model answers and use the kept
untrained bundle (``untrained_exported``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from slm.benchmark.peak import run_measured
from slm.cli import app
from slm.models.ensemble import probabilities
from slm.runtime import load
from tests.conftest import DATA, require

# Peak RSS may grow this much from 8,192 to 20,000 rows. From 8,192 rows on (two chunks of 4,096) ONNX Runtime's
# memory arena has seen every batch shape and stays put: measured -3 MB streaming; reading everything, predicting,
# then writing (before the fix): +74 MB. (1,000 rows peak lower, before the arena has grown: +75 MB to 20,000.)
ROWS_GROWTH_MB = 40
# A 20 MB text through the Python API: the cut makes it cost what a 205 KB text costs (before: 3.4 GB).
ONE_TEXT_PEAK_MB = 600


def _banking_texts() -> list[str]:
    frames = [pd.read_csv(require(DATA / "banking77" / f"{split}.csv")) for split in ("train", "test")]
    return pd.concat(frames)["text"].tolist()


def _huge_text(mb: int) -> str:
    """``mb`` MiB of real BANKING77 texts on one line."""
    texts = [t.replace("\n", " ").replace("\r", " ") for t in _banking_texts()]
    return " ".join(texts[i % len(texts)] for i in range(mb * 1024 * 1024 // 50))[: mb * 1024 * 1024]


def _rows_csv(path: Path, rows: int) -> Path:
    texts = _banking_texts()
    pd.DataFrame({"id": range(rows), "text": [texts[i % len(texts)] for i in range(rows)]}).to_csv(path, index=False)
    return path


def _predict(bundle: Path, source: Path | str, output: Path | str, *extra: str, **kwargs):
    cmd = [sys.executable, "-m", "slm", "predict", str(bundle), str(source), "-o", str(output), *extra]
    return run_measured(cmd, **kwargs)


def test_peak_memory_of_predict_does_not_grow_with_the_rows(exported, tmp_path):
    small = _predict(exported, _rows_csv(tmp_path / "8k.csv", 8192), tmp_path / "8k-out.csv", "-q")
    big = _predict(exported, _rows_csv(tmp_path / "20k.csv", 20_000), tmp_path / "20k-out.csv", "-q")
    assert small.returncode == 0 and big.returncode == 0, small.stderr + big.stderr
    assert big.peak_mb - small.peak_mb <= ROWS_GROWTH_MB, (small.peak_mb, big.peak_mb)
    # Streamed in chunks, the output is still every row, in order, labelled as the model labels them.
    written = pd.read_csv(tmp_path / "20k-out.csv")
    assert written["id"].tolist() == list(range(20_000))
    texts = written["text"].tolist()
    model = load(exported)
    sample = list(range(0, 20_000, 97))
    assert written["label"].iloc[sample].tolist() == [p["label"] for p in model.predict([texts[i] for i in sample])]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_one_20_mb_text_is_cut_before_tokenizing(exported, tmp_path):
    huge = _huge_text(20)
    (tmp_path / "huge.txt").write_text(huge, encoding="utf-8")
    script = ("import sys; from slm.runtime import load; model = load(sys.argv[1]); "
              "text = open(sys.argv[2], encoding='utf-8').read(); "
              "print(model.predict([text])[0]['label'])")  # fmt: skip
    run = run_measured([sys.executable, "-c", script, str(exported), str(tmp_path / "huge.txt")], cap_mb=2500)
    assert run.returncode == 0 and not run.killed, (run.peak_mb, run.stderr[-500:])
    assert run.peak_mb <= ONE_TEXT_PEAK_MB, run.peak_mb
    from slm.bundle.textlimit import cut_text

    model = load(exported)
    assert run.stdout.strip() == model.predict([cut_text(huge, model.text_limit)])[0]["label"]


def test_the_cut_changes_nothing_the_models_read_in_real_texts(exported):
    from slm.bundle.textlimit import RAW_FACTOR, cut_texts

    model = load(exported)
    limit = model.text_limit
    banking = _banking_texts()
    fin = pd.read_csv(require(DATA / "fin_tweets_sentiment" / "sent_train.csv"))["text"].astype(str).tolist()
    waimai = pd.read_csv(require(DATA / "waimai_10k" / "waimai_10k.csv"))["review"].astype(str).tolist()
    ordinary = banking[:200] + sorted(fin, key=len)[-40:] + waimai[:40]  # up to 6,135 characters
    rng = np.random.default_rng(0)

    def joined(pool: list[str], sep: str, chars: int) -> str:
        out, size = [], 0
        while size < chars:
            out.append(pool[int(rng.integers(len(pool)))])
            size += len(out[-1]) + len(sep)
        return sep.join(out)

    long = [joined(banking, " ", 3 * limit), joined(fin, "\n\n", 2 * limit), joined(waimai, "", 2 * limit),
            joined(banking, " " * 40 + "\n", 3 * limit)]  # fmt: skip
    cut = cut_texts(ordinary + long, limit)
    assert all(c is t for c, t in zip(cut, ordinary, strict=False))  # ordinary texts are not even copied
    assert all(len(c) < len(t) and len(c) <= RAW_FACTOR * limit for c, t in zip(cut[-4:], long, strict=True))
    # The tokens the transformer reads are the same, so are its probabilities: the cut is invisible to it.
    tokenizer = model._transformer.tokenizer
    full_ids = [e.ids for e in tokenizer.encode_batch(ordinary + long)]
    assert [e.ids for e in tokenizer.encode_batch(cut)] == full_ids
    uncut = probabilities(model._transformer.logits(ordinary + long), model.multi_label)
    np.testing.assert_allclose(model.predict_proba(ordinary + long, component="transformer"), uncut, atol=1e-6)
    # The n-gram baseline reads whole texts: on every ordinary text it answers exactly as before.
    np.testing.assert_array_equal(model.predict_proba(ordinary, component="ngram"),
                                  model._ngram.predict_proba(ordinary))  # fmt: skip


def test_a_line_over_the_limit_is_refused_without_reading_it_whole(untrained_exported, tmp_path):
    texts = _banking_texts()
    huge = _huge_text(20)
    source = tmp_path / "one-huge-row.csv"
    pd.DataFrame({"id": [1, 2, 3], "text": [texts[0], huge, texts[1]]}).to_csv(source, index=False)
    (tmp_path / "out.csv").write_text("an earlier output\n")
    run = _predict(untrained_exported, source, tmp_path / "out.csv", cap_mb=1500)
    assert run.returncode == 2 and not run.killed, (run.returncode, run.peak_mb, run.stderr[-300:])
    assert run.stderr.startswith("error: ") and run.stderr.strip().count("\n") == 0, run.stderr
    assert run.peak_mb < 500, run.peak_mb  # the line is never held whole, nor the model loaded
    from slm.data.stream import MAX_LINE_CHARS

    assert f"line 3 is longer than {MAX_LINE_CHARS:,} characters" in run.stderr
    assert (tmp_path / "out.csv").read_text() == "an earlier output\n"
    stdin = tmp_path / "huge.jsonl"
    stdin.write_text(json.dumps({"text": "hi"}) + "\n" + json.dumps({"text": huge}) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "slm", "predict", str(untrained_exported), "-"]
    piped = run_measured(cmd, stdin=stdin, cap_mb=1500)
    assert piped.returncode == 2 and "stdin: line 2 is longer than" in piped.stderr, piped.stderr[-300:]
    assert piped.peak_mb < 1000, piped.peak_mb


def test_an_interrupted_predict_leaves_the_earlier_output(exported, tmp_path):
    source = _rows_csv(tmp_path / "rows.csv", 20_000)
    target = tmp_path / "out.jsonl"
    target.write_text("an earlier output\n")
    # SIGINT back to its default in the child: a shell's background job inherits it ignored, and Python then
    # never raises KeyboardInterrupt (how this failed once under `nohup .ci/run &`).
    proc = subprocess.Popen([sys.executable, "-m", "slm", "predict", str(exported), str(source), "-o", str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".tmp") and p.stat().st_size for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "no chunk was written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C once the first chunks are on disk
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert target.read_text() == "an earlier output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "rows.csv"]


def test_streamed_json_lines_keep_every_key_in_every_format(untrained_exported, tmp_path):
    """Keys that appear only after the first chunk still get a column; Parquet merges the chunks' types."""
    texts = _banking_texts()[:2500]
    lines = [{"text": t, "n": i} | ({"note": f"row {i}"} if i >= 2000 else {}) for i, t in enumerate(texts)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    runner = CliRunner()
    for suffix in ("jsonl", "csv", "parquet"):
        done = runner.invoke(
            app, ["predict", str(untrained_exported), str(source), "-o", str(tmp_path / f"out.{suffix}"), "-q"]
        )
        assert done.exit_code == 0, done.output
    parquet = pd.read_parquet(tmp_path / "out.parquet")
    csv = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    jsonl = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    for frame in (parquet, csv, pd.DataFrame(jsonl)):
        assert list(frame.columns) == ["text", "n", "note", "label", "score", "probabilities"]
        assert frame["n"].tolist() == list(range(2500))
    assert parquet["note"].isna().sum() == 2000 and parquet["note"].iloc[-1] == "row 2499"
    assert jsonl[0]["note"] is None and csv["note"].iloc[0] == "" and csv["note"].iloc[2000] == "row 2000"
    assert parquet["label"].tolist() == csv["label"].tolist() == [row["label"] for row in jsonl]
