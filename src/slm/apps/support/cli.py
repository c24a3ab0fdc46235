"""``slm app support``: build, evaluate and query a customer-service assistant.

The app's command group, mounted by the main CLI as ``slm app support ...`` (see :mod:`slm.plugins`),
which also runs every command under its error guard: user errors are raised as :class:`~slm.errors.SlmError`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.apps.support.plugin import HELP
from slm.console import out
from slm.errors import ConfigError
from slm.fileio import FORCE_HELP

app = typer.Typer(help=HELP, no_args_is_help=True)


IntentsOpt = Annotated[Path, typer.Option(help="Labelled intents (text, intent): CSV, TSV, JSONL or Parquet.")]
BuildOutputOpt = Annotated[
    Path, typer.Option("--output", "-o", help="Assistant bundle to write (replaced on success).")
]
KnowledgeOpt = Annotated[
    Path | None,
    typer.Option(help="Knowledge base of question/answer pairs (answer required; id, intent optional)."),
]
TemplatesOpt = Annotated[Path | None, typer.Option(help="Answer templates per intent (JSON, or intent/answer table).")]
ValidationOpt = Annotated[
    Path | None,
    typer.Option(help="Validation intents for thresholds; rows labelled --oos-label are out-of-scope examples."),
]
IntentBundleOpt = Annotated[
    Path | None, typer.Option(help="Reuse this intent bundle (from 'slm train') instead of training one.")
]
PairsOpt = Annotated[
    Path | None, typer.Option(help="Extra question/answer pairs to fine-tune the retriever on (e.g. past tickets).")
]
OosLabelOpt = Annotated[str, typer.Option(help="Intent label of out-of-scope examples.")]
TargetAccuracyOpt = Annotated[
    float, typer.Option(help="In-scope accuracy the out-of-scope threshold must keep on validation.")
]
FaqThresholdOpt = Annotated[
    float | None,
    typer.Option(help="Cosine similarity an FAQ answer needs (default: chosen on the knowledge base)."),
]
RetrieverEpochsOpt = Annotated[int, typer.Option(help="Fine-tuning epochs of the retriever (0: keep it un-tuned).")]
RetrieverMinutesOpt = Annotated[float | None, typer.Option(help="Time budget of retriever fine-tuning.")]
EpochsOpt = Annotated[int, typer.Option(help="Intent model fine-tuning epochs.")]
MaxMinutesOpt = Annotated[float | None, typer.Option(help="Time budget of intent fine-tuning.")]
BaseModelOpt = Annotated[str, typer.Option(help="Base model: registry name, local directory or hub id.")]
Int8Opt = Annotated[bool, typer.Option(help="Quantize the encoders to int8 when they agree with fp32.")]
GeneratorOpt = Annotated[
    str | None,
    typer.Option(help="Rewrite FAQ answers with a small LLM constrained to the retrieved text: smollm2-135m."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help=FORCE_HELP)]


@app.command("build", no_args_is_help=True)
def build(
    intents: IntentsOpt,
    output: BuildOutputOpt,
    knowledge: KnowledgeOpt = None,
    templates: TemplatesOpt = None,
    validation: ValidationOpt = None,
    intent_bundle: IntentBundleOpt = None,
    pairs: PairsOpt = None,
    oos_label: OosLabelOpt = "oos",
    target_accuracy: TargetAccuracyOpt = 0.95,
    faq_threshold: FaqThresholdOpt = None,
    retriever_epochs: RetrieverEpochsOpt = 1,
    retriever_minutes: RetrieverMinutesOpt = None,
    epochs: EpochsOpt = 4,
    max_minutes: MaxMinutesOpt = None,
    base_model: BaseModelOpt = "minilm-l6",
    int8: Int8Opt = True,
    generator: GeneratorOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train (or reuse) an intent model, fit out-of-scope detection, build the FAQ index: one assistant bundle."""
    from slm.apps.support.build import SupportConfig, build_assistant
    from slm.apps.support.contrastive import RetrieverTraining
    from slm.fileio import claim_output_folder
    from slm.training.config import TrainConfig

    claim_output_folder(output, force=force)

    config = SupportConfig(
        base_model=base_model,
        target_accuracy=target_accuracy,
        oos_label=oos_label,
        faq_threshold=faq_threshold,
        retriever=RetrieverTraining(epochs=retriever_epochs, max_minutes=retriever_minutes),
        tune_retriever=retriever_epochs > 0,
        int8=int8,
        generator=generator,
    )
    train_config = TrainConfig(base_model=base_model, epochs=epochs, max_minutes=max_minutes)
    manifest = build_assistant(
        intents, knowledge, output=output, templates=templates, validation=validation, intent_bundle=intent_bundle,
        pairs=pairs, config=config, train_config=train_config, show_progress=sys.stderr.isatty(),
    )  # fmt: skip
    scope = manifest.extra["scope"]  # the assistant's own sections
    out.print(
        f"[bold]{escape(str(output))}[/bold]: {len(manifest.labels or [])} intents, "
        f"{manifest.extra['knowledge_base']['entries']:,} FAQ entries"
    )
    out.print(
        f"  out-of-scope threshold keeps {scope['validation_in_scope_accuracy']:.1%} validation in-scope accuracy "
        f"(target {scope['target_in_scope_accuracy']:.1%})"
        + (
            f", rejects {scope['validation_oos_recall']:.1%} of validation out-of-scope queries"
            if scope.get("validation_oos_recall") is not None
            else ""
        )  # fmt: skip
    )
    if not scope["target_met"]:
        out.print("  [yellow]the intent model misses the target accuracy even without rejecting anything[/]")
    out.print(
        f'  try: slm app support ask {escape(str(output))} "your question"   ·   serve: slm serve {escape(str(output))}'
    )


