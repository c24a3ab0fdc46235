"""PII redaction quality and speed on the labelled set (issue 24, acceptance 1): recall, precision, texts/s.

    python bench/redaction.py               # bench/data/pii_set.jsonl -> bench/results/redaction.{json,md}

The set (bench/pii_set.py builds it) holds real BANKING77/CLINC150 questions and waimai_10k reviews with
fake, valid identifiers planted in them, and planted negatives (failed checksums, order numbers, amounts,
times, dates without a birth cue) that must stay. The default ``Redactor()`` runs over every text.

Two ways to match a found span with a labelled one:

- **covered** (the privacy measure, the one the targets are judged on): a labelled span is recalled when
  every one of its characters is inside found spans, whatever type they carry (the value is gone); a found
  span is correct when it overlaps a labelled span. A found span over nothing labelled is a false positive,
  whether it hit a planted negative or something in the real text.
- **exact**: a labelled span is recalled only by a found span of the same type with the same start and end;
  a found span is correct only if it is such a span. Stricter: it also counts a cut-short or overlong span,
  or a right span with the wrong type, as a miss and a false positive.

Per type, recall counts labelled spans of that type and precision counts found spans of that type. Also
measured: each ``phonenumbers`` leniency (the default is chosen from this table), idempotence
(redact(redact(x)) == redact(x) on every text, both modes), and throughput in texts per second (one
thread) on the set's texts and on plain real texts as the server stores them (the 13,083 BANKING77 texts
and the 11,987 waimai_10k reviews, no identifiers planted), with the machine's load average.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

from slm.hardware import load_average, machine_info
from slm.privacy import Redactor, Span
from slm.privacy.recognizers import LENIENCIES
from slm.privacy.redactor import DEFAULT_LENIENCY, DEFAULT_TYPES

ROOT = Path(__file__).resolve().parent
SET = ROOT / "data" / "pii_set.jsonl"
DATA = ROOT.parent.parent / "shared" / "data"
RESULTS = ROOT / "results"
TARGETS = {"recall": 0.98, "precision": 0.95}
SHOWN_ERRORS = 40


def load_set(path: Path = SET) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def covered(span: tuple[int, int], found: list[Span]) -> bool:
    """Every character of ``span`` lies inside one of ``found``."""
    return all(any(f.start <= i < f.end for f in found) for i in range(span[0], span[1]))


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class Tally:
    """Counts for recall (labelled spans recalled / all) and precision (found spans correct / all), per key."""

    def __init__(self) -> None:
        self.gold: Counter[str] = Counter()
        self.recalled: Counter[str] = Counter()
        self.found: Counter[str] = Counter()
        self.correct: Counter[str] = Counter()

    def add(self, keys: tuple[str, ...], gold: int = 0, recalled: int = 0, found: int = 0, correct: int = 0) -> None:
        for key in keys:
            self.gold[key] += gold
            self.recalled[key] += recalled
            self.found[key] += found
            self.correct[key] += correct

    def row(self, key: str) -> dict:
        recall = self.recalled[key] / self.gold[key] if self.gold[key] else None
        precision = self.correct[key] / self.found[key] if self.found[key] else None
        return {
            "spans": self.gold[key],
            "recalled": self.recalled[key],
            "found": self.found[key],
            "correct": self.correct[key],
            "recall": _r(recall),
            "precision": _r(precision),
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def score(records: list[dict], redactor: Redactor) -> dict:
    """Covered and exact tallies per language and type, negatives redacted, and the errors."""
    cov, exact = Tally(), Tally()
    negatives: Counter[str] = Counter()
    negatives_hit: Counter[str] = Counter()
    misses, false_positives = [], []
    for rec in records:
        found = redactor.find(rec["text"])
        lang = rec["lang"]
        gold = [(g["type"], g["start"], g["end"]) for g in rec["spans"]]
        for kind, start, end in gold:
            keys = ("all", lang, kind, f"{lang}/{kind}")
            hit = covered((start, end), found)
            cov.add(keys, gold=1, recalled=int(hit))
            exact.add(keys, gold=1, recalled=int(Span(start, end, kind) in found))
            if not hit:
                misses.append({"id": rec["id"], "type": kind, "value": rec["text"][start:end], "text": rec["text"]})
        for f in found:
            keys = ("all", lang, f.type, f"{lang}/{f.type}")
            ok = any(overlaps((f.start, f.end), (s, e)) for _, s, e in gold)
            cov.add(keys, found=1, correct=int(ok))
            exact.add(keys, found=1, correct=int((f.type, f.start, f.end) in gold))
            if not ok:
                false_positives.append(
                    {"id": rec["id"], "type": f.type, "value": rec["text"][f.start : f.end], "text": rec["text"]}
                )
        for neg in rec["negatives"]:
            negatives[neg["kind"]] += 1
            negatives_hit[neg["kind"]] += any(overlaps((f.start, f.end), (neg["start"], neg["end"])) for f in found)
    keys = sorted(cov.gold, key=lambda k: (k != "all", "/" in k, k))
    return {
        "covered": {k: cov.row(k) for k in keys},
        "exact": {k: exact.row(k) for k in keys},
        "negatives": {k: {"planted": negatives[k], "redacted": negatives_hit[k]} for k in sorted(negatives)},
        "misses": misses,
        "false_positives": false_positives,
    }


def idempotence(records: list[dict]) -> dict:
    out = {}
    for mode in ("placeholder", "pseudonym"):
        redactor = Redactor(mode=mode, key=b"bench-key-0123456789")
        broken = [r["id"] for r in records if redactor.redact(once := redactor.redact(r["text"])) != once]
        out[mode] = {"texts": len(records), "not_idempotent": len(broken), "ids": broken[:20]}
    return out


def real_texts() -> dict[str, list[str]]:
    """Real texts with nothing planted: what the server stores. fin_tweets holds real URLs (t.co links)."""

    def column(path: Path, name: str) -> list[str]:
        with path.open(encoding="utf-8") as handle:
            return [row[name] for row in csv.DictReader(handle)]

    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    return {
        "en: BANKING77": column(DATA / "banking77" / "train.csv", "text")
        + column(DATA / "banking77" / "test.csv", "text"),
        "en: CLINC150 test": [text for text, _ in clinc["test"]],
        "en: fin_tweets": column(DATA / "fin_tweets_sentiment" / "sent_train.csv", "text"),
        "en: symptom2disease": column(DATA / "symptom2disease" / "Symptom2Disease.csv", "text"),
        "zh: waimai_10k": column(DATA / "waimai_10k" / "waimai_10k.csv", "review"),
    }


def throughput(texts: list[str], redactor: Redactor, repeats: int = 3) -> dict:
    """Best of ``repeats`` passes over ``texts`` (one thread), and what the pass found (with examples)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        spans = [redactor.find(text) for text in texts]
        best = min(best, time.perf_counter() - started)
    found = Counter(s.type for row in spans for s in row)
    examples: dict[str, list[str]] = {}
    for text, row in zip(texts, spans, strict=True):
        for span in row:
            seen = examples.setdefault(span.type, [])
            if len(seen) < 5:
                seen.append(text[span.start : span.end])
    return {
        "texts": len(texts),
        "seconds": round(best, 3),
        "texts_per_s": round(len(texts) / best),
        "chars_per_text": round(sum(map(len, texts)) / len(texts), 1),
        "found": dict(found),
        "examples": examples,
    }


