"""The evaluation as a Markdown table: every method on the same cases, baselines included."""

from __future__ import annotations

from slm.apps.recommend.metrics import K

NAMES = {
    "random": "random",
    "popularity": "popularity (as of the case time)",
    "item_knn": "item-kNN collaborative filtering",
    "untuned_encoder": "un-fine-tuned encoder (text)",
    "two_tower": "two-tower text model (fine-tuned)",
    "features_only": "ranker without the text scores (features only)",
    "hybrid": "hybrid ranker (text + features)",
    "hybrid_served": "hybrid as served (ANN + popular shortlist, re-ranked)",
}
SECTIONS = (
    ("warm_sampled", "Warm items, target among {n} candidates (1 held-out + {neg} sampled)"),
    ("warm_full_catalogue", "Warm items, whole catalogue ({items:,} items, the user's seen items excluded)"),
    ("cold_sampled", "Cold-start items (no training events), target among {n} cold candidates"),
)


def table(results: dict[str, dict]) -> list[str]:
    lines = [f"| method | HR@{K} | NDCG@{K} | MRR | cases |", "|---|---:|---:|---:|---:|"]
    for name, m in results.items():
        lines.append(
            f"| {NAMES.get(name, name)} | {m[f'hr@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | {m['mrr']:.4f} | {m['cases']} |"
        )
    return lines


def _interval(bounds: list[float]) -> str:
    return f"; paired-bootstrap 95% interval {bounds[0]:+.1%} to {bounds[1]:+.1%}."


def markdown_report(evaluation: dict, data: dict | None = None) -> str:
    n = evaluation["sampled_candidates"]
    lines = ["# Recommender evaluation", ""]
    if data:
        lines += [
            f"Data: {data['events']:,} events ({data['positive_events']:,} positive) by {data['users']:,} users "
            f"on {data['items']:,} items.",
            "",
        ]
    for key, title in SECTIONS:
        if key in evaluation:
            lines += [f"## {title.format(n=n, neg=n - 1, items=evaluation.get('full_catalogue_items', 0))}", ""]
            lines += table(evaluation[key]) + [""]
    expected = evaluation["random_expected"]
    lines.append(
        f"A random ranking of {n} candidates expects HR@{K} {expected[f'hr@{K}']:.4f}, "
        f"NDCG@{K} {expected[f'ndcg@{K}']:.4f}."
    )
    if "cold_scorable" in evaluation:
        s = evaluation["cold_scorable"]
        lines += [
            "",
            f"Cold items the collaborative baselines can score: item-kNN {s['item_knn']:.0%}, popularity "
            f"{s['popularity']:.0%} (every cold item scores 0, so they rank at random); the text model scores "
            f"{s['two_tower']:.0%}.",
        ]
    a = evaluation["acceptance"]
    lines += [
        "",
        f"Hybrid vs the best collaborative baseline ({a['warm_best_collaborative']}) on warm NDCG@{K}: "
        f"{a['warm_hybrid_relative_gain']:+.1%} relative (target +10%: {'met' if a['warm_met'] else 'missed'})"
        + (_interval(a["warm_gain_95_interval"]) if "warm_gain_95_interval" in a else "."),
    ]
    if "cold_text_vs_random" in a:
        lines.append(
            f"Cold-start text model HR@{K} = {a['cold_text_vs_random']:.2f}x random (target 2x: "
            f"{'met' if a['cold_met'] else 'missed'})."
        )
    return "\n".join(lines) + "\n"
