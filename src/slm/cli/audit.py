"""``slm audit privacy``: membership inference and canary exposure of a bundle (:func:`slm.api.audit_privacy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.cli._util import ForceOpt, LabelColOpt, TextColOpt, app, guard_group, load_api, out
from slm.cli.predict import Component

group = typer.Typer(
    help="Audit what a trained bundle gives away about its training data.",
    no_args_is_help=True,
)


@group.command("privacy", no_args_is_help=True)
def privacy_command(
    bundle: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="Bundle directory to audit (PyTorch or exported).", show_default=False),
    ],  # fmt: skip
    train: Annotated[
        Path,
        typer.Option("--train", help="The labelled file the bundle was trained on (the members).", show_default=False),
    ],  # fmt: skip
    holdout: Annotated[
        Path,
        typer.Option(
            "--holdout",
            help="Labelled texts from the same source the bundle never saw (the non-members).",
            show_default=False,
        ),
    ],  # fmt: skip
    canaries: Annotated[
        Path | None,
        typer.Option(
            "--canaries",
            help="Spec (JSON) of the canaries planted in the training file, "
            "from slm.audit.canaries.plant: their exposure is measured.",
        ),
    ] = None,  # fmt: skip
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="A bundle trained without the members (e.g. on the holdout): adds the reference-calibrated attack.",
        ),
    ] = None,  # fmt: skip
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write report.json, report.md and roc.png here.")
    ] = None,
    component: Annotated[
        Component | None,
        typer.Option("--component", help="Which model to audit (default: the one the bundle ships)."),
    ] = None,
    max_samples: Annotated[
        int, typer.Option("--max-samples", help="Members attacked at most (and as many non-members).")
    ] = 2000,
    candidates: Annotated[
        int, typer.Option("--candidates", help="Candidate secrets sampled to rank each canary.")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the samples and the bootstrap.")] = 0,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    force: ForceOpt = False,
) -> None:
    """Membership inference (can the model's loss tell training texts from holdout texts?) and canary exposure.

    Prints the attack AUC with its 95% bootstrap CI and the true-positive rate at 1% false positives (AUC 0.5:
    nothing to see), the canaries' exposure, and the (ε, δ) a differentially private bundle records. An
    exported bundle is audited without PyTorch.
    """
    from slm.audit.report import summary_lines

    api = load_api()  # pandas, scikit-learn and matplotlib come with the training extra
    report = api.audit_privacy(
        bundle, train=train, holdout=holdout, canaries=canaries, reference=reference, output=output,
        text_col=text_col, label_col=label_col, component=component.value if component else None,
        max_samples=max_samples, candidates=candidates, seed=seed, force=force,
    )  # fmt: skip
    for line in summary_lines(report):
        out.print(escape(line))
    if output is not None:
        out.print(f"report written to {escape(str(output))}")


app.add_typer(guard_group(group), name="audit")
