"""``slm app monitor``: run the financial sentiment monitor over a stream, report on it, serve its dashboard.

The app's command group, mounted by the main CLI as ``slm app monitor ...`` (see :mod:`slm.plugins`),
which also runs every command under its error guard: user errors are raised as :class:`~slm.errors.SlmError`.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from slm.apps.monitor.plugin import HELP
from slm.console import console, out
from slm.extras import require_extra
from slm.fileio import FORCE_HELP
from slm.serving.options import server_options

app = typer.Typer(help=HELP, no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="monitor.yaml (see 'slm app monitor --help').")]


def _alert_line(alert: dict[str, Any]) -> None:
    from slm.apps.monitor.items import iso

    console.print(
        f"[bold red]alert[/] {alert['kind']} [bold]{escape(alert['series'])}[/]: {alert['negatives']} negative of "
        f"{alert['total']} in the window from {iso(alert['window_start_ms'] / 1000)} "
        f"(baseline {alert['baseline']:.1f}, score {alert['score']:.1f})"
    )


@app.command("run", no_args_is_help=True)
def run(
    config: ConfigOption,
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="JSONL file, or - for stdin (default: the config's).")
    ] = None,
    follow: Annotated[
        bool | None, typer.Option("--follow/--no-follow", help="Keep reading the file as it grows (Ctrl-C stops).")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL (default: the config's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's statistics as JSON.")] = False,
) -> None:
    """Classify every item of the input, attribute entities, store it, score closed windows and alert.

    Each line is a JSON object with id, timestamp (ISO 8601 or epoch seconds) and text, and optionally
    source. Bad lines are counted by reason and skipped; items already stored (same id) are not counted
    again. A file's position is committed with each batch: run the same command after a crash and it
    resumes where it stopped. SIGINT/SIGTERM finish the current batch and stop.
    """
    require_extra("monitor", what="slm app monitor")
    from slm.apps.monitor.config import load_config
    from slm.apps.monitor.monitor import Monitor

    settings = load_config(config, storage=storage)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Monitor(settings, on_alert=_alert_line) as running:
            source = running.source(input if input is not None else settings.input, follow=follow)
            if getattr(source, "restarted", False):
                console.print(f"[yellow]warning:[/] {escape(str(source.key))} is shorter than the committed "
                              "offset (truncated or replaced): reading it again from the start")  # fmt: skip
            stats = _run_with_progress(running, source, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        out.print_json(json.dumps(stats.as_dict()))
        return
    _print_stats(stats, resumed=source.start)


def _run_with_progress(running: Any, source: Any, stopping: threading.Event) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    if source.size is None or source.follow or not sys.stderr.isatty():
        return running.run(source, stop=stopping.is_set)
    columns = (TextColumn("ingest"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("ingest", total=source.size, completed=source.start)
        return running.run(source, stop=stopping.is_set, progress=lambda offset: bar.update(task, completed=offset))


def _print_stats(stats: Any, *, resumed: int) -> None:
    if resumed:
        out.print(f"resumed at byte {resumed:,} (the last committed batch)")
    out.print(
        f"read {stats.read:,} lines: stored {stats.stored:,}, {stats.duplicates:,} already stored (same id), "
        f"rejected {sum(stats.rejected.values()):,}; {stats.alerts} alerts; {stats.items_per_second:,.0f} items/s"
    )
    if stats.rejected:
        out.print("rejected by reason: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.rejected.items())))


@app.command("report", no_args_is_help=True)
def report(
    config: ConfigOption,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for summary.json/.md and charts/*.png.")
    ] = Path("monitor-report"),
    limit: Annotated[int, typer.Option(min=1, max=200, help="Busiest series per kind to chart.")] = 12,
    storage: Annotated[str | None, typer.Option(help="Database URL (default: the config's).")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Print the busiest entities/topics with their sentiment and alerts; write PNG charts per series."""
    require_extra("monitor", what="slm app monitor")
    from slm.apps.monitor.config import load_config
    from slm.apps.monitor.report import percent, write_report
    from slm.apps.monitor.storage import MonitorStore

    settings = load_config(config, storage=storage)
    store = MonitorStore.open(settings.storage)
    try:
        data = write_report(store, int(round(settings.window_seconds * 1000)), output, limit=limit, force=force)
    finally:
        store.close()
    table = Table(title=f"{data['totals']['items']:,} items, {data['totals']['alerts']:,} alerts")
    for column in ("kind", "series", "items", "negative", "positive", "latest negative", "alerts", "last alert"):
        table.add_column(column, justify="right" if column in ("items", "alerts") else "left")
    for row in data["series"]:
        table.add_row(row["kind"], escape(row["series"]), f"{row['items']:,}", percent(row["negative_share"]),
                      percent(row["positive_share"]), percent(row["latest_negative_share"]), str(row["alerts"]),
                      row["last_alert"] or "-")  # fmt: skip
    out.print(table)
    if data["rejected"]:
        out.print("rejected by reason: " + ", ".join(f"{k} {v:,}" for k, v in data["rejected"].items()))
    out.print(f"wrote {escape(str(output / 'summary.md'))} and {len(data['series'])} charts in "
              f"{escape(str(output / 'charts'))}")  # fmt: skip


@app.command("purge", no_args_is_help=True)
def purge(
    config: ConfigOption,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="Delete items stored longer ago than this: 30d, 12h (default: the config's retention)."
        ),
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL (default: the config's).")] = None,
) -> None:
    """Delete stored items (their texts), mentions and rejected lines older than the retention ('run' and
    'serve' do it at start and hourly)."""
    require_extra("monitor", what="slm app monitor")
    from slm.apps.monitor.config import load_config
    from slm.apps.monitor.storage import MonitorStore
    from slm.durations import describe_duration, parse_duration

    settings = load_config(config, storage=storage)
    seconds = settings.retention_seconds if older_than is None else parse_duration(older_than, bare_unit="d")
    store = MonitorStore.open(settings.storage)
    try:
        removed = store.purge(seconds)
    finally:
        store.close()
    out.print(f"deleted {removed:,} item{'' if removed == 1 else 's'} stored more than "
              f"{describe_duration(seconds)} ago")  # fmt: skip


@app.command("serve", no_args_is_help=True)
@server_options
def serve(
    config: ConfigOption,
    storage: Annotated[str | None, typer.Option(help="Database URL (default: the config's).")] = None,
    *,
    server: object,
) -> None:
    """Serve POST /v1/monitor/ingest, the trend and alert endpoints, and the dashboard at /monitor.

    Takes the server options of 'slm serve' (API keys, limits, timeouts); to serve models beside the
    monitor, use 'slm serve BUNDLE --monitor monitor.yaml'.
    """
    require_extra("monitor", what="slm app monitor")
    from slm.apps.monitor.config import load_config
    from slm.serving.options import ServerOptions
    from slm.serving.server import serve as run_server

    assert isinstance(server, ServerOptions)  # from server_options
    settings = load_config(config, storage=storage)
    run_server([], server.config(), log_level=server.log_level.value, monitor=settings)