# Long, adversarial texts (about 500,000 characters each): redaction's worst cases, one pass each.
LONG_TEXTS = {
    "a date of birth every 16 characters": "born 1990-01-01 " * 31250,
    "4-digit groups only": "4111 " * 100000,
    "IBAN heads only": "GB82 " * 100000,
    "one identifier of each type every 112 characters": (
        "jane@example.com +44 20 7946 0958 4111111111111111 GB82WEST12345698765432 192.168.1.1 "
        "www.x.com/a 出生日期1990年1月1日 "
    )
    * 4500,
}


def long_texts(redactor: Redactor) -> dict:
    out = {}
    for name, text in LONG_TEXTS.items():
        started = time.perf_counter()
        found = len(redactor.find(text))
        out[name] = {"chars": len(text), "seconds": round(time.perf_counter() - started, 2), "found": found}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=SET)
    args = parser.parse_args(argv)
    if not args.set.is_file():
        print(f"no labelled set at {args.set}: python bench/pii_set.py", file=sys.stderr)
        return 2
    records = load_set(args.set)
    redactor = Redactor()
    result = {
        "set": {
            "file": str(args.set.relative_to(ROOT.parent)),
            "records": len(records),
            "spans": sum(len(r["spans"]) for r in records),
            "negatives": sum(len(r["negatives"]) for r in records),
        },
        "redactor": {
            "types": list(DEFAULT_TYPES),
            "phone_regions": list(redactor.phone_regions),
            "phone_leniency": DEFAULT_LENIENCY,
        },
        "targets": TARGETS,
        "scores": score(records, redactor),
        "leniency": {},
        "idempotence": idempotence(records),
        "throughput": {},
        "machine": machine_info(["phonenumbers", "python-stdnum"]),
    }
    import pii_set  # bench/pii_set.py, beside this script

    fresh = score(pii_set.build(seed=pii_set.SEED + 1), redactor)
    result["fresh_draw"] = {
        "seed": pii_set.SEED + 1,
        "covered": fresh["covered"],
        "exact": fresh["exact"],
        "negatives": fresh["negatives"],
        "misses": fresh["misses"],
        "false_positives": fresh["false_positives"],
    }
    for name in LENIENCIES:
        scored = score(records, Redactor(phone_leniency=name))
        result["leniency"][name] = {k: scored["covered"][k] for k in ("all", "PHONE")}
    result["throughput"]["labelled set (planted)"] = throughput([r["text"] for r in records], redactor)
    for name, texts in real_texts().items():
        result["throughput"][name] = throughput(texts, redactor)
    result["long_texts"] = long_texts(redactor)
    result["load_average_after"] = load_average()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redaction.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (RESULTS / "redaction.md").write_text(report(result), encoding="utf-8")
    overall = result["scores"]["covered"]["all"]
    print(f"recall {overall['recall']}, precision {overall['precision']} (covered); wrote {RESULTS / 'redaction.md'}")
    return 0


