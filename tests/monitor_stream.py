"""A replayable stream of real financial tweets for the monitor tests, with one injected negative surge."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import fin_frame

START = 1_735_689_600  # 2025-01-01T00:00:00Z
WINDOW = 3600
LEXICON = """\
# entity | aliases: tickers match their exact case, names any case
TSLA | $TSLA | Tesla
Federal Reserve | Fed | FOMC | Powell
China | Chinese | Beijing | 中国
AAPL | $AAPL | Apple | 苹果
"""
# One bad line per reason the monitor must count without stopping.
BAD_LINES = {
    "malformed_json": '{"id": "bad-1", "timestamp": ',
    "not_an_object": '["an", "array"]',
    "missing_id": json.dumps({"timestamp": START, "text": "Fed holds rates"}),
    "missing_timestamp": json.dumps({"id": "bad-2", "text": "Fed holds rates"}),
    "bad_timestamp": json.dumps({"id": "bad-3", "timestamp": "yesterday-ish", "text": "Fed holds rates"}),
    "empty_text": json.dumps({"id": "bad-4", "timestamp": START, "text": "   "}),
    "text_too_long": json.dumps({"id": "bad-5", "timestamp": START, "text": "Fed " * 30_000}),
}


@dataclass(frozen=True)
class Stream:
    path: Path
    items: int  # valid, distinct items
    surge_window: int  # window index (ts // WINDOW) of the injected surge
    windows: int


def write_stream(
    path: Path,
    *,
    windows: int = 30,
    per_window: int = 8,
    surge_at: int = 20,
    surge_size: int = 25,
    seed: int = 0,
    bad_lines: bool = True,
) -> Stream:
    """``windows`` hourly windows of real tweets (none seen in training), one '$TSLA' mention per window,
    and ``surge_size`` real bearish tweets about $TSLA injected in window ``surge_at``."""
    rng = random.Random(seed)
    pool = fin_frame(150, skip=100)
    texts, bearish = list(pool["text"]), list(pool[pool["label"] == "0"]["text"])
    lines, n = [], 0

    def item(ts: float, text: str) -> str:
        nonlocal n
        n += 1
        return json.dumps({"id": f"i{n:05d}", "timestamp": ts, "text": text, "source": "test"}, ensure_ascii=False)

    for w in range(windows):
        base = START + w * WINDOW
        batch = [item(base + rng.uniform(0, WINDOW - 1), rng.choice(texts)) for _ in range(per_window)]
        batch.append(item(base + rng.uniform(0, WINDOW - 1), "$TSLA " + rng.choice(texts)))
        if w == surge_at:
            batch += [item(base + rng.uniform(0, WINDOW - 1), "$TSLA " + t) for t in rng.sample(bearish, surge_size)]
        rng.shuffle(batch)
        lines += batch
        if bad_lines and w == 3:
            lines += list(BAD_LINES.values())
    lines.append(lines[5])  # a re-sent item: the same id again is not counted twice
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Stream(path, n, START // WINDOW + surge_at, windows)


# The sentiment labels of the trained tweet bundle (``fin_bundle``: 0 bearish, 1 bullish, 2 neutral), and two of
# the kept untrained bundle's (``untrained_exported``) standing in for them where what the model says does not
# matter: its answers are meaningless, so tests with it never count alerts or negatives.
FIN_LABELS = {"negative": ["0"], "positive": ["1"]}
UNTRAINED_LABELS = {"negative": ["declined_card_payment"], "positive": ["card_arrival"]}


def write_config(folder: Path, bundle: Path, stream: Path, storage: str, labels: dict | None = None, **extra) -> Path:
    """monitor.yaml for ``stream``: the test lexicon, hourly windows, small batches; ``labels`` (FIN_LABELS
    by default) say which of the bundle's labels are negative and positive."""
    import yaml

    (folder / "entities.txt").write_text(LEXICON, encoding="utf-8")
    config = {"sentiment": {"bundle": str(bundle), **(labels or FIN_LABELS)},
              "lexicon": "entities.txt", "storage": storage, "input": str(stream), "batch_size": 16,
              "window": "1h", **extra}  # fmt: skip
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
