"""The robustness report on real bundles: shipped model vs n-gram baseline under each perturbation (issue 26).

    python bench/robustness.py --bundle /work/artifacts/nondp --test /work/artifacts/dp-split/test.csv
    python bench/robustness.py ... --zh-bundle runs/bench/e5-waimai-limit2000 --train-report runs/b77/report/report.json

BANKING77: ``slm.api.evaluate`` of a trained bundle on its test file (the official 3,080 texts) with the
robustness section: each perturbation's accuracy and drop for the shipped model and the n-gram baseline, the
worst slices, and the seconds the section took next to the bundle's own training time.

Chinese (``--zh-bundle``, optional): a bundle trained by ``bench/auto_base_model.py --limit N`` on a seeded
stratified sample of N waimai_10k rows; it is evaluated on 2,000 waimai rows outside that sample (seeded), so
no text it trained on is scored. Its perturbations are the Chinese ones (width forms, traditional characters,
punctuation, whitespace).

``--train-report``: the report.json of a fresh ``slm train`` run (robustness on): its robustness seconds
against the run's wall time, measured in the same process under the same load.
Writes ``bench/results/robustness.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"
RESULTS = ROOT / "results"
ZH_EVAL_ROWS = 2000
SEED = 42


def waimai_unseen(limit: int, folder: Path) -> Path:
    """2,000 waimai rows outside ``bench/auto_base_model.py``'s stratified sample of ``limit`` rows (seed 42)."""
    import pandas as pd

    frame = pd.read_csv(DATA / "waimai_10k" / "waimai_10k.csv")
    share = min(1.0, limit / len(frame))
    trained = pd.concat([group.sample(frac=share, random_state=SEED) for _, group in frame.groupby("label")])
    unseen = frame.drop(index=trained.index).sample(n=ZH_EVAL_ROWS, random_state=SEED)
    path = folder / "waimai_unseen.csv"
    unseen.to_csv(path, index=False)
    return path


def measure(bundle: Path, data: Path) -> dict[str, Any]:
    """One evaluation's robustness section, the models' overall scores and the bundle's training time."""
    import slm
    from slm.bundle.manifest import read_manifest

    report = slm.evaluate(bundle, data)
    manifest = read_manifest(bundle)
    section = report["robustness"]
    training = (manifest.training or {}).get("wall_time_s")
    return {
        "bundle": str(bundle),
        "data": str(data),
        "base_model": manifest.base_model_name,
        "shipped": report["shipped"],
        "accuracy": {name: m.get("accuracy") for name, m in report["models"].items()},
        "robustness": section,
        "robustness_seconds": section["seconds"],
        "evaluation_seconds": report["evaluation_seconds"],
        "training_wall_s": training,
        "share_of_training": round(section["seconds"] / training, 4) if training else None,
    }


def training_share(path: Path) -> dict[str, Any]:
    """Robustness seconds against the wall time of the same ``slm train`` run (from its report.json)."""
    report = json.loads(path.read_text())
    seconds, wall = report["robustness"]["seconds"], report["training"]["wall_time_s"]
    return {
        "report": str(path),
        "robustness_seconds": seconds,
        "fine_tuning_wall_s": wall,
        "baseline_fit_s": report["baseline"]["fit_seconds"],
        "share_of_fine_tuning": round(seconds / wall, 4),
        "load_average": report["environment"].get("load_average"),
    }


def _table(run: dict[str, Any]) -> list[str]:
    section = run["robustness"]
    models = list(section["models"])
    lines = [
        "| Perturbation | texts changed | " + " | ".join(f"{m} acc | {m} drop" for m in models) + " |",
        "|---|---:|" + "---:|---:|" * len(models),
        "| clean | — | " + " | ".join(f"{100 * section['models'][m]['clean']:.1f}% | —" for m in models) + " |",
    ]
    for name, info in section["perturbations"].items():
        cells = []
        for m in models:
            result = section["models"][m]["perturbations"][name]
            cells.append(
                f"{100 * result['score']:.1f}% | {result['drop_points']:+.1f} "
                f"({result.get('broken', '—')} broken, {result.get('fixed', '—')} fixed)"
            )
        lines.append(f"| {name} | {info['changed']} of {section['sample']['n']} | " + " | ".join(cells) + " |")
    return lines


def _worst(run: dict[str, Any]) -> list[str]:
    lines = []
    for name, model in run["robustness"]["models"].items():
        worst = "; ".join(
            f"{w['slice']} {w['name']} (n={w['n']}) {w['gap_points']:+.2f}" for w in model["worst_slices"]
        )
        lines.append(f"- worst slices, {name}: {worst or 'none below overall'}")
    return lines


def render(result: dict[str, Any]) -> str:
    lines = ["# Robustness report on real bundles", ""]
    lines += [
        "Accuracy on a seeded sample of at most 500 test texts, clean and under each perturbation "
        "(`slm.reports.perturbations`); drop in points (clean − perturbed); broken / fixed: texts turned from "
        "right to wrong and back. Produced by `python bench/robustness.py`.",
        "",
    ]
    for key, title in (("banking77", "BANKING77 (official test split, 3,080 texts)"), ("waimai", "waimai_10k")):
        run = result.get(key)
        if not run:
            continue
        lines += [f"## {title}", "", f"Bundle `{run['bundle']}` ({run['base_model']}, shipped: {run['shipped']}); "
                  f"data `{run['data']}`.", ""]  # fmt: skip
        lines += _table(run) + [""] + _worst(run)
        lines += [
            f"- robustness section: {run['robustness_seconds']:.1f} s (evaluation of every model on every text: "
            f"{run['evaluation_seconds']:.1f} s); the bundle's fine-tuning took {run['training_wall_s']} s"
            + (f" ({100 * run['share_of_training']:.1f}%)" if run["share_of_training"] else ""),
            "",
        ]
    share = result.get("training_run")
    if share:
        lines += [
            "## Cost inside a training run",
            "",
            f"`slm train` on BANKING77 (`{share['report']}`): the robustness section took "
            f"{share['robustness_seconds']:.1f} s against {share['fine_tuning_wall_s']:.0f} s of fine-tuning "
            f"({100 * share['share_of_fine_tuning']:.1f}%; target well under 10%); load average "
            f"{share['load_average']}.",
            "",
        ]
    lines += [f"Machine: {result['machine']['cpu']['model']}, load average {result['load_average']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("/work/artifacts/nondp"))
    parser.add_argument("--test", type=Path, default=Path("/work/artifacts/dp-split/test.csv"))
    parser.add_argument("--zh-bundle", type=Path, help="a waimai bundle from bench/auto_base_model.py --limit N")
    parser.add_argument("--zh-limit", type=int, default=2000, help="the N it was trained with")
    parser.add_argument("--train-report", type=Path, help="report.json of a fresh slm train run on BANKING77")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"banking77": measure(args.bundle, args.test)}
    if args.zh_bundle:
        with tempfile.TemporaryDirectory() as tmp:
            result["waimai"] = measure(args.zh_bundle, waimai_unseen(args.zh_limit, Path(tmp)))
            result["waimai"]["data"] = f"{ZH_EVAL_ROWS} waimai_10k rows outside the {args.zh_limit}-row training sample"
    if args.train_report:
        result["training_run"] = training_share(args.train_report)
    result.update(machine=machine_info(["torch", "onnxruntime"]), load_average=load_average())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "robustness.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "robustness.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