def _table(rows: dict, keys: list[str]) -> list[str]:
    lines = ["| | spans | recall | found | precision |", "|---|---:|---:|---:|---:|"]
    for key in keys:
        row = rows[key]
        recall = "–" if row["recall"] is None else f"{row['recall']:.4f}"
        precision = "–" if row["precision"] is None else f"{row['precision']:.4f}"
        lines.append(f"| {key} | {row['spans']} | {recall} | {row['found']} | {precision} |")
    return lines


def report(result: dict) -> str:
    scores = result["scores"]
    cov, exact = scores["covered"], scores["exact"]
    overall = cov["all"]
    met = overall["recall"] >= TARGETS["recall"] and overall["precision"] >= TARGETS["precision"]
    s = result["set"]
    lines = [
        "# PII redaction: recall, precision, speed",
        "",
        f"`python bench/redaction.py` on `{s['file']}` ({s['records']} real texts, {s['spans']} planted "
        f"identifiers, {s['negatives']} planted negatives; built by `bench/pii_set.py`). Default `Redactor()`: "
        f"types {', '.join(result['redactor']['types'])}; "
        f"phone regions {', '.join(result['redactor']['phone_regions'])} "
        f"(+CN for Chinese text); leniency `{result['redactor']['phone_leniency']}`.",
        "",
        f"**Overall (covered): recall {overall['recall']:.4f}, precision {overall['precision']:.4f}** against the "
        f"targets recall ≥ {TARGETS['recall']}, precision ≥ {TARGETS['precision']}: "
        + ("met." if met else "**missed**."),
        f"Exact spans (same type, start and end): recall {exact['all']['recall']:.4f}, "
        f"precision {exact['all']['precision']:.4f}.",
        "",
        "Matching: *covered*: a labelled span counts as recalled when all its characters are redacted (any type); "
        "a redacted span is correct when it overlaps a labelled one. *Exact*: same type, start and end. "
        "See the docstring of bench/redaction.py.",
        "",
        "## Covered, by language and type",
        "",
    ]
    order = ["all", "en", "zh"] + sorted(k for k in cov if "/" not in k and k not in ("all", "en", "zh"))
    lines += _table(cov, [k for k in order if k in cov]) + [""]
    lines += ["## Covered, per language and type", ""]
    lines += _table(cov, sorted(k for k in cov if "/" in k)) + [""]
    lines += ["## Exact spans, by language and type", ""]
    lines += _table(exact, [k for k in order if k in exact]) + [""]
    fresh = result["fresh_draw"]
    lines += [
        f"## A fresh draw (seed {fresh['seed']}), covered",
        "",
        "The recognizers were tuned on the errors of the committed set; this draw of the same generator "
        "with another seed (other base texts, other identifiers) was not looked at while tuning.",
        "",
    ]
    lines += _table(fresh["covered"], [k for k in order if k in fresh["covered"]]) + [""]
    lines += [
        f"Exact: recall {fresh['exact']['all']['recall']:.4f}, precision {fresh['exact']['all']['precision']:.4f}; "
        f"planted negatives redacted: {sum(v['redacted'] for v in fresh['negatives'].values())} of "
        f"{sum(v['planted'] for v in fresh['negatives'].values())}.",
        "",
    ]
    lines += _errors("Fresh draw: missed identifiers", fresh["misses"])
    lines += _errors("Fresh draw: false positives", fresh["false_positives"])
    lines += ["## Planted negatives (must stay)", "", "| kind | planted | redacted |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['planted']} | {v['redacted']} |" for k, v in scores["negatives"].items()] + [""]
    lines += [
        "## Phone leniency (phonenumbers), covered",
        "",
        "| leniency | all recall | all precision | PHONE recall | PHONE precision |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rows in result["leniency"].items():
        a, p = rows["all"], rows["PHONE"]
        lines.append(
            f"| {name} | {a['recall']:.4f} | {a['precision']:.4f} | {p['recall']:.4f} | {p['precision']:.4f} |"
        )
    lines += ["", "## Idempotence", ""]
    for mode, row in result["idempotence"].items():
        lines.append(f"- {mode}: {row['not_idempotent']} of {row['texts']} texts change when redacted twice")
    lines += [
        "",
        "## Throughput (one thread), and what real texts with nothing planted hold",
        "",
        "| texts | count | chars/text | texts/s | found (examples) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in result["throughput"].items():
        found = "; ".join(
            f"{k} {v}" + ("" if "planted" in name else " (" + ", ".join(f"`{e}`" for e in row["examples"][k]) + ")")
            for k, v in sorted(row["found"].items())
        )
        lines.append(f"| {name} | {row['texts']} | {row['chars_per_text']} | {row['texts_per_s']:,} | {found or '–'} |")
    lines += [
        "",
        "## Long adversarial texts (one pass each)",
        "",
        "| text | chars | seconds | found |",
        "|---|---:|---:|---:|",
    ]
    for name, row in result["long_texts"].items():
        lines.append(f"| {name} | {row['chars']:,} | {row['seconds']} | {row['found']:,} |")
    lines += [
        "",
        "phonenumbers stops after 65,535 candidates per region (3 regions), which bounds the phone "
        "search whatever the length; the other recognizers are linear in the text.",
    ]
    m = result["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']['model']}, {m['cpu']['logical_cpus']} logical CPUs, load average "
        f"{m.get('load_average')} before, {result['load_average_after']} after.",
        "",
    ]
    lines += _errors("Missed identifiers", scores["misses"])
    lines += _errors("False positives", scores["false_positives"])
    return "\n".join(lines)


def _errors(title: str, rows: list[dict]) -> list[str]:
    lines = [f"## {title} ({len(rows)}; first {min(len(rows), SHOWN_ERRORS)})", ""]
    if not rows:
        return lines + ["None.", ""]
    lines += ["| id | type | value | text |", "|---|---|---|---|"]
    for row in rows[:SHOWN_ERRORS]:
        text = row["text"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['id']} | {row['type']} | `{row['value']}` | {text} |")
    return lines + [""]


if __name__ == "__main__":
    raise SystemExit(main())
