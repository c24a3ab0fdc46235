"""The Rich consoles: ``console`` for progress and status messages (stderr), ``out`` for results (stdout).

Status goes to stderr so that stdout stays for data; the CLI and the apps' commands print their results
(tables, reports) on ``out``.
"""

from rich.console import Console

console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=False)
