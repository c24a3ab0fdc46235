"""The audit's report files: report.json, report.md and roc.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm.audit.membership import AttackResult
from slm.fileio import write_json_atomic, write_text_atomic

ATTACK_NAMES = {
    "loss": "loss threshold",
    "confidence": "confidence threshold",
    "class_calibrated": "class-calibrated loss",
    "reference": "reference-calibrated loss",
}


def dp_line(record: dict[str, Any] | None) -> str:
    """``(ε, δ)`` spent as the bundle's manifest records it, or why there is none."""
    if not record:
        return "not trained with differential privacy (no privacy record in the manifest)"
    eps = record.get("epsilon_spent", record.get("epsilon"))
    delta = record.get("delta")
    eps_s = "?" if eps is None else f"{float(eps):.3g}"
    delta_s = "?" if delta is None else f"{float(delta):.3g}"
    target = record.get("epsilon_target")
    more = f" (target ε {float(target):g})" if target is not None else ""
    if record.get("recipe"):
        more += f", recipe {record['recipe']}"
    return f"differentially private: (ε = {eps_s}, δ = {delta_s}){more}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The few lines the CLI prints: AUC with CI and TPR at 1% FPR per attack, exposure, (ε, δ)."""
    m = report["membership"]
    lines = [
        f"{report['bundle']} ({report['component']}): {dp_line(report.get('privacy'))}",
        f"members {m['members']:,} vs non-members {m['nonmembers']:,}: "
        f"accuracy {m['member_accuracy']:.1%} vs {m['nonmember_accuracy']:.1%}, "
        f"mean loss {m['member_mean_loss']:.3f} vs {m['nonmember_mean_loss']:.3f}",
    ]
    for name, a in m["attacks"].items():
        low, high = a["auc_ci"]
        lines.append(
            f"{ATTACK_NAMES.get(name, name)} attack: AUC {a['auc']:.4f} (95% CI {low:.4f}-{high:.4f}), "
            f"TPR at 1% FPR {a['tpr_at_1pct_fpr']:.2%}"
        )
    c = report.get("canaries")
    if c:
        lines.append(
            f"canary exposure: mean {c['mean_exposure']:.2f}, max {c['max_exposure']:.2f} bits "
            f"(ceiling {c['exposure_ceiling']:.2f} from {c['sampled_candidates']:,} sampled candidates)"
        )
    return lines


def _membership_md(report: dict[str, Any]) -> list[str]:
    m = report["membership"]
    out = [
        "## Membership inference",
        "",
        f"{m['members']:,} training texts (members) against {m['nonmembers']:,} holdout texts (non-members), "
        f"sampled balanced with seed {report['seed']}. AUC 0.5: the attack cannot tell them apart.",
        "",
        "| attack | AUC | 95% CI (bootstrap) | TPR at 1% FPR |",
        "|---|---|---|---|",
    ]
    for name, a in m["attacks"].items():
        low, high = a["auc_ci"]
        out.append(f"| {ATTACK_NAMES.get(name, name)} | {a['auc']:.4f} | {low:.4f} - {high:.4f} "
                   f"| {a['tpr_at_1pct_fpr']:.2%} |")  # fmt: skip
    out += [
        "",
        f"Accuracy on members {m['member_accuracy']:.2%}, on non-members {m['nonmember_accuracy']:.2%}; "
        f"mean loss {m['member_mean_loss']:.4f} vs {m['nonmember_mean_loss']:.4f}.",
        "",
        "![ROC curves](roc.png)",
        "",
    ]
    dropped = report.get("dropped") or {}
    if any(dropped.values()):
        out += [f"Left out: {dropped.get('canary_rows', 0)} canary rows of the training file, "
                f"{dropped.get('holdout_in_train', 0)} holdout texts also in the training file.", ""]  # fmt: skip
    return out


def _canaries_md(c: dict[str, Any]) -> list[str]:
    out = [
        "## Canary exposure",
        "",
        f"Template `{c['template']}`; exposure = log2(|candidates|) - log2(rank), the rank estimated from "
        f"{c['sampled_candidates']:,} of {c['candidate_space']:,} candidate secrets (at most "
        f"{c['exposure_ceiling']:.2f} bits can show). Mean {c['mean_exposure']:.2f}, max {c['max_exposure']:.2f}.",
        "",
        "| secret | label | repetitions | exposure | estimated rank |",
        "|---|---|---|---|---|",
    ]
    for r in c["canaries"]:
        out.append(f"| {r['secret']} | {r['label']} | {r['repetitions']} | {r['exposure']:.2f} "
                   f"| {r['estimated_rank']:,.0f} |")  # fmt: skip
    return out


def markdown(report: dict[str, Any]) -> str:
    """report.md: the attacks' table, the ROC plot and the canaries' exposure."""
    out = [
        f"# Privacy audit: {Path(report['bundle']).name}",
        "",
        f"Bundle `{report['bundle']}`, component `{report['component']}` ({report['backend']}); "
        f"{dp_line(report.get('privacy'))}.",
        "",
        *_membership_md(report),
    ]
    if report.get("canaries"):
        out += _canaries_md(report["canaries"])
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], curves: dict[str, AttackResult], folder: Path) -> None:
    """report.json, report.md and roc.png into ``folder`` (a staging folder of slm.fileio.atomic_directory)."""
    from slm.reports.plots import plot_roc

    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.md", markdown(report))
    title = f"membership inference: {Path(report['bundle']).name}"
    lines = {ATTACK_NAMES.get(n, n): (a.fpr.tolist(), a.tpr.tolist(), a.auc) for n, a in curves.items()}
    plot_roc(lines, folder / "roc.png", title)
