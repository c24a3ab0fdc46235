"""The parent's side of a benchmark worker: start the process, exchange JSON lines, stop it."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from slm.errors import SlmError, one_line

COMMAND_TIMEOUT_S = 3600.0


class WorkerError(SlmError):
    """A benchmark worker failed (its variant is reported as failed, the others go on)."""


class Worker:
    """One worker process and the JSON-lines conversation with it."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, *, load_only: bool = False) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.spawned_at = time.time()
        argv = [*command, "--spawned-at", repr(self.spawned_at)] + (["--load-only"] if load_only else [])
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, bufsize=1
            )
        except OSError as exc:
            self._log.close()
            raise WorkerError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are PIPEs
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_lines, daemon=True)
        self._reader.start()

    def _read_lines(self) -> None:
        for line in self._stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _last_log_line(self) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            lines = [ln.strip() for ln in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
            lines = [ln for ln in lines if ln and not ln.startswith(("warn", "Warn", "  "))]
            if lines:
                return one_line(lines[-1])[:300]
        return "no message"

    def receive(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerError(f"no answer within {timeout:.0f}s") from None
        if line is None:
            code = self.proc.wait(timeout=30)
            raise WorkerError(f"worker exited (code {code}): {self._last_log_line()}")
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(f"unreadable answer from the worker: {one_line(line)[:200]}") from None
        if "error" in message:
            raise WorkerError(message["error"])
        return message

    def ask(self, timeout: float = COMMAND_TIMEOUT_S, **message: Any) -> dict:
        try:
            self._stdin.write(json.dumps(message) + "\n")
            self._stdin.flush()
        except (BrokenPipeError, OSError):
            code = self.proc.poll()
            raise WorkerError(f"worker exited (code {code}): {self._last_log_line()}") from None
        return self.receive(timeout)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(WorkerError, OSError, ValueError):
                self.ask(timeout=30, cmd="quit")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait(timeout=30)
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        self._log.close()