@app.command("ask", no_args_is_help=True)
def ask(
    bundle: Annotated[Path, typer.Argument(help="Assistant bundle.")],
    questions: Annotated[list[str], typer.Argument(help="Questions ('-' reads one per line from stdin).")],
    context: Annotated[str | None, typer.Option(help='JSON object of slot values, e.g. \'{"name": "Ana"}\'.')] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON reply per line.")] = False,
) -> None:
    """Answer questions with an assistant bundle and show each decision path."""
    from slm.apps.support.assistant import load_assistant

    slots = None
    if context is not None:
        try:
            slots = json.loads(context)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--context is not valid JSON: {exc}") from None
        if not isinstance(slots, dict):
            raise ConfigError("--context must be a JSON object")
    if questions == ["-"]:
        questions = [line.strip() for line in sys.stdin if line.strip()]
    assistant = load_assistant(bundle)
    replies = assistant.answer_many(questions, contexts=[slots] * len(questions))
    for question, reply in zip(questions, replies, strict=True):
        if as_json:
            sys.stdout.write(json.dumps({"question": question, **reply.to_dict()}, ensure_ascii=False) + "\n")
            continue
        out.print(f"[bold]{escape(question)}[/bold]")
        label = {"intent": "[green]intent[/]", "faq": "[cyan]faq[/]", "handoff": "[yellow]handoff[/]"}[reply.decision]
        detail = f" ({escape(reply.reason)})" if reply.reason else ""
        out.print(f"  {label}{detail}: {escape(reply.answer or 'passed to a person')}")
        for step in reply.path:
            out.print(f"    · {escape(step)}")


@app.command("evaluate", no_args_is_help=True)
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Assistant bundle.")],
    intents: Annotated[
        Path | None,
        typer.Option(help="Labelled test intents; rows labelled with the bundle's out-of-scope label are OOS."),
    ] = None,
    queries: Annotated[
        Path | None, typer.Option(help="Retrieval test queries: a question column and the gold entry id column ('id').")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for report.json and the trade-off PNG.")
    ] = None,
    untuned: Annotated[
        bool, typer.Option(help="Also score the un-fine-tuned encoder (re-embeds the knowledge base).")
    ] = True,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Intent accuracy, out-of-scope precision/recall, Recall@1/5 and MRR against BM25 and the un-tuned encoder."""
    from slm.apps.support.assistant import load_assistant
    from slm.apps.support.report import evaluation_report, print_report

    if intents is None and queries is None:
        raise ConfigError("give --intents and/or --queries to evaluate on")
    assistant = load_assistant(bundle)
    report = evaluation_report(assistant, intents=intents, queries=queries, output=output, untuned=untuned, force=force)
    print_report(report, out)


@app.command("unanswered", no_args_is_help=True)
def unanswered(
    db: Annotated[Path, typer.Argument(help="Conversation log of 'slm serve' (its --support-db).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="CSV to write: text,intent,reason,conversation_id,ts.")
    ],
    assistant: Annotated[str | None, typer.Option(help="Only the questions of this served assistant.")] = None,
    raw_csv: Annotated[
        bool, typer.Option("--raw-csv", help="Write questions as they are, without neutralising spreadsheet formulas.")
    ] = False,
) -> None:
    """Export the handed-off questions as a CSV to label: fill in 'intent', then train on it.

    Customers wrote these questions: a cell a spreadsheet would run as a formula (starting with =, +,
    -, @, tab or carriage return, other than a plain number) gets a leading ' unless --raw-csv is given.
    """
    from slm.apps.support.conversations import read_unanswered
    from slm.cells import csv_cell, csv_row
    from slm.fileio import write_text_atomic

    rows = read_unanswered(db, assistant=assistant)
    lines = [csv_row(["text", "intent", "reason", "conversation_id", "ts"])]
    for row in rows:
        cells = [row["question"], "", row["reason"] or "", row["conversation_id"], row["ts"]]
        lines.append(csv_row([csv_cell(cell, raw=raw_csv) for cell in cells]))
    write_text_atomic(output, "".join(lines))
    out.print(f"[bold]{escape(str(output))}[/bold]: {len(rows):,} unanswered questions to label (column intent)")


@app.command("purge", no_args_is_help=True)
def purge(
    db: Annotated[Path, typer.Argument(help="Conversation log of 'slm serve' (its --support-db).")],
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete turns logged longer ago than this: 30d, 12h (a bare number is days)."
        ),
    ] = "90d",
) -> None:
    """Delete old turns, customers' questions included ('slm serve' does it at start and hourly with
    --support-retention)."""
    from slm.apps.support.conversations import purge_log
    from slm.durations import parse_duration

    removed = purge_log(db, parse_duration(older_than, bare_unit="d", what="--older-than"))
    out.print(f"deleted {removed:,} turn{'' if removed == 1 else 's'} older than {older_than} from {escape(str(db))}")
