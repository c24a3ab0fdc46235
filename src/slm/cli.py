"""The ``slm`` command line: train, evaluate, predict, models, info, quickstart (export, compress: cli_compress).

Every user-fixable problem ends as one line ``error: <message>`` on stderr and the exit code of
the :class:`~slm.errors.SlmError` raised; nothing heavy (torch, transformers, the data layer) is
imported until a command needs it, so ``--help`` and bad input answer at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slm.errors import ConfigError, DataError, SlmError, one_line
from slm.extras import MissingExtra, from_import_error
from slm.fileio import FORCE_HELP
from slm.training.config import METHODS, TrainConfig
from slm.training.distributed import Launch

if TYPE_CHECKING:
    pass


def _quiet_libraries() -> None:
    """Silence transformers / Hugging Face chatter, now and for whenever they are imported later."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported: the environment is read too late, set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


_quiet_libraries()

DEFAULTS = TrainConfig()
PREFERRED_METRICS = (
    "accuracy", "macro_f1", "micro_f1", "weighted_f1", "samples_f1", "macro_precision", "macro_recall",
    "exact_match", "subset_accuracy", "hamming_loss",
)  # fmt: skip
MODEL_ORDER = ("transformer", "ngram_baseline", "ensemble")
PERCENT_WORDS = ("accuracy", "f1", "precision", "recall", "auc", "exact_match", "hamming", "jaccard", "top")

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="slm",
    help=(
        "Fine-tune a small pretrained language model on your labelled text, on an ordinary CPU, "
        "and compare it honestly with a TF-IDF + logistic-regression baseline.\n\n"
        "Start with: slm quickstart"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ---------------------------------------------------------------- error handling


def _fail(message: object, code: int) -> NoReturn:
    """Print ``error: message`` as exactly one line on stderr and exit with ``code``."""
    sys.stdout.flush()
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def _debug() -> bool:
    return os.environ.get("SLM_DEBUG", "").strip() not in ("", "0", "false", "no")


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Turn every exception into one line on stderr and the right exit code."""
    try:
        yield
    except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
        raise
    except SlmError as exc:
        if _debug():
            traceback.print_exc()
        message = one_line(exc) or type(exc).__name__
        if exc.exit_code == 130 and "resume" not in message:
            message += " (run the same command again with --resume to continue)"
        _fail(message, exc.exit_code)
    except ModuleNotFoundError as exc:
        # An optional dependency imported deep inside the command: name the extra that installs it.
        if _debug():
            raise
        missing = from_import_error(exc)
        if missing is None:
            _fail_internal(exc)
        _fail(missing, missing.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted (Ctrl-C)", 130)
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None
    except Exception as exc:
        if _debug():
            raise
        _fail_internal(exc)


def _fail_internal(exc: BaseException) -> NoReturn:
    """A bug, not a user error: one line all the same, with how to get the traceback."""
    _fail(f"internal error: {type(exc).__name__}: {one_line(exc)} (set SLM_DEBUG=1 for a traceback)", 1)


def _command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` whose function runs under :func:`_guard`."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def guarded(*a: Any, **kw: Any) -> Any:
            with _guard():
                return func(*a, **kw)

        return app.command(*args, **kwargs)(guarded)

    return decorate


def _api() -> Any:
    """``slm.api``, imported on first use (it brings in torch and transformers)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        from slm import api
    except ModuleNotFoundError as exc:
        raise MissingExtra(exc.name or "torch", "train") from None

    _quiet_libraries()
    return api


def _load(bundle: Path) -> Any:
    """Open a bundle; an exported one predicts without PyTorch, so this imports it only when needed."""
    from slm.bundle.bundle import Bundle

    loaded = Bundle(bundle)
    if loaded.backend == "torch" and any(c in loaded.components for c in ("transformer", "ensemble")):
        _api()  # PyTorch bundle: check the training extra is installed and quiet transformers
    return loaded


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"slm {version('slm')}")
        except PackageNotFoundError:
            typer.echo("slm (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """slm: small, fast, domain-specific text classifiers on an ordinary CPU."""
    from slm.logs import attach_cli_handler

    attach_cli_handler()  # the library logs its notes and progress lines; the CLI shows them on stderr


# ---------------------------------------------------------------- shared options


class ClassWeight(StrEnum):
    none = "none"
    balanced = "balanced"


DEFAULT_CLASS_WEIGHT = ClassWeight(DEFAULTS.class_weight)

# Built from the one list of methods; mypy reads only literal member lists, so it knows no members of it.
Method = StrEnum("Method", {m: m for m in METHODS})  # type: ignore[misc]
DEFAULT_METHOD = Method(DEFAULTS.method)


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class ShardFormat(StrEnum):
    parquet = "parquet"
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"


class Component(StrEnum):
    ensemble = "ensemble"
    transformer = "transformer"
    ngram = "ngram"
    static = "static"


TextColOpt = Annotated[
    str | None,
    typer.Option(
        "--text-col",
        help="Column holding the text (default: found by name, e.g. 'text').",
    ),
]
LabelColOpt = Annotated[
    str | None,
    typer.Option(
        "--label-col",
        help="Column holding the label (default: found by name, e.g. 'label').",
    ),
]
LabelColsOpt = Annotated[
    str | None,
    typer.Option(
        "--label-cols",
        metavar="A,B,C",
        help="Multi-label: comma-separated 0/1 columns, one per label (the column name is the label).",
    ),
]
LabelSepOpt = Annotated[
    str | None,
    typer.Option("--label-sep", metavar="SEP", help="Multi-label: split the label column on SEP, e.g. '|'."),
]
MarginOpt = Annotated[
    float,
    typer.Option(
        "--margin",
        min=0.0,
        help="Points (of the primary metric, in %) the transformer must beat the n-gram baseline by to be recommended.",
    ),
]

ValidationOpt = Annotated[
    Path | None, typer.Option("--validation", help="Separate validation file (instead of --val-size).")
]
ValSizeOpt = Annotated[float, typer.Option("--val-size", help="Fraction of DATA held out for validation.")]
BaseModelOpt = Annotated[
    str,
    typer.Option(
        "--base-model",
        help="auto: chosen from the training texts' language (English: minilm-l6; other languages or a mix: "
        "e5-small-multi); or a registry name (see 'slm models'), local model directory or hub id.",
    ),
]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", help="Tokens read per text (longer texts are cut).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads for torch (default: all cores).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ForceOpt = Annotated[bool, typer.Option("--force", help=FORCE_HELP)]


def _split_cols(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [c.strip() for c in value.split(",") if c.strip()]


# ---------------------------------------------------------------- printing results


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _is_percent(name: str, value: float) -> bool:
    return 0.0 <= value <= 1.0 and any(word in name for word in PERCENT_WORDS)


def _metrics_table(models: dict[str, dict[str, Any]], title: str) -> Table | None:
    """Models side by side (columns), scalar metrics as rows, best score per row in bold."""
    models = {name: m for name, m in (models or {}).items() if isinstance(m, dict)}
    order = {name: i for i, name in enumerate(MODEL_ORDER)}
    models = dict(sorted(models.items(), key=lambda kv: order.get(kv[0], len(order))))
    if not models:
        return None
    names = [k for k in PREFERRED_METRICS if any(_scalar(m.get(k)) is not None for m in models.values())]
    for m in models.values():
        names += [k for k, v in m.items() if k not in names and _scalar(v) is not None]
    if not names:
        return None
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("metric", no_wrap=True)
    for model in models:
        table.add_column(escape(model), justify="right", no_wrap=True)
    for key in names:
        values = [_scalar(m.get(key)) for m in models.values()]
        percent = all(v is None or _is_percent(key, v) for v in values)
        lower_better = "loss" in key or key == "ece" or "latency" in key or key.endswith("_ms") or "seconds" in key
        present = [v for v in values if v is not None]
        best = (min(present) if lower_better else max(present)) if present and len(models) > 1 else None
        cells = []
        for v in values:
            if v is None:
                cells.append("–")
                continue
            text = f"{100 * v:.1f}" if percent else (str(int(v)) if v.is_integer() else f"{v:.4g}")
            cells.append(f"[bold]{text}[/bold]" if v == best and percent else text)
        table.add_row(escape(key + (" (%)" if percent else "")), *cells)
    return table


def _print_results(models: dict[str, dict[str, Any]] | None, recommendation: Any, title: str) -> None:
    table = _metrics_table(models or {}, title)
    if table is None:
        out.print(f"[dim]{escape(title)}: no metrics (no test data)[/dim]")
    else:
        out.print(table)
    message = recommendation.get("message") if isinstance(recommendation, dict) else recommendation
    if message:
        out.print(f"[bold]Recommendation:[/bold] {escape(str(message))}")


def _q(path: object) -> str:
    return shlex.quote(str(path))


def _print_next_steps(bundle: Path, labelled: str | Path | None = None) -> None:
    b = _q(bundle)
    out.print("\n[bold]Next steps[/bold]")
    out.print(f"  report:   {escape(str(Path(bundle) / 'report' / 'report.html'))}")
    out.print(f"  predict:  slm predict {escape(b)} your_texts.csv -o predictions.csv")
    out.print(f'            echo \'{{"text": "some text"}}\' | slm predict {escape(b)} -')
    out.print(f"  evaluate: slm evaluate {escape(b)} {escape(_q(labelled) if labelled else 'labelled.csv')}")
    out.print(f"  inspect:  slm info {escape(b)}")
    out.print(f"  compress: slm compress {escape(b)} --quantize int8")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _manifest_get(manifest: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if manifest.get(key) not in (None, "", {}, []):
            return manifest[key]
    return None


def _training_line(training: Any) -> str:
    """How the transformer was trained, in one line: method, trained parameters, self-training."""
    method = training.get("method") if isinstance(training, dict) else None
    if not method:
        return ""
    parts = [method]
    choice = training.get("method_choice")
    if choice:
        parts[0] = f"{method} (chosen by --method auto)"
    base_choice = training.get("base_model_choice")
    if isinstance(base_choice, dict) and base_choice.get("reason"):
        chosen = base_choice.get("base_model")
        parts.append(f"base model {chosen} chosen by --base-model auto ({base_choice['reason']})")
    params = training.get("parameters") or {}
    if params.get("total"):
        parts.append(
            f"{params['trainable']:,} of {params['total']:,} parameters trained ({params['trainable_share']:.2%})"
        )
    if method in ("lora", "adalora"):
        parts.append("adapters merged")
    record = training.get("self_training")
    if record:
        rounds = len(record["rounds"]) - 1
        parts.append(
            f"self-training kept {record['kept_rounds']} of {rounds} round(s) "
            f"(validation macro-F1 {record['val_macro_f1_labelled_only']:.4f} -> {record['val_macro_f1']:.4f})"
        )
    lexicon = training.get("lexicon")
    if lexicon:
        parts.append(
            f"lexicon: {lexicon['added_tokens']:,} terms added as tokens (mean tokens per text "
            f"{lexicon['mean_tokens_before']} -> {lexicon['mean_tokens_after']})"
        )
    return " · ".join(parts)


def _print_bundle_summary(bundle: Any, seconds: float | None = None) -> None:
    manifest = bundle.manifest or {}
    metrics = (manifest.get("metrics") or {}).get("test")
    took = f" in {_duration(seconds)}" if seconds is not None else ""
    out.print(f"\n[bold green]Bundle written[/bold green] to {escape(str(bundle.path))}{took}")
    line = _training_line(manifest.get("training"))
    if line:
        out.print(f"training: {escape(line)}")
    _print_results(metrics, manifest.get("recommendation"), "Test set")


# ---------------------------------------------------------------- train


def _train_config(ctx: typer.Context, flags: dict[str, tuple[str, Any]], config_file: Path | None) -> TrainConfig:
    """Flag values, or a saved configuration (e.g. from 'slm tune') with the flags given explicitly on top."""
    settings = {name: value for name, (_, value) in flags.items()}
    if config_file is not None:
        from slm.fileio import read_json_object

        saved = TrainConfig.from_dict(read_json_object(config_file, "training configuration")).to_dict()
        explicit = {
            name: value
            for name, (param, value) in flags.items()
            # compared by name: typer ships its own copy of click's ParameterSource enum
            if getattr(ctx.get_parameter_source(param), "name", None) == "COMMANDLINE"
        }
        settings = {**saved, **explicit}
    return TrainConfig.from_dict(settings)


@_command(no_args_is_help=True)
def train(
    ctx: typer.Context,
    data: Annotated[
        Path,
        typer.Argument(metavar="DATA", help="Labelled CSV, TSV, JSONL or Parquet file.", show_default=False),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Bundle directory to write (replaced only on success).")
    ],
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    label_cols: LabelColsOpt = None,
    label_sep: LabelSepOpt = None,
    validation: ValidationOpt = None,
    test: Annotated[Path | None, typer.Option("--test", help="Separate test file (instead of --test-size).")] = None,
    val_size: ValSizeOpt = 0.1,
    test_size: Annotated[float, typer.Option("--test-size", help="Fraction of DATA held out for testing.")] = 0.1,
    base_model: BaseModelOpt = DEFAULTS.base_model,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum passes over the training data.")] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per step.")] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the encoder.")] = DEFAULTS.learning_rate,
    head_lr: Annotated[
        float, typer.Option("--head-lr", help="Learning rate of the classification head.")
    ] = DEFAULTS.head_learning_rate,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = DEFAULTS.weight_decay,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout before the head.")] = DEFAULTS.dropout,
    max_length: MaxLengthOpt = DEFAULTS.max_length,
    patience: Annotated[
        int, typer.Option("--patience", help="Stop after this many epochs without validation gain.")
    ] = DEFAULTS.patience,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (splits, initialisation, order).")] = DEFAULTS.seed,
    max_minutes: Annotated[
        float | None,
        typer.Option("--max-minutes", help="Time budget for fine-tuning; the best model so far is kept."),
    ] = DEFAULTS.max_minutes,
    class_weight: Annotated[
        ClassWeight, typer.Option("--class-weight", help="'balanced' up-weights rare labels in the loss.")
    ] = DEFAULT_CLASS_WEIGHT,
    ensemble: Annotated[
        bool,
        typer.Option("--ensemble/--no-ensemble", help="Also build the transformer + n-gram ensemble."),
    ] = DEFAULTS.ensemble,
    margin: MarginOpt = 1.0,
    threads: ThreadsOpt = DEFAULTS.threads,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from OUTPUT.ckpt/ next to OUTPUT.")
    ] = False,
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="full: fine-tune every weight; lora/adalora: low-rank adapters, merged before saving; "
            "fewshot: contrastive tuning + linear head (few examples per class); head: linear head on the "
            "frozen encoder; auto: choose from the examples per class.",
        ),
    ] = DEFAULT_METHOD,
    unlabeled: Annotated[
        Path | None,
        typer.Option("--unlabeled", help="Unlabelled domain texts (CSV/TSV/JSONL/Parquet) for self-training."),
    ] = None,
    unlabeled_text_col: Annotated[
        str | None, typer.Option("--unlabeled-text-col", help="Text column of the --unlabeled file.")
    ] = None,
    self_training_rounds: Annotated[
        int, typer.Option("--self-training-rounds", help="Pseudo-labelling rounds with --unlabeled.")
    ] = DEFAULTS.self_training_rounds,
    nproc: Annotated[
        int,
        typer.Option("--nproc", min=1, help="Training processes on this machine (PyTorch DDP, started like torchrun)."),
    ] = 1,
    nnodes: Annotated[
        int, typer.Option("--nnodes", min=1, help="Machines in the job; run the same command on each.")
    ] = 1,
    rdzv_endpoint: Annotated[
        str | None, typer.Option("--rdzv-endpoint", help="HOST:PORT every node meets at (needed with --nnodes > 1).")
    ] = None,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA/AdaLoRA rank.")] = DEFAULTS.lora_r,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA scaling numerator.")] = DEFAULTS.lora_alpha,
    lora_lr: Annotated[
        float, typer.Option("--lora-lr", help="Learning rate of the LoRA adapters.")
    ] = DEFAULTS.lora_learning_rate,
    contrastive_epochs: Annotated[
        int, typer.Option("--contrastive-epochs", help="Few-shot: passes over the classes in contrastive tuning.")
    ] = DEFAULTS.contrastive_epochs,
    lexicon: Annotated[
        Path | None,
        typer.Option(
            "--lexicon",
            help="Industry dictionary (one term per line, 'term | alias', CSV or JSON): its terms become whole "
            "tokens, each initialised from the mean of its former pieces.",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Training configuration JSON (e.g. best_config.json from 'slm tune'); flags given explicitly "
            "override it.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Fine-tune a base model on a labelled file and write a reusable bundle.

    DATA needs a text column and a label column (found by name, or set with --text-col and
    --label-col). It is split into train/validation/test (stratified, seeded), the transformer is
    fine-tuned next to a TF-IDF + logistic-regression baseline, both are scored on the test split,
    and OUTPUT receives the model, the baseline and a report (OUTPUT/report/report.html).

    Bad input is refused before any model is loaded; an existing OUTPUT is replaced only when
    training succeeds. Ctrl-C saves a checkpoint: add --resume to continue.
    """
    flags = {
        "base_model": ("base_model", base_model),
        "epochs": ("epochs", epochs),
        "batch_size": ("batch_size", batch_size),
        "learning_rate": ("lr", lr),
        "head_learning_rate": ("head_lr", head_lr),
        "weight_decay": ("weight_decay", weight_decay),
        "dropout": ("dropout", dropout),
        "max_length": ("max_length", max_length),
        "patience": ("patience", patience),
        "seed": ("seed", seed),
        "max_minutes": ("max_minutes", max_minutes),
        "class_weight": ("class_weight", class_weight.value),
        "ensemble": ("ensemble", ensemble),
        "threads": ("threads", threads),
        "method": ("method", method.value),
        "lora_r": ("lora_r", lora_r),
        "lora_alpha": ("lora_alpha", lora_alpha),
        "lora_learning_rate": ("lora_lr", lora_lr),
        "contrastive_epochs": ("contrastive_epochs", contrastive_epochs),
        "self_training_rounds": ("self_training_rounds", self_training_rounds),
        "lexicon": ("lexicon", None if lexicon is None else str(lexicon)),
    }
    config = _train_config(ctx, flags, config_file)
    api = _api()
    start = time.monotonic()
    bundle = api.train(
        data,
        output=output,
        text_col=text_col,
        label_col=label_col,
        label_cols=_split_cols(label_cols),
        label_sep=label_sep,
        validation=validation,
        test=test,
        val_size=val_size,
        test_size=test_size,
        config=config,
        margin_points=margin,
        resume=resume,
        show_progress=not quiet,
        unlabeled=unlabeled,
        unlabeled_text_col=unlabeled_text_col,
        launch=Launch(nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, run_id=f"slm-{output.name}"),
        force=force,
    )
    if bundle is None:  # a node of a multi-node job without rank 0
        out.print("this node's training processes finished; rank 0 writes the bundle on its node")
        return
    _print_bundle_summary(bundle, time.monotonic() - start)
    _print_next_steps(output, test)


# ---------------------------------------------------------------- tune


@_command(no_args_is_help=True)
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
    api = _api()
    result = api.tune(
        data,
        output=output,
        budget=budget,
        text_col=text_col,
        label_col=label_col,
        label_cols=_split_cols(label_cols),
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


@_command(no_args_is_help=True)
def evaluate(
    bundle: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="Bundle directory written by 'slm train'.", show_default=False),
    ],
    data: Annotated[
        Path,
        typer.Argument(metavar="DATA", help="Labelled CSV, TSV, JSONL or Parquet file.", show_default=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write report.json/.md/.html and confusion.png here."),
    ] = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    label_cols: LabelColsOpt = None,
    label_sep: LabelSepOpt = None,
    margin: MarginOpt = 1.0,
    force: ForceOpt = False,
) -> None:
    """Score a bundle on a labelled file: every model side by side, plus a recommendation.

    Labels the bundle never saw are refused. Use -o to keep the full report.
    """
    api = _api()
    report = api.evaluate(
        bundle,
        data,
        text_col=text_col,
        label_col=label_col,
        label_cols=_split_cols(label_cols),
        label_sep=label_sep,
        output=output,
        margin_points=margin,
        force=force,
    )
    _print_results(report.get("models"), report.get("recommendation"), f"Evaluation on {data}")


# ---------------------------------------------------------------- predict


def _output_format(output: str | None) -> str | None:
    """Format for ``-o`` (None: JSON lines on stdout)."""
    if output is None or output == "-":
        return None
    from slm.data.files import EXTENSIONS

    fmt = EXTENSIONS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the output format of {output!r}; end it in .csv, .tsv, .jsonl or .parquet, "
            "or leave out -o for JSON lines on stdout"
        )
    return fmt


