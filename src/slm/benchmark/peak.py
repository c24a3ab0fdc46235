"""Peak resident memory of a command: VmHWM polled from /proc, and the kernel's figure when it exits.

The command runs under a small watcher process, not straight under pytest: Linux starts a child's
``ru_maxrss`` at the memory of the process that forked it (measured: a pytest holding 1.4 GB of models
reported 1,448 MB for a child that peaked at 247 MB), so only a small parent gives the child's own peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The watcher: runs argv[3:], polls its VmHWM/VmRSS every 20 ms, kills it above argv[2] MiB, writes the peak.
WATCHER = r"""
import json, os, subprocess, sys, time
result, cap, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
proc = subprocess.Popen(cmd)
peak, killed = 0.0, False
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
        break
    try:
        fields = dict(line.split(":", 1) for line in open(f"/proc/{proc.pid}/status"))
        peak = max(peak, int(fields["VmHWM"].split()[0]) / 1024)
        if int(fields["VmRSS"].split()[0]) / 1024 > cap and not killed:
            proc.kill()
            killed = True
    except (OSError, KeyError, ValueError):
        pass
    time.sleep(0.02)
with open(result, "w") as handle:
    json.dump({"peak_mb": max(peak, usage.ru_maxrss / 1024), "killed": killed}, handle)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


@dataclass(frozen=True)
class Measured:
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str
    killed: bool  # the command passed cap_mb and was killed (it cannot hog a shared machine)


def run_measured(cmd: list[str], *, cap_mb: float = 3000, stdin: Path | None = None, timeout: float = 900,
                 env: dict[str, str] | None = None) -> Measured:  # fmt: skip
    """Run ``cmd`` (stdin from a file, if given) and report its peak RSS in MiB."""
    with tempfile.TemporaryDirectory() as folder, open(stdin or os.devnull, "rb") as given:
        result = Path(folder) / "peak.json"
        done = subprocess.run([sys.executable, "-c", WATCHER, str(result), str(cap_mb), *cmd], stdin=given,
                              capture_output=True, timeout=timeout, env=env)  # fmt: skip
        measured = json.loads(result.read_text())
    code = done.returncode - 256 if measured["killed"] and done.returncode > 128 else done.returncode
    return Measured(measured["peak_mb"], code, done.stdout.decode(errors="replace"),
                    done.stderr.decode(errors="replace"), measured["killed"])  # fmt: skip
