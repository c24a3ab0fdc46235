"""Domain-adaptive pre-training (``slm pretrain``) then ``slm train``, against ``slm train`` alone, on one split.

    python bench/pretrain.py                                  # fin_tweets: none, simcse, mlm (about 65 min)
    python bench/pretrain.py --variants none,mlm --minutes 6  # some of them

Each variant trains with bench/classification.py's configuration for the dataset on its stratified 80/20
split (seed 42). A pre-training variant first runs ``slm.api.pretrain`` on the training file's texts, no labels
(the test texts are never read), for ``--minutes``; its wall time counts in the variant's total, which is
what issue 26's time limit is measured against. Writes ``bench/results/pretrain-<dataset>.{json,md}``.
The variants run one after another in this process, so they share the machine's state (the load average is
recorded before each).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from classification import DATA, DATASETS, RESULTS, _split_8020
from results_io import write_results

import slm
from slm.api.pretraining import pretrain
from slm.hardware import load_average, machine_info
from slm.training.config import TrainConfig
from slm.training.pretrain_config import OBJECTIVES, PretrainConfig

ROOT = Path(__file__).resolve().parent


def run_variant(name: str, variant: str, minutes: float, split: tuple[Path, Path], work: Path) -> dict:
    """One variant: optional pre-training, then training and the test scores."""
    spec = DATASETS[name]
    train, test = split
    config = TrainConfig(**spec["config"])
    load_before = load_average()
    started = time.perf_counter()
    pretraining = None
    if variant != "none":
        base = work / f"{name}-{variant}-base"
        result = pretrain(
            train, output=base, base_model=config.base_model,
            text_col=spec["text"], config=PretrainConfig(objective=variant, max_minutes=minutes), force=True,
        )  # fmt: skip
        pretraining = result.to_dict()
        config = TrainConfig(**{**spec["config"], "base_model": str(base)})
    pretrain_minutes = (time.perf_counter() - started) / 60
    bundle = slm.train(
        train, output=work / f"{name}-{variant}", test=test, text_col=spec["text"], label_col=spec["label"],
        val_size=0.1, config=config, force=True,
    )  # fmt: skip
    manifest = bundle.manifest.to_json()
    return {
        "variant": variant,
        "pretraining": pretraining,
        "pretrain_minutes": round(pretrain_minutes, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
        "models": manifest["metrics"]["test"],
        "shipped": manifest["default_component"],
        "epochs_run": manifest["training"]["epochs_run"],
        "load_average_before": load_before,
    }


def markdown(result: dict) -> str:
    rows = result["variants"]
    none = next((r for r in rows if r["variant"] == "none"), None)
    lines = [
        f"# Domain-adaptive pre-training on {result['dataset']} (then the same `slm train`)",
        "",
        f"Pre-training budget {result['minutes']:g} min on the training texts (no labels); test split never read.",
        "",
        "| variant | pre-train steps | held-out loss | total min | transformer macro-F1 | ensemble macro-F1 | "
        "shipped | shipped macro-F1 | vs none |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, m = r["pretraining"], r["models"]
        shipped = m[r["shipped"]]["macro_f1"]
        delta = "" if none is None else f"{(shipped - none['models'][none['shipped']]['macro_f1']) * 100:+.2f}"
        loss = "" if p is None else f"{p['held_out_loss_before']:.3f} → {p['held_out_loss_after']:.3f}"
        lines.append(
            f"| {r['variant']} | {'' if p is None else p['steps']} | {loss} | {r['total_minutes']} | "
            f"{m['transformer']['macro_f1']:.4f} | {m.get('ensemble', {}).get('macro_f1', float('nan')):.4f} | "
            f"{r['shipped']} | {shipped:.4f} | {delta} |"
        )
    baseline = rows[0]["models"]["ngram_baseline"]
    lines += ["", f"TF-IDF + LR baseline on the same split: macro-F1 {baseline['macro_f1']:.4f}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fin_tweets", choices=[n for n, s in DATASETS.items() if "file" in s])
    parser.add_argument("--variants", default="none," + ",".join(OBJECTIVES), help="none and/or objectives")
    parser.add_argument("--minutes", type=float, default=6.0, help="pre-training budget of each objective")
    parser.add_argument("--work", type=Path, default=ROOT.parent / "runs" / "bench" / "pretrain")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"none", *OBJECTIVES}
    if unknown or not DATA.exists():
        parser.error(f"unknown variants {sorted(unknown)}" if unknown else f"the data folder {DATA} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        split = _split_8020(DATASETS[args.dataset], Path(tmp))
        rows = []
        for variant in variants:
            rows.append(run_variant(args.dataset, variant, args.minutes, split, args.work))
            print(json.dumps({k: rows[-1][k] for k in ("variant", "total_minutes", "shipped")}), flush=True)
    result = {"dataset": args.dataset, "minutes": args.minutes, "variants": rows, **machine_info()}
    write_results(RESULTS / f"pretrain-{args.dataset}", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
