"""Vocabulary trimming and the domain dictionary on Chinese data, measured side by side.

    python bench/chinese.py waimai ecdt        # first: the bundles this benchmark starts from
    python bench/chinese_vocab.py              # trim + int8 on waimai, lexicon on ecdt and waimai

Trimming (waimai bundle from ``bench/chinese.py``): the untrimmed bundle is exported to fp32 ONNX
and quantized to int8; the trimmed one is built by ``slm compress --trim-vocab --quantize int8``
with the training split as the domain corpus. Reported: weight file sizes, test accuracy of
every variant, and batch-1 latency of untrimmed int8 vs trimmed int8 measured interleaved in one
run (the ratio is what counts on a shared machine).

Lexicon: a domain dictionary mined from each training split (the most frequent 2-4 character
strings the tokenizer splits into two or more pieces; ``mine_terms``) is added with
``slm train --lexicon``. Reported: mean tokens per text with and without it, and test accuracy
of ECDT trained with it next to the same training without it (``chinese_ecdt.json``).
Writes ``bench/results/chinese_vocab.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chinese import DATASETS, RESULTS, splits  # noqa: E402

import slm  # noqa: E402
from slm.training.config import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent
BUNDLES = ROOT.parent / "runs" / "bench"
CJK_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")


def slm_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "slm", *args], check=True)


def accuracy(bundle: Path, frame: pd.DataFrame, component: str = "transformer") -> float:
    predictions = slm.load(bundle).predict(frame["text"].tolist(), component=component)
    return float(np.mean([p["label"] == y for p, y in zip(predictions, frame["label"], strict=True)]))


def weights_mb(bundle: Path) -> dict[str, float]:
    files = {"onnx": bundle / "onnx" / "model.onnx", "safetensors": bundle / "model" / "model.safetensors"}
    return {k: round(v.stat().st_size / 1e6, 2) for k, v in files.items() if v.is_file()}


def latency(bundles: dict[str, Path], texts: list[str], rounds: int = 3) -> dict[str, dict]:
    """Batch-1 latency (ms) of each bundle's ONNX model, the bundles interleaved text by text."""
    from slm.bundle.manifest import read_manifest
    from slm.runtime.onnx import OnnxComponent

    models = {k: OnnxComponent(p, read_manifest(p).components.onnx) for k, p in bundles.items()}
    for model in models.values():
        model.logits(texts[:20], batch_size=1)  # warm up
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for text in texts:
            for name, model in models.items():
                started = time.perf_counter()
                model.logits([text], batch_size=1)
                times[name].append(1000 * (time.perf_counter() - started))
    return {k: {"p50_ms": round(statistics.median(v), 3), "mean_ms": round(statistics.fmean(v), 3)}
            for k, v in times.items()}  # fmt: skip


def trimming(work: Path) -> dict:
    parent = BUNDLES / "chinese-waimai"
    if not (parent / "manifest.json").is_file():
        raise SystemExit(f"error: {parent} is missing: run python bench/chinese.py waimai first")
    files = splits("waimai", work)
    test = pd.read_csv(files["test"], dtype=str, keep_default_na=False)
    variants = {"fp32": work / "fp32", "int8": work / "int8", "trimmed-int8": work / "trimmed-int8"}
    train, validation = str(files["train"]), str(files["validation"])  # the bundle's own were temporary files
    slm_cli("export", str(parent), "--data", train, "-o", str(variants["fp32"]))
    slm_cli("compress", str(variants["fp32"]), "--quantize", "int8", "--validation", validation,
            "-o", str(variants["int8"]))  # fmt: skip
    slm_cli("compress", str(parent), "--trim-vocab", "--quantize", "int8", "--data", train,
            "--validation", validation, "-o", str(variants["trimmed-int8"]))  # fmt: skip
    result = {"parent": str(parent), "variants": {}}
    for name, path in variants.items():
        result["variants"][name] = {"weights_mb": weights_mb(path), "test_accuracy": accuracy(path, test)}
    result["variants"]["pytorch-fp32"] = {"weights_mb": weights_mb(parent), "test_accuracy": accuracy(parent, test)}
    trim = json.loads((variants["trimmed-int8"] / "manifest.json").read_text())["compression"]["trim_vocab"]
    result["trim_vocab"] = trim
    fp32_size = result["variants"]["fp32"]["weights_mb"]["onnx"]
    trimmed_size = result["variants"]["trimmed-int8"]["weights_mb"]["onnx"]
    result["size_ratio_vs_fp32"] = round(trimmed_size / fp32_size, 4)
    drop = 100 * (result["variants"]["fp32"]["test_accuracy"] - result["variants"]["trimmed-int8"]["test_accuracy"])
    result["accuracy_drop_points_vs_fp32"] = round(drop, 2)
    sample = test["text"].sample(200, random_state=0).tolist()
    lat = latency({"int8": variants["int8"], "trimmed-int8": variants["trimmed-int8"]}, sample)
    result["latency_batch1"] = lat
    result["latency_ratio_trimmed_vs_untrimmed_int8"] = round(lat["trimmed-int8"]["p50_ms"] / lat["int8"]["p50_ms"], 3)
    result["checks"] = {
        "size_le_15pct_of_fp32": result["size_ratio_vs_fp32"] <= 0.15,
        "accuracy_within_0.5_points": drop <= 0.5,
        "latency_no_worse_than_int8": result["latency_ratio_trimmed_vs_untrimmed_int8"] <= 1.05,
    }
    return result


