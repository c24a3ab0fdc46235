"""``audit_privacy``: how much a bundle gives away about its training data (``slm audit privacy``).

Membership inference (can an attacker tell training texts from holdout texts by the model's loss?)
and, given the spec of canaries planted before training, their exposure. Runs through the runtime,
so an exported bundle is audited without PyTorch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slm.errors import ConfigError
from slm.fileio import atomic_directory, claim_output_folder
from slm.runtime.bundle import Bundle

log = logging.getLogger(__name__)


def audit_privacy(
    bundle: str | Path | Bundle,
    *,
    train: str | Path,
    holdout: str | Path,
    canaries: str | Path | None = None,
    reference: str | Path | None = None,
    output: str | Path | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    component: str | None = None,
    max_samples: int = 2000,
    candidates: int = 10_000,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    """Audit ``bundle`` against its training file ``train`` and a ``holdout`` file it never saw; the report.

    ``max_samples`` members and as many non-members at most (balanced, seeded with ``seed``) are
    attacked; ``canaries`` is the spec :func:`slm.audit.canaries.plant` returned (saved as JSON), and
    ``candidates`` secrets are sampled to rank each canary. ``reference``: a bundle trained without
    the members (e.g. on the holdout) for the reference-calibrated attack. ``output`` receives
    report.json, report.md and roc.png (replaced as a whole; a folder holding files slm did not write
    is refused before any work, or with ``force`` moved aside). Bad input: one-line ConfigError/DataError.
    """
    from slm.audit.canaries import load_spec
    from slm.audit.privacy import audit, check_single_label, read_inputs, resolve_component

    if max_samples < 20:
        raise ConfigError(f"--max-samples must be at least 20, got {max_samples}")
    if candidates < 100:
        raise ConfigError(f"--candidates must be at least 100, got {candidates}")
    if output is not None:
        claim_output_folder(Path(output), force=force)
    spec = None if canaries is None else load_spec(canaries)
    model = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    check_single_label(model)
    component = resolve_component(model, component)
    inputs = read_inputs(model, train, holdout, text_col=text_col, label_col=label_col, spec=spec)
    ref = None if reference is None else Bundle(reference)
    report, curves = audit(model, inputs, spec=spec, component=component, reference=ref,
                           max_per_side=max_samples, candidates=candidates, seed=seed)  # fmt: skip
    if output is not None:
        from slm.audit.report import write_report

        with atomic_directory(Path(output)) as staging:
            write_report(report, curves, staging)
        report["output"] = str(output)
        log.info("audit report written to %s", output)
    return report
