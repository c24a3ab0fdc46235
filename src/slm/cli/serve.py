"""``slm serve``: the HTTP service for exported bundles (FastAPI + Uvicorn, no PyTorch; :func:`slm.api.serve`).

Every option can also come from an environment
variable, ``SLM_SERVE_<OPTION>`` (e.g. ``SLM_SERVE_PORT=9000``); a flag given on the command line wins.
With ``--engine ray`` the same app runs as Ray Serve replicas (:mod:`slm.serving.ray_serve`).

The server's own options (address, API keys, limits, timeouts, logs) are defined once, in
:mod:`slm.serving.options`, and added to ``slm serve`` as to the ``serve`` commands of ``slm app monitor``
and ``slm app recommend``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from slm.cli._util import BackendOpt, command
from slm.errors import ConfigError
from slm.serving.config import DriftSettings, ServeConfig
from slm.serving.options import serve_option as _opt
from slm.serving.options import server_options

DEFAULTS = ServeConfig()


class LongTexts(StrEnum):
    truncate = "truncate"
    reject = "reject"


class Engine(StrEnum):
    uvicorn = "uvicorn"
    ray = "ray"


BundlesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="[NAME=]BUNDLE...",
        envvar="SLM_SERVE_BUNDLES",
        show_default=False,
        help="Exported bundles to serve (from 'slm export' or 'slm compress') or support assistants "
        "(from 'slm app support build'); NAME defaults to the directory's name and is the {name} in "
        "/v1/models/{name}/predict or /v1/support/{name}/answer.",
    ),
]
MaxBatchOpt = Annotated[int, _opt("max_batch", "Texts per model batch (1: no batching).")]
MaxWaitMsOpt = Annotated[
    float,
    _opt(
        "max_wait_ms",
        "Longest a batch waits to fill while a worker is free (0: run at once; "
        "batches still grow while every worker is busy).",
    ),
]
MaxQueueOpt = Annotated[int, _opt("max_queue", "Texts queued per model before requests get 503.")]
WorkersOpt = Annotated[int | None, _opt("workers", "Batches run at once (default: one per core, plus one).")]
ThreadsOpt = Annotated[int, _opt("threads", "ONNX Runtime threads per batch.")]
BatchNiceOpt = Annotated[
    int,
    _opt(
        "batch_nice",
        "Niceness of the batch threads, so the event loop keeps answering (and refusing) under "
        "overload (0-19; 0: off, e.g. when the server must not yield to other work on the machine).",
    ),
]
MaxTextsOpt = Annotated[int, _opt("max_texts", "Most texts in one request.")]
MaxCharsOpt = Annotated[int, _opt("max_chars", "Longest text, in characters.")]
LongTextsOpt = Annotated[LongTexts, _opt("long_texts", "Texts over --max-chars: cut or refuse.")]
TopKOpt = Annotated[int, _opt("top_k", "Labels listed per text unless a request asks otherwise.")]
WatchOpt = Annotated[bool, _opt("watch", "Reload a bundle when it is replaced on disk.", "--watch/--no-watch")]
WatchIntervalOpt = Annotated[float, _opt("watch_interval", "Seconds between checks with --watch.")]
SupportDbOpt = Annotated[
    Path,
    _opt(
        "support_db",
        "SQLite file logging every support-assistant turn (created when an assistant is served; "
        "export the handed-off questions with 'slm app support unanswered').",
    ),
]
SupportRetentionOpt = Annotated[
    str,
    _opt("support_retention", "How long the support log keeps a turn (the customer's question included), e.g. 30d "
         "or 12h; older turns are deleted at start and hourly (a bare number is days)."),
]  # fmt: skip
FeedbackOpt = Annotated[
    bool,
    _opt("feedback", "Take feedback at /v1/models/{name}/feedback, and keep recent requests' texts in memory "
         "for it (--no-feedback: neither; the route answers 404).", "--feedback/--no-feedback"),
]  # fmt: skip
FeedbackDbOpt = Annotated[
    str,
    _opt("feedback_db", "Where feedback is stored: a SQLite file (made on the first feedback) or a database URL "
         "(postgresql+psycopg://USER:PASSWORD@HOST/DB). Read it with 'slm feedback export'."),
]  # fmt: skip
FeedbackRetentionOpt = Annotated[
    str,
    _opt("feedback_retention", "How long stored feedback (its texts included) is kept, e.g. 90d or 12h; older rows "
         "are deleted at start and hourly (a bare number is days)."),
]  # fmt: skip
FeedbackRecallOpt = Annotated[
    str,
    _opt("feedback_recall", "How long a request's texts stay in memory (only) so that feedback can name its "
         "request_id, e.g. 15m or 1h (a bare number is minutes)."),
]  # fmt: skip
FeedbackRecallMbOpt = Annotated[
    float, _opt("feedback_recall_mb", "Most memory, in MB, for recent requests' texts; the oldest go first.")
]
MonitorOpt = Annotated[
    Path | None,
    _opt("monitor", "Also serve this financial sentiment monitor (monitor.yaml): /v1/monitor/* and /monitor."),
]
EngineOpt = Annotated[
    Engine,
    _opt(
        "engine",
        "uvicorn: one server process; ray: replicas of the same app on Ray Serve (pip install 'slm[ray]').",
    ),
]
ReplicasOpt = Annotated[
    int | None, _opt("replicas", "With --engine ray: copies of the app, each loading every bundle (default 1).")
]
MinReplicasOpt = Annotated[
    int | None,
    _opt("min_replicas", "With --engine ray: autoscale, down to this many replicas (and --max-replicas)."),
]
MaxReplicasOpt = Annotated[
    int | None, _opt("max_replicas", "With --engine ray: autoscale, up to this many replicas (and --min-replicas).")
]
AddressOpt = Annotated[
    str | None,
    _opt(
        "address",
        "With --engine ray: the Ray cluster to deploy on (auto, or ray://HEAD:10001); "
        "default: start one on this machine.",
    ),
]
ReplicaCpusOpt = Annotated[
    float | None,
    _opt(
        "replica_cpus",
        "With --engine ray: CPUs Ray reserves for each replica (default 1, fractions allowed; "
        "--workers then defaults to one per CPU, plus one).",
    ),
]

DRIFT = DriftSettings()
DriftOpt = Annotated[
    bool,
    _opt(
        "drift",
        "Watch each model's predictions for drift (GET /v1/models/{name}/drift, slm_drift_* metrics, alerts).",
        "--drift/--no-drift",
    ),  # fmt: skip
]
DriftWindowOpt = Annotated[int, _opt("drift_window", "Recent predicted texts per model the drift signals cover.")]
DriftWarmupOpt = Annotated[
    int, _opt("drift_warmup", "Texts taken as the drift reference for a bundle that records none (older bundles).")
]
DriftPsiOpt = Annotated[
    float | None,
    _opt(
        "drift_psi",
        "Alert when the predicted labels' PSI passes this (default: 0.25 plus the sampling noise "
        "of the labels and window).",
    ),  # fmt: skip
]
DriftLowOpt = Annotated[
    float, _opt("drift_low_confidence", "A top-label probability under this is a low-confidence answer.")
]
DriftLowRiseOpt = Annotated[
    float, _opt("drift_low_confidence_rise", "Alert when the low-confidence rate rises this far over the reference's.")
]
DriftDropOpt = Annotated[
    float, _opt("drift_confidence_drop", "Alert when the mean confidence drops this far under the reference's.")
]
DriftFeedbackOpt = Annotated[
    float, _opt("drift_feedback_error", "Alert when this share of recent feedback says the label was wrong.")
]
DriftWebhookOpt = Annotated[str | None, _opt("drift_webhook", "POST each drift alert (JSON) to this URL.")]


@command(no_args_is_help=True)
@server_options
def serve(
    bundles: BundlesArg,
    max_batch: MaxBatchOpt = DEFAULTS.max_batch,
    max_wait_ms: MaxWaitMsOpt = DEFAULTS.max_wait_ms,
    max_queue: MaxQueueOpt = DEFAULTS.max_queue,
    workers: WorkersOpt = None,
    threads: ThreadsOpt = DEFAULTS.threads,
    batch_nice: BatchNiceOpt = DEFAULTS.batch_nice,
    backend: BackendOpt = None,
    max_texts: MaxTextsOpt = DEFAULTS.max_texts,
    max_chars: MaxCharsOpt = DEFAULTS.max_chars,
    long_texts: LongTextsOpt = LongTexts.truncate,
    top_k: TopKOpt = DEFAULTS.top_k,
    watch: WatchOpt = False,
    watch_interval: WatchIntervalOpt = DEFAULTS.watch_interval,
    support_db: SupportDbOpt = DEFAULTS.support_db,
    support_retention: SupportRetentionOpt = "90d",
    feedback: FeedbackOpt = DEFAULTS.feedback,
    feedback_db: FeedbackDbOpt = DEFAULTS.feedback_db,
    feedback_retention: FeedbackRetentionOpt = "90d",
    feedback_recall: FeedbackRecallOpt = "1h",
    feedback_recall_mb: FeedbackRecallMbOpt = DEFAULTS.feedback_recall_mb,
    monitor: MonitorOpt = None,
    engine: EngineOpt = Engine.uvicorn,
    replicas: ReplicasOpt = None,
    min_replicas: MinReplicasOpt = None,
    max_replicas: MaxReplicasOpt = None,
    address: AddressOpt = None,
    replica_cpus: ReplicaCpusOpt = None,
    drift: DriftOpt = DRIFT.enabled,
    drift_window: DriftWindowOpt = DRIFT.window,
    drift_warmup: DriftWarmupOpt = DRIFT.warmup,
    drift_psi: DriftPsiOpt = None,
    drift_low_confidence: DriftLowOpt = DRIFT.low_confidence,
    drift_low_confidence_rise: DriftLowRiseOpt = DRIFT.low_confidence_rise,
    drift_confidence_drop: DriftDropOpt = DRIFT.confidence_drop,
    drift_feedback_error: DriftFeedbackOpt = DRIFT.feedback_error,
    drift_webhook: DriftWebhookOpt = None,
    *,
    server: object,
) -> None:
    """Serve bundles over HTTP with micro-batching: predict, models, health, metrics, a playground at /.

    Support assistants answer at /v1/support/answer, with a chat page at /support. With --monitor,
    the sentiment monitor ingests at /v1/monitor/ingest, with a dashboard at /monitor. A recommender
    bundle ('slm app recommend train') ranks items at /v1/recommend/rank.

    Example: slm serve runs/tickets-int8 --port 8000, then open http://127.0.0.1:8000/ or
    curl -d '{"text": "my card has not arrived"}' http://127.0.0.1:8000/v1/models/tickets-int8/predict

    With --engine ray --replicas 2, the same API is answered by two Ray Serve replicas.
    """
    ray_options = {"--replicas": replicas, "--min-replicas": min_replicas, "--max-replicas": max_replicas,
                   "--address": address, "--replica-cpus": replica_cpus}  # fmt: skip
    given = [flag for flag, value in ray_options.items() if value is not None]
    if engine is Engine.uvicorn and given:
        raise ConfigError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --engine ray only")
    from slm.api.serving import RayServeOptions
    from slm.api.serving import serve as serve_bundles
    from slm.durations import parse_duration
    from slm.serving.options import ServerOptions

    assert isinstance(server, ServerOptions)  # from server_options
    config = server.config(
        max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
        workers=workers or _default_workers(engine, replica_cpus), threads=threads, max_texts=max_texts,
        batch_nice=batch_nice, backend=backend.value if backend else None, max_chars=max_chars,
        long_texts=long_texts.value,
        top_k=top_k, watch=watch, watch_interval=watch_interval,
        support_db=support_db, feedback=feedback, feedback_db=feedback_db,
        support_retention=parse_duration(support_retention, bare_unit="d", what="--support-retention"),
        feedback_retention=parse_duration(feedback_retention, bare_unit="d", what="--feedback-retention"),
        feedback_recall_seconds=parse_duration(feedback_recall, bare_unit="m", what="--feedback-recall"),
        feedback_recall_mb=feedback_recall_mb,
        drift=DriftSettings(enabled=drift, window=drift_window, warmup=drift_warmup, psi=drift_psi,
                            low_confidence=drift_low_confidence, low_confidence_rise=drift_low_confidence_rise,
                            confidence_drop=drift_confidence_drop, feedback_error=drift_feedback_error,
                            webhook=drift_webhook),
    )  # fmt: skip
    ray = None
    if engine is Engine.ray:
        ray = RayServeOptions(replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
                              address=address, replica_cpus=replica_cpus)  # fmt: skip
    serve_bundles(bundles, config, log_level=server.log_level.value, monitor=monitor, ray=ray)


def _default_workers(engine: Engine, replica_cpus: float | None) -> int:
    """One batch in flight per core, plus one: per machine for Uvicorn, per replica's CPUs on Ray."""
    from slm.serving.config import default_workers

    if engine is Engine.uvicorn:
        return default_workers()
    return max(1, min(math.ceil(replica_cpus or 1.0) + 1, 8))
