"""Data-parallel fine-tuning on PyTorch's own DDP, launched with torchrun's machinery (torch.distributed.run).

``slm train --nproc N`` (``TrainConfig.nproc``) starts N worker processes on this machine through
``torch.distributed.launcher.elastic_launch`` (what ``torchrun`` runs); with ``--nnodes M
--rdzv-endpoint HOST:PORT`` the same command on each of M machines joins one job through the
c10d rendezvous. Backend: gloo on CPU, NCCL where CUDA is available.

Every rank reads and tokenises the same data (deterministic), walks the same length-bucketed
batches and trains on its share of each batch (``shard``), so the effective batch size, the
number of steps and the learning-rate schedule are those of a single process. DDP averages the
gradients; validation logits are gathered from every rank before the metric, so early-stopping
decisions are identical everywhere. Rank 0 alone writes checkpoints and the bundle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from slm.errors import ConfigError, SlmError

DISTRIBUTED_METHODS = ("full", "lora", "adalora")


class Interrupted(SlmError):
    """A distributed run stopped by a signal (exit code 130, like an interrupted single-process run)."""

    exit_code = 130


@dataclass(frozen=True)
class Launch:
    """Where the workers run: processes per node, nodes, and the rendezvous for several nodes."""

    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    run_id: str = "slm"

    def validate(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise ConfigError("--nproc and --nnodes must be at least 1")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ConfigError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")

    @property
    def distributed(self) -> bool:
        return self.nproc * self.nnodes > 1


def active() -> bool:
    """Whether this process is a rank of an initialised process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or not distributed at all: the process that prints, checkpoints and writes the bundle."""
    return rank() == 0


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (stop requests, time budgets)."""
    if not active():
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shard(rows: list[int]) -> list[int]:
    """This rank's share of a global batch (every world_size-th row)."""
    return rows[rank() :: world_size()] if active() else rows


def gather_rows(n: int, compute) -> np.ndarray:
    """``compute(rows)`` on this rank's share of ``range(n)``, assembled from every rank in row order."""
    rows = list(range(n))[rank() :: world_size()] if active() else list(range(n))
    mine = compute(rows)
    if not active():
        return mine
    import torch.distributed as dist

    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, (rows, mine))
    out = np.zeros((n, *mine.shape[1:]), dtype=mine.dtype)
    for part_rows, values in parts:
        if len(part_rows):
            out[part_rows] = values
    return out


def describe() -> dict | None:
    """The job's shape for the manifest (None when not distributed)."""
    if not active():
        return None
    import torch.distributed as dist

    # The elastic agent sets GROUP_WORLD_SIZE (its number of nodes) in every worker's environment.
    return {"world_size": world_size(), "backend": dist.get_backend(),
            "nodes": int(os.environ.get("GROUP_WORLD_SIZE", "1"))}  # fmt: skip


def _worker(job, args: tuple, kwargs: dict, message_level: int | None = None):
    """One rank: join the process group, run ``job``, return its result (or the error as data, for one line).

    Rank 0 shows slm's messages at ``message_level`` as the launching CLI does (None: not at all); the other
    ranks stay silent.
    """
    import torch
    import torch.distributed as dist

    from slm.console import console
    from slm.logs import attach_cli_handler

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.get_rank() != 0:
        console.quiet = True
    elif message_level is not None:
        attach_cli_handler(message_level)
    try:
        result = job(*args, **kwargs)
        return {"ok": result if dist.get_rank() == 0 else None}
    except SlmError as exc:
        return {"error": str(exc), "exit_code": exc.exit_code, "kind": type(exc).__name__}
    finally:
        dist.destroy_process_group()


def launch(job, launch: Launch, *args, **kwargs):
    """Run ``job(*args, **kwargs)`` on every rank (torchrun's elastic agent); returns rank 0's result.

    ``job`` and its arguments must pickle (workers are spawned). An :class:`SlmError` on any rank
    is raised here as the same one-line error; any other failure as one line naming the rank.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from slm.logs import cli_level

    launch.validate()
    config = LaunchConfig(
        min_nodes=launch.nnodes,
        max_nodes=launch.nnodes,
        nproc_per_node=launch.nproc,
        run_id=launch.run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=launch.rdzv_endpoint or "127.0.0.1:0",
        max_restarts=0,
        monitor_interval=1,
        start_method="spawn",
    )
    try:
        # It passes positional arguments only; the workers are spawned, so they start with no log handlers.
        results = elastic_launch(config, _worker)(job, args, kwargs, cli_level())
    except SignalException as exc:  # Ctrl-C/SIGTERM: the agent passed it on; rank 0 checkpointed before stopping
        raise Interrupted(
            f"distributed training interrupted (signal {exc.sigval.name}): run the same command with --resume to "
            "continue from the last checkpoint"
        ) from None
    except ChildFailedError as exc:
        rank_, failure = next(iter(exc.failures.items()))
        raise SlmError(f"distributed training failed on rank {rank_} (exit code {failure.exitcode})") from None
    errors = [r for r in results.values() if isinstance(r, dict) and "error" in r]
    if errors:
        error = errors[0]
        classes = _error_classes()
        # A class outside slm.errors (e.g. slm.extras.MissingExtra) comes back as the one with its exit code.
        by_code: dict[int, type[SlmError]] = {}
        for cls in classes:
            by_code.setdefault(cls.exit_code, cls)
        kind = {cls.__name__: cls for cls in classes}.get(error["kind"]) or by_code.get(error["exit_code"], SlmError)
        raise kind(error["error"])
    main = results.get(0)
    return main["ok"] if isinstance(main, dict) else None


def _error_classes():
    from slm import errors

    return [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, SlmError)]
