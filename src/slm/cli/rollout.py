"""``slm promote`` and ``slm rollback``: change the version at a served bundle path (:mod:`slm.api.rollout`).

Core install only: no PyTorch, no ONNX Runtime (nothing is loaded, manifests are read and folders renamed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from slm.cli._util import command, out

if TYPE_CHECKING:
    from slm.api.rollout import Rollout

BundleArg = Annotated[
    Path,
    typer.Argument(metavar="BUNDLE", help="The bundle folder to change (e.g. the one 'slm serve --watch' serves).",
                   show_default=False),
]  # fmt: skip


def _report(done: Rollout, verb: str) -> None:
    where, source = escape(str(done.bundle)), escape(str(done.source))
    out.print(f"[green]{verb}[/] {where}: now version {done.version or '?'} (from {source})")
    if done.previous is not None:
        out.print(f"version {done.previous_version or '?'} kept at {escape(str(done.previous))}")
        out.print(f"undo: slm promote {escape(str(done.previous))} {escape(str(done.bundle))}")


@command(no_args_is_help=True)
def rollback(bundle: BundleArg) -> None:
    """Restore the parent of BUNDLE: the version its lineage names by digest.

    Taken from BUNDLE.previous (kept by the last promote), else copied from the parent's recorded path; it
    is verified before it replaces BUNDLE, in one rename. The version rolled back from is kept as
    BUNDLE.previous, so the rollback can be undone. A server running 'slm serve --watch' picks up the
    change without failing a request.
    """
    from slm.api.rollout import rollback as rollback_bundle

    _report(rollback_bundle(bundle), "rolled back")


@command(no_args_is_help=True)
def promote(
    candidate: Annotated[
        Path, typer.Argument(metavar="CANDIDATE", help="The finished bundle to put in place.", show_default=False)
    ],
    bundle: BundleArg,
) -> None:
    """Make the bundle CANDIDATE the one at BUNDLE (moved in with one rename, after verifying it).

    The version it replaces is kept as BUNDLE.previous; 'slm promote BUNDLE.previous BUNDLE' swaps the two
    back. 'slm update' promotes on its own when its gate passes.
    """
    from slm.api.rollout import promote as promote_bundle

    _report(promote_bundle(candidate, bundle), "promoted")
