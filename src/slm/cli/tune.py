"""``slm tune``: search training hyper-parameters within a time budget (:func:`slm.api.tune`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from slm.cli._util import (
    DEFAULTS,
    BaseModelOpt,
    ForceOpt,
    LabelColOpt,
    LabelColsOpt,
    LabelSepOpt,
    MaxLengthOpt,
    QuietOpt,
    TextColOpt,
    ThreadsOpt,
    ValidationOpt,
    ValSizeOpt,
    command,
    load_api,
    out,
    split_cols,
)
from slm.training.config import TrainConfig


@command(no_args_is_help=True)
def tune(
    data: Annotated[
        Path,
        typer.Argument(metavar="DATA", help="Labelled CSV, TSV, JSONL or Parquet file.", show_default=False),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for best_config.json, trials.md/.json and study.db.")
    ],
    budget: Annotated[
        str, typer.Option("--budget", help="Wall-clock budget for the whole search: 20m, 90s, 1.5h.")
    ] = "20m",
    methods: Annotated[
        str, typer.Option("--methods", help="Comma-separated methods to search among: full,lora,fewshot,head.")
    ] = "full,lora,fewshot,head",
    max_train_examples: Annotated[
        int | None,
        typer.Option(
            "--max-train-examples",
            help="Trials train on a stratified sample of this many texts (default: sized so the default "
            "configuration takes a quarter of the budget; 0: all).",
        ),
    ] = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    label_cols: LabelColsOpt = None,
    label_sep: LabelSepOpt = None,
    validation: ValidationOpt = None,
    val_size: ValSizeOpt = 0.1,
    test_size: Annotated[
        float, typer.Option("--test-size", help="Fraction of DATA held out (unused) for a later 'slm train'.")
    ] = 0.1,
    base_model: BaseModelOpt = DEFAULTS.base_model,
    max_length: MaxLengthOpt = DEFAULTS.max_length,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the sampler.")] = DEFAULTS.seed,
    threads: ThreadsOpt = DEFAULTS.threads,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Search training hyper-parameters within a time budget (Optuna) and save the best configuration.

    Trial 0 is the default configuration; later trials vary the method (full fine-tuning, LoRA,
    few-shot, head-only), learning rates, epochs, batch size and weight decay, and weak trials are
    pruned after an epoch. Everything is scored on the validation split; the test split is left
    untouched for 'slm train DATA --config OUTPUT/best_config.json'. Running the same command
    again continues the study.
    """
    config = TrainConfig(base_model=base_model, max_length=max_length, seed=seed, threads=threads)
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    api = load_api()
    result = api.tune(
        data,
        output=output,
        budget=budget,
        text_col=text_col,
        label_col=label_col,
        label_cols=split_cols(label_cols),
        label_sep=label_sep,
        validation=validation,
        val_size=val_size,
        test_size=test_size,
        config=config,
        methods=chosen,
        max_train_examples=max_train_examples,
        show_progress=not quiet,
        force=force,
    )
    from slm.training.tune import summary_table

    table = Table(title="slm tune", show_header=False)
    for key, value in summary_table(result):
        table.add_row(key, value)
    out.print(table)
    out.print(f"trials: {escape(str(output / 'trials.md'))}")
    out.print(f"next: slm train {escape(str(data))} --config {escape(str(output / 'best_config.json'))} -o runs/tuned")


# ---------------------------------------------------------------- evaluate