def mine_terms(texts: list[str], tokenizer, top: int = 200, min_count: int = 5) -> list[str]:
    """The most frequent 2-4 character CJK strings that the tokenizer splits into 2+ pieces."""
    counts: Counter[str] = Counter()
    for text in texts:
        for run in CJK_RUN.findall(text):
            for n in (2, 3, 4):
                counts.update(run[i : i + n] for i in range(len(run) - n + 1))
    terms: list[str] = []
    for term, count in counts.most_common():
        if count < min_count or len(terms) >= top:
            break
        pieces = [p for p in tokenizer.tokenize(term) if p != "▁"]
        if len(pieces) >= 2 and not any(term in t or t in term for t in terms):
            terms.append(term)
    return terms


def lexicon_effect(work: Path, train_ecdt: bool) -> dict:
    from transformers import AutoTokenizer

    from slm.models.domain_terms import mean_tokens
    from slm.models.registry import resolve_base_model

    base = resolve_base_model("e5-small-multi")
    plain = AutoTokenizer.from_pretrained(base.path)
    out = {}
    for name in ("waimai", "ecdt"):
        folder = work / name
        folder.mkdir()
        files = splits(name, folder)
        train = pd.read_csv(files["train"], dtype=str, keep_default_na=False)
        test = pd.read_csv(files["test"], dtype=str, keep_default_na=False)
        terms = mine_terms(train["text"].tolist(), plain)
        lexicon = ROOT / "results" / f"chinese_{name}_lexicon.txt"
        lexicon.write_text("\n".join(terms) + "\n", encoding="utf-8")
        from slm.models.domain_terms import add_domain_terms

        report = add_domain_terms(base.path, lexicon, folder / "base", train["text"].tolist())
        extended = AutoTokenizer.from_pretrained(folder / "base")
        row = {
            "terms": len(terms), "added_tokens": len(report.added), "examples": report.added[:15],
            "mean_tokens_train": [report.mean_tokens_before, report.mean_tokens_after],
            "mean_tokens_test": [round(mean_tokens(plain, test["text"].tolist()), 3),
                                 round(mean_tokens(extended, test["text"].tolist()), 3)],
            "lexicon_file": str(lexicon.relative_to(ROOT.parent)),
        }  # fmt: skip
        if name == "ecdt" and train_ecdt:
            config = TrainConfig(base_model="e5-small-multi", lexicon=str(lexicon), **DATASETS["ecdt"]["config"])
            bundle = slm.train(files["train"], output=BUNDLES / "chinese-ecdt-lexicon", validation=files["validation"],
                               test=files["test"], text_col="text", label_col="label", config=config)  # fmt: skip
            without = json.loads((RESULTS / "chinese_ecdt.json").read_text())["models"]
            metrics = (bundle.manifest.metrics or {})["test"]
            row["accuracy"] = {
                component: {"without": without[component]["accuracy"], "with": metrics[component]["accuracy"]}
                for component in ("transformer", "ensemble")
            }
        out[name] = row
    return out


def markdown(result: dict) -> str:
    lines = ["# Vocabulary trimming and domain dictionary (e5-small-multi, Chinese)", ""]
    trim = result.get("trimming")
    if trim:
        lines += ["## Trimming to the domain corpus (waimai_10k train split) + int8", "",
                  "| variant | weights (MB) | test accuracy | batch-1 p50 (ms) |", "|---|---|---|---|"]  # fmt: skip
        for name, v in trim["variants"].items():
            size = v["weights_mb"].get("onnx", v["weights_mb"].get("safetensors"))
            lat = trim["latency_batch1"].get(name, {}).get("p50_ms", "-")
            lines.append(f"| {name} | {size} | {100 * v['test_accuracy']:.2f}% | {lat} |")
        t = trim["trim_vocab"]
        lines += ["", f"Tokens kept: {t['tokens_kept']:,} of {t['tokens_before']:,} (reserve {t['reserve']}). "
                  f"Trimmed int8 weights are {100 * trim['size_ratio_vs_fp32']:.1f}% of the fp32 ONNX model; "
                  f"accuracy drop vs fp32 {trim['accuracy_drop_points_vs_fp32']:+.2f} points; batch-1 latency "
                  f"{trim['latency_ratio_trimmed_vs_untrimmed_int8']:.3f}x untrimmed int8 (same run, interleaved).",
                  "", "Checks: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in trim["checks"].items()),
                  ""]  # fmt: skip
    lex = result.get("lexicon")
    if lex:
        lines += ["## Domain dictionary (terms mined from the training split)", "",
                  "| dataset | terms added | mean tokens/text train (without → with) | test (without → with) | "
                  "test accuracy without → with |", "|---|---|---|---|---|"]  # fmt: skip
        for name, row in lex.items():
            acc = row.get("accuracy")
            shown = "; ".join(f"{c} {100 * a['without']:.2f}% → {100 * a['with']:.2f}%" for c, a in acc.items()) \
                if acc else "not trained"  # fmt: skip
            lines.append(f"| {name} | {row['added_tokens']} | {row['mean_tokens_train'][0]} → "
                         f"{row['mean_tokens_train'][1]} | {row['mean_tokens_test'][0]} → {row['mean_tokens_test'][1]} "
                         f"| {shown} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["trimming", "lexicon"], choices=["trimming", "lexicon"])
    parser.add_argument("--no-train", action="store_true", help="lexicon: token counts only, no ECDT training")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "chinese_vocab.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="slm-bench-vocab-") as tmp:
        if "lexicon" in args.parts:
            (Path(tmp) / "lexicon").mkdir()
            result["lexicon"] = lexicon_effect(Path(tmp) / "lexicon", train_ecdt=not args.no_train)
            path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        if "trimming" in args.parts:
            (Path(tmp) / "trim").mkdir()
            result["trimming"] = trimming(Path(tmp) / "trim")
            path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "chinese_vocab.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
