"""What every ``slm`` command shares: the Typer app, the consoles, the error guard and common options.

Every user-fixable problem ends as one line ``error: <message>`` on stderr and the exit code of
the :class:`~slm.errors.SlmError` raised; nothing heavy (torch, transformers, the data layer) is
imported until a command needs it, so ``--help`` and bad input answer at once. Nothing outside
:mod:`slm.cli` imports this package.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console

from slm.errors import SlmError, one_line
from slm.extras import from_import_error, require_extra
from slm.fileio import FORCE_HELP
from slm.training.config import TrainConfig


def quiet_libraries() -> None:
    """Silence transformers / Hugging Face chatter, now and for whenever they are imported later."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported: the environment is read too late, set it directly
        from slm.logs import quiet_transformers

        quiet_transformers()


quiet_libraries()

DEFAULTS = TrainConfig()

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


def fail(message: object, code: int) -> NoReturn:
    """Print ``error: message`` as exactly one line on stderr and exit with ``code``."""
    sys.stdout.flush()
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def debug() -> bool:
    return os.environ.get("SLM_DEBUG", "").strip() not in ("", "0", "false", "no")


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn every exception into one line on stderr and the right exit code."""
    try:
        yield
    except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
        raise
    except SlmError as exc:
        if debug():
            traceback.print_exc()
        message = one_line(exc) or type(exc).__name__
        if exc.exit_code == 130 and "resume" not in message:
            message += " (run the same command again with --resume to continue)"
        fail(message, exc.exit_code)
    except ModuleNotFoundError as exc:
        # An optional dependency imported deep inside the command: name the extra that installs it.
        if debug():
            raise
        missing = from_import_error(exc)
        if missing is None:
            fail_internal(exc)
        fail(missing, missing.exit_code)
    except KeyboardInterrupt:
        fail("interrupted (Ctrl-C)", 130)
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None
    except Exception as exc:
        if debug():
            raise
        fail_internal(exc)


def fail_internal(exc: BaseException) -> NoReturn:
    """A bug, not a user error: one line all the same, with how to get the traceback."""
    fail(f"internal error: {type(exc).__name__}: {one_line(exc)} (set SLM_DEBUG=1 for a traceback)", 1)


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` run under :func:`guard` (Typer reads the signature through ``functools.wraps``)."""

    @functools.wraps(func)
    def run(*a: Any, **kw: Any) -> Any:
        with guard():
            return func(*a, **kw)

    return run


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` whose function runs under :func:`guard`."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return app.command(*args, **kwargs)(guarded(func))

    return decorate


def guard_group(group: typer.Typer) -> typer.Typer:
    """Put every command of ``group`` (and of its sub-groups) under :func:`guard`, in place.

    Apps define their command groups without importing the CLI (it sits above them); the CLI
    guards them when it mounts them, so their errors end as one line like every other command's.
    """
    for info in group.registered_commands:
        if info.callback is not None:
            info.callback = guarded(info.callback)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            guard_group(sub.typer_instance)
    return group


def load_api() -> Any:
    """``slm.api``, once the training extra is known to be installed (checked without importing it).

    PyTorch and transformers are imported later, by the API, once the input is known to be good: importing
    them here cost every refusal of bad input about 5 s on 2 cores.
    """
    require_extra("train")
    from slm import api

    quiet_libraries()
    return api


def load_bundle(bundle: Path) -> Any:
    """Open a bundle; an exported one predicts without PyTorch, so this imports it only when needed."""
    from slm.runtime.bundle import Bundle

    loaded = Bundle(bundle)
    if loaded.backend == "torch" and any(c in loaded.components for c in ("transformer", "ensemble")):
        load_api()  # PyTorch bundle: check the training extra is installed and quiet transformers
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
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """slm: small, fast, domain-specific text classifiers on an ordinary CPU."""
    from slm.logs import attach_cli_handler

    attach_cli_handler()  # the library logs its notes and progress lines; the CLI shows them on stderr


# ---------------------------------------------------------------- shared options


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


def split_cols(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [c.strip() for c in value.split(",") if c.strip()]


class Backend(StrEnum):
    """The engine that runs a bundle's transformer (``--backend``)."""

    onnx = "onnx"
    openvino = "openvino"
    torch = "torch"


BackendOpt = Annotated[
    Backend | None,
    typer.Option(
        "--backend",
        help="Engine for the transformer (default: the bundle's). onnx: ONNX Runtime, fastest at batch 1; "
        "openvino: OpenVINO (pip install 'slm[openvino]'), highest batch throughput with a bundle from "
        "'slm compress --quantize int8-openvino'; torch: the PyTorch weights (slm[train]), for debugging.",
    ),
]