def _read_stdin(text_col: str | None) -> Any:
    """JSON lines from stdin (each an object with a text field, or a JSON string), checked and spooled."""
    from slm.data.stream import open_stdin

    if sys.stdin is None:
        raise DataError("no standard input to read from")
    if sys.stdin.isatty():
        err.print("[dim]reading JSON lines from stdin (end with Ctrl-D)…[/dim]")
    return open_stdin(sys.stdin, text_col)


def _jsonable(value: Any) -> Any:
    """A value json.dumps accepts (numpy values, NaN, timestamps, bytes): :func:`slm.cells.jsonable`."""
    from slm.cells import jsonable

    return jsonable(value)


def _result_columns(existing: list[str]) -> tuple[str, str, str]:
    names = ("label", "score", "probabilities")
    if any(n in existing for n in names):
        return ("predicted_label", "predicted_score", "predicted_probabilities")
    return names


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A transient progress bar over ``total`` rows on stderr; the function advances it by rows done."""
    if not enabled:
        yield lambda done: None
        return
    from rich.progress import Progress

    from slm.console import console

    with Progress(*Progress.get_default_columns(), console=console, transient=True) as progress:
        task = progress.add_task("predicting", total=total)
        yield lambda done: progress.advance(task, done)


@_command(no_args_is_help=True)
def predict(
    bundle: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="Bundle directory written by 'slm train'.", show_default=False),
    ],
    input: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="CSV, TSV, JSONL or Parquet file with a text column, or '-' for JSON lines on stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            help="Output file; its extension (.csv, .tsv, .jsonl, .parquet) sets the format. "
            "Default (or '-'): JSON lines on stdout.",
        ),
    ] = None,
    text_col: TextColOpt = None,
    component: Annotated[
        Component | None,
        typer.Option("--component", help="Which model answers (default: the one the bundle recommends)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Texts per inference batch (default: 64; 1024 on Ray).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr.")] = False,
    engine: Annotated[
        Engine,
        typer.Option("--engine", help="local: this process; ray: Ray Data on a Ray cluster, a folder of shards out."),
    ] = Engine.local,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster to join (auto, or ray://HEAD:10001; default: start a local one)."),
    ] = None,
    actors: Annotated[
        int | None, typer.Option("--actors", min=1, help="Ray: model copies (default: the cluster's CPUs / threads).")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Ray: ONNX Runtime threads per model copy.")] = 1,
    shard_format: Annotated[
        ShardFormat | None,
        typer.Option("--format", help="Ray: shard format (default: the -o folder's suffix, else parquet)."),
    ] = None,
    force: ForceOpt = False,
    raw_csv: Annotated[
        bool,
        typer.Option("--raw-csv", help="CSV/TSV: write cells as they are, without neutralising spreadsheet formulas."),
    ] = False,
) -> None:
    """Label new texts with a trained bundle.

    Output rows are the input columns plus 'label', 'score' (confidence of the top label) and
    'probabilities' (label -> probability; a JSON string in CSV/TSV). Multi-label bundles give a
    list of labels (a JSON list in CSV/TSV). If the input already has a 'label' column, the new
    columns are named 'predicted_label', 'predicted_score' and 'predicted_probabilities'.

    CSV/TSV cells that a spreadsheet would run as a formula (starting with =, +, -, @, tab or
    carriage return, other than plain numbers) get a leading ' unless --raw-csv is given. The input
    is read and the output written a chunk at a time; a line over 8 Mi characters is refused.

    With --engine ray, INPUT may be a folder of shards, and -o names a folder that receives one
    shard per block plus _manifest.json (rows, sha256 of every shard); it replaces an earlier
    output only once every input row is written exactly once.

    Examples:

        slm predict runs/model new.csv -o labelled.csv

        echo '{"text": "where is my card?"}' | slm predict runs/model -

        slm predict runs/model-int8 texts/ -o labelled.parquet --engine ray --address auto
    """
    if engine is Engine.ray:
        _predict_on_ray(
            bundle,
            input,
            output,
            text_col=text_col,
            component=component,
            batch_size=batch_size,
            quiet=quiet,
            address=address,
            actors=actors,
            threads=threads,
            shard_format=shard_format,
            force=force,
            raw_csv=raw_csv,
        )
        return
    ray_only = {
        "--address": address is not None,
        "--actors": actors is not None,
        "--format": shard_format is not None,
        "--threads": threads != 1,
    }
    given = [name for name, used in ray_only.items() if used]
    if given:
        raise ConfigError(f"{given[0]} is for --engine ray only")
    batch_size = batch_size or 64
    fmt = _output_format(output)
    if raw_csv and fmt not in ("csv", "tsv"):
        raise ConfigError("--raw-csv applies to CSV and TSV output only (-o FILE.csv or FILE.tsv)")
    from slm.data.stream import labelled, open_table, writing

    # A file is checked end to end (and its rows counted) before the model loads; stdin after, as before.
    table = open_table(Path(input), text_col) if input != "-" else None
    model = _load(bundle)
    table = table or _read_stdin(text_col)
    try:
        names = _result_columns(table.columns)
        if names[0] != "label" and not quiet:
            err.print(f"[dim]note: the input has a 'label' column; predictions go to {', '.join(names)}[/dim]")
        columns = [*table.columns, *names]
        chosen = component.value if component else None
        thresholds = model.thresholds(chosen) if model.multi_label else None
        with (
            writing(fmt, output, columns, multi_label=model.task == "multi_label", raw_csv=raw_csv) as write,
            _progress(table.rows, not quiet and fmt is not None) as advance,
        ):
            for chunk in table.chunks():  # bounded chunks: memory does not grow with the rows
                proba = model.predict_proba(chunk.texts, component=chosen, batch_size=batch_size)
                for rows in labelled(chunk.rows, proba, model.labels, thresholds, names):
                    write(rows)
                advance(len(chunk.rows))
    finally:
        table.close()
    if fmt is not None and not quiet:
        err.print(f"Wrote {table.rows} predictions to {escape(str(output))}")


def _predict_on_ray(bundle: Path, input: str, output: str | None, *, text_col: str | None,
                    component: Component | None, batch_size: int | None, quiet: bool, address: str | None,
                    actors: int | None, threads: int, shard_format: ShardFormat | None,
                    force: bool, raw_csv: bool) -> None:  # fmt: skip
    """``slm predict --engine ray``: Ray Data over the input, a folder of shards out."""
    from slm.runtime.ray_predict import RayPredictConfig, predict_on_ray

    if input == "-":
        raise ConfigError("--engine ray reads files or folders, not stdin")
    if output in (None, "-"):
        raise ConfigError("--engine ray writes a folder of shards: pass -o FOLDER")
    config = RayPredictConfig(address=address, actors=actors, threads=threads, batch_size=batch_size or 1024,
                              component=component.value if component else None, text_col=text_col,
                              output_format=shard_format.value if shard_format else None,
                              show_progress=not quiet, force=force, raw_csv=raw_csv)  # fmt: skip
    manifest = predict_on_ray(bundle, Path(input), Path(str(output)), config)
    if not quiet:
        rate = manifest["rows"] / max(manifest["seconds"], 1e-9)
        err.print(f"Wrote {manifest['rows']} predictions in {len(manifest['shards'])} {manifest['format']} shards to "
                  f"{escape(str(output))} ({manifest['seconds']:.1f} s, {rate:.0f} texts/s, "
                  f"{manifest['engine']['actors']} actors)")  # fmt: skip


# ---------------------------------------------------------------- models, info


@_command()
def models() -> None:
    """List the base models slm knows by name (use one with 'slm train --base-model NAME')."""
    from slm.models.registry import ENGLISH_BASE_MODEL, MULTILINGUAL_BASE_MODEL, available_models

    table = Table(title="Base models", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("languages")
    table.add_column("installed", no_wrap=True)
    table.add_column("description", ratio=1)
    for row in available_models():
        name = str(row["name"])
        installed = "yes" if row["installed"] else f"no: {row['source']}"
        table.add_row(
            escape(name), f"{row['parameters_m']}M", escape(str(row["languages"])), escape(installed),
            escape(str(row["description"])),
        )  # fmt: skip
    out.print(table)
    out.print(
        "--base-model auto (the default) picks from the training texts' language: English -> "
        f"{ENGLISH_BASE_MODEL}, other languages or a mix -> {MULTILINGUAL_BASE_MODEL}."
    )
    out.print("Any local Hugging Face model directory or hub id works with --base-model too.")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        name = value.get("name") or value.get("id")
        return str(name) if name else json.dumps(value, ensure_ascii=False)
    return str(value)


def _files_line(manifest: dict[str, Any]) -> str:
    """What loading checked: the manifest's digest or signature, then every listed file's sha256.

    Loading refuses a bundle that fails either check (exit 4), so this line is only printed for one
    that passed; a format version 1 manifest carries no digest, and the line says so.
    """
    from slm.bundle.manifest import integrity_summary

    files = manifest.get("files")
    if isinstance(files, dict | list) and files:
        return f"{len(files)} files, all match their sha256; {integrity_summary(manifest)}"
    return "none listed in the manifest"


@_command(no_args_is_help=True)
def info(
    bundle: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="Bundle directory written by 'slm train'.", show_default=False),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False,
) -> None:
    """Show what a bundle is: task, labels, base model, test metrics, and whether its files are intact."""
    from slm.apps.recommend.layout import is_recommender

    if is_recommender(bundle):
        from slm.cli_recommend import print_info

        print_info(bundle, as_json=as_json)
        return
    loaded = _load(bundle)
    manifest = loaded.manifest or {}
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(manifest), indent=2, ensure_ascii=False) + "\n")
        return
    labels = list(loaded.labels)
    shown = ", ".join(labels[:8]) + (f", … ({len(labels) - 8} more)" if len(labels) > 8 else "")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows = [
        ("bundle", str(loaded.path)),
        ("task", str(loaded.task)),
        ("labels", f"{len(labels)}: {shown}"),
        ("base model", _describe(_manifest_get(manifest, "base_model", "base")) if manifest else "?"),
        ("default model", _describe(_manifest_get(manifest, "default_component", "component", "default"))),
        ("created", _describe(_manifest_get(manifest, "created_at", "created"))),
        ("slm version", _describe(_manifest_get(manifest, "slm_version", "version"))),
        ("training", _training_line(manifest.get("training"))),
        ("files", _files_line(manifest)),
    ]
    for key, value in rows:
        if value not in ("None", ""):
            grid.add_row(key, escape(value))
    out.print(grid)
    if manifest.get("lineage"):
        from slm.cli_compress import print_compression

        print_compression(manifest)
        return
    metrics = (manifest.get("metrics") or {}).get("test")
    _print_results(metrics, manifest.get("recommendation"), "Test set")


# ---------------------------------------------------------------- quickstart


@_command()
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
    api = _api()
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
    _print_bundle_summary(bundle, time.monotonic() - start)
    _print_examples(bundle)
    _print_next_steps(output, test_csv)
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


# Commands defined in their own modules register themselves on ``app`` when imported.
from slm import cli_compress, cli_monitor, cli_recommend, cli_serve, cli_support  # noqa: E402, F401
from slm.benchmark.command import bench  # noqa: E402

_command(name="bench", no_args_is_help=True)(bench)
