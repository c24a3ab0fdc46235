"""``slm quickstart``: BANKING77 end to end on this CPU, on built-in defaults (the README's first command)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from slm.cli._results import print_bundle_summary, print_next_steps
from slm.cli._util import ForceOpt, QuietOpt, command, load_api, out
from slm.training.config import TrainConfig


@command()
def quickstart(
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle directory to write.")] = Path(
        "runs/quickstart"
    ),
    max_minutes: Annotated[
        float, typer.Option("--max-minutes", help="Time budget for fine-tuning the transformer.")
    ] = 4.0,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum passes over the training data.")] = 2,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads for torch (default: all cores).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted quickstart.")] = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Train and evaluate on BANKING77 (77 banking intents) end to end, on this CPU.

    Fetches the data set, fine-tunes the default base model with a time budget (about
    --max-minutes of fine-tuning, about 5 minutes in all on 2 cores), scores it on the official test
    split next to the TF-IDF baseline, writes a bundle and its report to OUTPUT, and shows what to
    run next.
    """
    config = TrainConfig(epochs=epochs, max_minutes=max_minutes, threads=threads)
    from slm.data.sources import fetch_banking77
    from slm.fileio import claim_output_folder

    claim_output_folder(output, force=force)  # before the download, not after the training

    out.print("[bold]slm quickstart[/bold]: BANKING77, 77 customer-service intents")
    train_csv, test_csv = fetch_banking77()
    out.print(f"  train: {escape(str(train_csv))}\n  test:  {escape(str(test_csv))}")
    out.print(
        f"Fine-tuning for at most {epochs} epoch(s) / {max_minutes:g} minutes, then evaluating on the test split…"
    )
    api = load_api()
    start = time.monotonic()
    bundle = api.train(
        train_csv,
        output=output,
        test=test_csv,
        config=config,
        resume=resume,
        show_progress=not quiet,
        force=force,
    )
    print_bundle_summary(bundle, time.monotonic() - start)
    _print_examples(bundle)
    print_next_steps(output, test_csv)
    out.print("  your data: slm train your_data.csv -o runs/mine")


def _print_examples(bundle: Any) -> None:
    examples = [
        "I still have not received my new card, it has been two weeks.",
        "Why was I charged a fee for withdrawing cash?",
        "How do I change my PIN?",
    ]
    results = bundle.predict(examples)
    out.print("\n[bold]Try it[/bold]")
    for text, result in zip(examples, results, strict=True):
        label = result["label"] if isinstance(result["label"], str) else ", ".join(result["label"])
        out.print(f"  {escape(text)}\n    → {escape(label)} ({100 * float(result['score']):.0f}%)")
