"""The one Rich console for progress and status messages (stderr, so stdout stays for data)."""

from rich.console import Console

console = Console(stderr=True)
