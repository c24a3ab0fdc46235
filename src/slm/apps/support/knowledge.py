"""The knowledge base: FAQ entries (an answer, optionally the question it answers) read from a user file.

:func:`read_knowledge_base` reads CSV/TSV/JSONL/Parquet with the same checks and one-line
DataErrors as the training data loader. The saved form (:meth:`KnowledgeBase.to_jsonl` /
:meth:`KnowledgeBase.from_jsonl`) is one JSON object per entry and is read with the stdlib only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slm.errors import BundleError, ConfigError
from slm.fileio import write_text_atomic

ANSWER_NAMES = (
    "answer", "answers", "answer_text", "response", "responses", "reply", "replies", "solution",
    "resolution", "content", "body", "text", "document", "passage", "article", "output", "a",
)  # fmt: skip
QUESTION_NAMES = (
    "question", "questions", "question_text", "query", "queries", "title", "faq", "faq_question",
    "prompt", "q", "utterance", "subject", "input",
)  # fmt: skip
ID_NAMES = (
    "id", "ids", "faq_id", "doc_id", "document_id", "entry_id", "answer_id", "article_id", "key", "uid",
    "uuid",
)  # fmt: skip
INTENT_NAMES = (
    "intent", "intents", "intent_name", "category", "categories", "label", "labels", "topic", "topics",
    "class", "tag", "tags", "section",
)  # fmt: skip
ID_PREFIX = "faq-"
ENTRY_KEYS = ("id", "question", "answer", "intent")


@dataclass(frozen=True)
class Entry:
    """One answer the assistant can give, with the question it answers when the file has one."""

    id: str
    answer: str
    question: str | None = None
    intent: str | None = None


@dataclass
class KnowledgeBase:
    """Entries in file order, the warnings raised while reading them and the file they came from."""

    entries: list[Entry]
    warnings: list[str] = field(default_factory=list)
    source: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # role (answer/question/id/intent) -> column used

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def to_jsonl(self, path: str | Path) -> Path:
        """Write the entries, one JSON object per line, atomically."""
        lines = [json.dumps(asdict(entry), ensure_ascii=False) + "\n" for entry in self.entries]
        return write_text_atomic(Path(path), "".join(lines))

    @classmethod
    def from_jsonl(cls, path: str | Path) -> KnowledgeBase:
        """Entries written by :meth:`to_jsonl` (stdlib only); BundleError when the file is missing or corrupt."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise BundleError(f"knowledge base file {path} is missing") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"knowledge base file {path} cannot be read ({exc})") from exc
        entries: list[Entry] = []
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BundleError(f"knowledge base file {path}: line {lineno} is not valid JSON") from exc
            entries.append(_entry_from_json(path, lineno, obj))
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            raise BundleError(f"knowledge base file {path} repeats an entry id")
        return cls(entries=entries, warnings=[], source=str(path))


def _entry_from_json(path: Path, lineno: int, obj: Any) -> Entry:
    ok = isinstance(obj, dict) and isinstance(obj.get("id"), str) and isinstance(obj.get("answer"), str)
    ok = ok and all(obj.get(key) is None or isinstance(obj[key], str) for key in ("question", "intent"))
    if not ok:
        raise BundleError(f"knowledge base file {path}: line {lineno} is not an entry with string id and answer")
    return Entry(id=obj["id"], answer=obj["answer"], question=obj.get("question"), intent=obj.get("intent"))


# ---------------------------------------------------------------- reading a user file


