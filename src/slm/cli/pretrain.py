"""``slm pretrain``: continue a base model's pre-training on unlabelled domain text (:func:`slm.api.pretrain`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.cli._util import BaseModelOpt, ForceOpt, MaxLengthOpt, QuietOpt, TextColOpt, ThreadsOpt, command, load_api, out
from slm.training.pretrain_config import OBJECTIVES, PretrainConfig

Objective = StrEnum("Objective", {o: o for o in OBJECTIVES})  # type: ignore[misc]
PRETRAIN_DEFAULTS = PretrainConfig()
DEFAULT_OBJECTIVE = Objective(PRETRAIN_DEFAULTS.objective)


@command(no_args_is_help=True)
def pretrain(
    corpus: Annotated[
        list[Path],
        typer.Argument(
            metavar="CORPUS...",
            help="Unlabelled in-domain texts: CSV, TSV, JSONL or Parquet files (a labelled file's text column works).",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Base-model directory to write.")],
    base_model: BaseModelOpt = "auto",
    objective: Annotated[
        Objective,
        typer.Option(
            "--objective",
            help="mlm: masked-language modelling; simcse: unsupervised contrastive sentence embeddings (any encoder).",
        ),
    ] = DEFAULT_OBJECTIVE,
    max_minutes: Annotated[
        float, typer.Option("--max-minutes", help="Time budget; the schedule is fitted to it.")
    ] = float(PRETRAIN_DEFAULTS.max_minutes or 8.0),
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum passes over the corpus.")] = PRETRAIN_DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per step.")] = PRETRAIN_DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the encoder.")] = PRETRAIN_DEFAULTS.learning_rate,
    max_length: MaxLengthOpt = PRETRAIN_DEFAULTS.max_length,
    text_col: TextColOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample, masks and order.")] = PRETRAIN_DEFAULTS.seed,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Continue pre-training a base model on unlabelled in-domain text and write a base-model directory.

    Use the result with 'slm train DATA --base-model OUTPUT'. The corpus's held-out loss before and after
    is printed and recorded in OUTPUT/slm_pretrain.json.
    """
    config = PretrainConfig(
        objective=objective.value, max_minutes=max_minutes, epochs=epochs, batch_size=batch_size,
        learning_rate=lr, max_length=max_length, seed=seed, threads=threads,
    )  # fmt: skip
    api = load_api()
    result = api.pretrain(
        corpus, output=output, base_model=base_model, text_col=text_col, config=config,
        show_progress=not quiet, force=force,
    )  # fmt: skip
    out.print(
        f"pre-trained {escape(result.base_model)} ({result.objective}) on {result.texts:,} texts: {result.steps:,} "
        f"steps, {result.epochs:g} epochs, {result.seconds / 60:.1f} min; held-out loss "
        f"{result.held_out_loss_before:.3f} -> {result.held_out_loss_after:.3f}"
    )
    out.print(f"next: slm train DATA --base-model {escape(str(output))} -o runs/model")
