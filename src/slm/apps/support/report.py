"""The report of ``slm app support evaluate``: files in, one JSON report (+ PNG) and a table out."""

from __future__ import annotations

from pathlib import Path

from slm.apps.support.assistant import Assistant
from slm.errors import DataError
from slm.fileio import claim_output_files, record_output, write_json_atomic


def read_queries(path: str | Path) -> tuple[list[str], list[set[str]]]:
    """Retrieval test queries: a question column and a gold id column (several ids split on '|')."""
    from slm.data.loading import _find_column, _read_frame, _resolve_format, cell_text

    path = Path(path)
    if not path.is_file():
        raise DataError(f"queries file not found: {path}")
    frame = _read_frame(path, _resolve_format(path, None))
    columns = list(frame.columns)
    question_col = _find_column(path, columns, "question", "question")
    id_col = _find_column(path, columns, "id", "gold id")
    questions, gold = [], []
    for question, ids in zip(frame[question_col], frame[id_col], strict=True):
        question, ids = cell_text(question).strip(), cell_text(ids).strip()
        if question and ids:
            questions.append(question)
            gold.append({i.strip() for i in ids.split("|") if i.strip()})
    if not questions:
        raise DataError(f"{path} has no rows with both a question and an id")
    return questions, gold


def evaluation_report(
    assistant: Assistant,
    *,
    intents: str | Path | None = None,
    queries: str | Path | None = None,
    output: str | Path | None = None,
    untuned: bool = True,
    force: bool = False,
) -> dict:
    """Scope and retrieval metrics of ``assistant`` on the given files.

    ``output`` receives report.json and tradeoff.png; such files there that slm did not write are refused
    before any work, or with ``force`` moved aside.
    """
    if output is not None:
        claim_output_files(Path(output), ("report.json", "tradeoff.png"), force=force)
    from slm.apps.support.evaluate import plot_tradeoff, retrieval_evaluation, scope_evaluation
    from slm.pipeline import DataSource

    report: dict = {"bundle": str(assistant.path)}
    if intents is not None:
        ds, _ = DataSource(intents).load(min_classes=1)
        unknown = sorted({lab for lab in ds.labels if lab not in assistant.labels and lab != assistant.oos_label})
        if unknown:
            raise DataError(
                f"{intents}: intents the assistant does not know: {', '.join(unknown[:5])} "
                f"(out-of-scope rows must be labelled '{assistant.oos_label}')"
            )
        scope = scope_evaluation(assistant, ds.texts, list(ds.labels))
        scope.pop("scores")
        report["intents"] = scope
        if output is not None and scope["out_of_scope"] and scope["in_scope"]:
            chosen = {k: scope[k] for k in ("in_scope_accuracy", "oos_recall", "oos_precision")}
            png = plot_tradeoff(scope["curve"], chosen, Path(output) / "tradeoff.png",
                                f"{Path(intents).name}: out-of-scope detection")  # fmt: skip
            report["intents"]["plot"] = str(png)
    if queries is not None:
        questions, gold = read_queries(queries)
        report["retrieval"] = retrieval_evaluation(assistant, questions, gold, untuned=untuned)
    if output is not None:
        write_json_atomic(Path(output) / "report.json", report)
        record_output(Path(output), [n for n in ("report.json", "tradeoff.png") if (Path(output) / n).exists()])
    return report


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_report(report: dict, console) -> None:
    """Tables of the report on ``console``."""
    from rich.table import Table

    if "intents" in report:
        s = report["intents"]
        table = Table(title=f"intents: {s['in_scope']:,} in scope, {s['out_of_scope']:,} out of scope")
        for column in ("in-scope accuracy", "without rejection", "OOS recall", "OOS precision", "OOS F1"):
            table.add_column(column, justify="right")
        table.add_row(_pct(s["in_scope_accuracy"]), _pct(s["accuracy_without_rejection"]), _pct(s["oos_recall"]),
                      _pct(s["oos_precision"]), _pct(s["oos_f1"]))  # fmt: skip
        console.print(table)
    if report.get("retrieval"):
        table = Table(title="retrieval")
        for column in ("retriever", "Recall@1", "Recall@5", "MRR@10", "queries"):
            table.add_column(column, justify="right" if column != "retriever" else "left")
        for name, row in report["retrieval"].items():
            table.add_row(name, _pct(row["recall_at_1"]), _pct(row["recall_at_5"]), f"{row['mrr_at_10']:.3f}",
                          str(row["queries"]))  # fmt: skip
        console.print(table)