def _key(name: str) -> str:
    """A column name folded for matching: 'FAQ Question' -> 'faq_question'."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _detect(columns: list[str], names: Sequence[str], taken: set[str]) -> str | None:
    """The free column whose folded name comes first in ``names``."""
    by_key: dict[str, str] = {}
    for column in columns:
        if column not in taken:
            by_key.setdefault(_key(column), column)
    return next((by_key[name] for name in names if name in by_key), None)


def _columns(
    path: Path, columns: list[str], question_col: str | None, answer_col: str | None,
    id_col: str | None, intent_col: str | None,
) -> dict[str, str]:  # fmt: skip
    """role -> column: the columns asked for, the others detected by name (answer required)."""
    from slm.data.loading import _column_list, _error, _find_column

    given = {"answer": answer_col, "question": question_col, "id": id_col, "intent": intent_col}
    chosen: dict[str, str] = {}
    for role, name in given.items():
        if name is not None:
            column = _find_column(path, columns, name, role)
            clash = next((r for r, c in chosen.items() if c == column), None)
            if clash:
                raise ConfigError(f"the {role} column and the {clash} column are both {column!r}")
            chosen[role] = column
    names = {"answer": ANSWER_NAMES, "question": QUESTION_NAMES, "id": ID_NAMES, "intent": INTENT_NAMES}
    for role in ("answer", "question", "id", "intent"):
        if role not in chosen:
            found = _detect(columns, names[role], set(chosen.values()))
            if found is not None:
                chosen[role] = found
    if "answer" not in chosen:
        raise _error(
            path,
            f"no answer column found (looked for {', '.join(ANSWER_NAMES[:6])}...); pass --answer-col "
            f"(columns: {_column_list(columns)})",
        )
    return chosen


def _read_table(path: Path, fmt: str) -> Any:
    """The file as a DataFrame of string-named columns; unlike the training loader, zero rows is fine."""
    from slm.data.loading import _decode_utf8, _read_bytes, _read_delimited, _read_jsonl, _read_parquet

    if fmt == "parquet":
        frame = _read_parquet(path)
    else:
        text = _decode_utf8(path, _read_bytes(path))
        frame = _read_jsonl(path, text) if fmt == "jsonl" else _read_delimited(path, text, fmt)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _fold_question(question: str) -> str:
    return " ".join(question.split()).casefold()


def _ids(path: Path, column: str, values: list[str], rows: list[int]) -> list[str]:
    from slm.data.loading import _error, _q

    blank = [rows[i] for i, value in enumerate(values) if not value]
    if blank:
        raise _error(
            path,
            f"{len(blank)} row(s) have a blank id in column {_q(column)} (first at data row {blank[0] + 1}); "
            "fill them in or drop the id column to number entries automatically",
        )
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in first:
            raise _error(
                path,
                f"id {_q(value)} in column {_q(column)} is used twice (data rows {rows[first[value]] + 1} and "
                f"{rows[i] + 1}); ids must be unique",
            )
        first[value] = i
    return values


def read_knowledge_base(
    path: str | Path,
    *,
    question_col: str | None = None,
    answer_col: str | None = None,
    id_col: str | None = None,
    intent_col: str | None = None,
    fmt: str | None = None,
) -> KnowledgeBase:
    """Read FAQ entries from CSV/TSV/JSONL/Parquet; DataError (one line, naming the file) on unusable input.

    Columns not given are detected by name; only the answer column is required. Ids come from the id
    column (unique, non-blank) or are generated as ``faq-N``, N being the entry's data row number.
    Blank answers, exact duplicates and repeated questions with a different answer (the first is kept)
    are dropped with a warning. A file with a header but no rows gives an empty knowledge base.
    """
    from slm.data import loading
    from slm.data.loading import _error, _plural, _q, cell_text

    path = Path(path)
    loading._check_file(path)
    fmt = loading._resolve_format(path, fmt)
    loading._check_not_empty(path)
    frame = _read_table(path, fmt)
    columns = list(frame.columns)
    chosen = _columns(path, columns, question_col, answer_col, id_col, intent_col)
    warnings: list[str] = []
    if len(frame) == 0:
        warnings.append(f"knowledge base {path} is empty: it has columns but no rows")
        return KnowledgeBase(entries=[], warnings=warnings, source=str(path), columns=chosen)

    def column(role: str) -> list[str]:
        return [cell_text(v).strip() for v in frame[chosen[role]].tolist()] if role in chosen else [""] * len(frame)

    answers, questions, ids_raw, intents = column("answer"), column("question"), column("id"), column("intent")
    rows = [i for i, answer in enumerate(answers) if answer]
    if not rows:
        raise _error(path, f"all {len(answers)} answers in column {_q(chosen['answer'])} are blank")
    if len(rows) < len(answers):
        first_blank = next(i for i, answer in enumerate(answers) if not answer)
        warnings.append(
            f"dropped {_plural(len(answers) - len(rows), 'row')} with a blank answer in column "
            f"{_q(chosen['answer'])} (first at data row {first_blank + 1})"
        )
    if "id" in chosen:
        ids = _ids(path, chosen["id"], [ids_raw[i] for i in rows], rows)
    else:
        ids = [f"{ID_PREFIX}{i + 1}" for i in rows]
    if "question" not in chosen:
        warnings.append(
            f"no question column found; entries are matched on the text of answer column {_q(chosen['answer'])} only"
        )

    entries, duplicates, conflicts = _deduplicated(ids, rows, questions, answers, intents)
    warnings += _duplicate_warnings(duplicates, conflicts)
    return KnowledgeBase(entries=entries, warnings=warnings, source=str(path), columns=chosen)


def _deduplicated(
    ids: list[str], rows: list[int], questions: list[str], answers: list[str], intents: list[str]
) -> tuple[list[Entry], list[tuple[str, str]], list[tuple[str, int, int]]]:
    """``(entries, duplicates, conflicts)``: the rows as entries, less exact repeats of an earlier question and
    answer (``duplicates``: dropped id, kept id) and repeated questions with another answer (``conflicts``:
    question, kept row, dropped row); the first occurrence is kept."""
    entries: list[Entry] = []
    seen_pairs: dict[tuple[str, str], str] = {}
    seen_questions: dict[str, tuple[str, int]] = {}
    duplicates: list[tuple[str, str]] = []  # (dropped id, kept id)
    conflicts: list[tuple[str, int, int]] = []  # (question, kept row, dropped row)
    for entry_id, i in zip(ids, rows, strict=True):
        question, answer = questions[i] or None, answers[i]
        pair = (question or "", answer)
        if pair in seen_pairs:
            duplicates.append((entry_id, seen_pairs[pair]))
            continue
        if question is not None:
            folded = _fold_question(question)
            if folded in seen_questions:
                conflicts.append((question, seen_questions[folded][1], i))
                continue
            seen_questions[folded] = (entry_id, i)
        seen_pairs[pair] = entry_id
        entries.append(Entry(id=entry_id, answer=answer, question=question, intent=intents[i] or None))
    return entries, duplicates, conflicts


def _duplicate_warnings(duplicates: list[tuple[str, str]], conflicts: list[tuple[str, int, int]]) -> list[str]:
    from slm.data.loading import _plural, _q, _verb

    warnings = []
    if duplicates:
        dropped, kept = duplicates[0]
        warnings.append(
            f"dropped {_plural(len(duplicates), 'row')} repeating an earlier question and answer exactly "
            f"(e.g. {_q(dropped)} repeats {_q(kept)})"
        )
    if conflicts:
        question, kept_row, dropped_row = conflicts[0]
        warnings.append(
            f"{_plural(len(conflicts), 'row')} {_verb(len(conflicts), 'repeats', 'repeat')} an earlier question "
            "with a different answer; kept the first "
            f"and dropped the rest (e.g. {_q(question)} at data rows {kept_row + 1} and {dropped_row + 1})"
        )
    return warnings
