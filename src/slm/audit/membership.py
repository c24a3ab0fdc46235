"""Membership inference: can an attacker tell the texts a model was trained on from texts it never saw?

Every attack here scores each text so that a higher score means "more likely a member", from the
model's class probabilities and the text's true label only (a black-box attacker with labelled
candidates). Its AUC over balanced members and non-members is the audit's number: 0.5 means the
model behaves the same on both (no leak this attack can see), 1.0 means every member stands out.
TPR at 1% FPR says how many members are exposed with few false accusations (Carlini et al. 2022,
"Membership inference attacks from first principles", argue AUC alone hides that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPS = 1e-12
LOW_FPR = 0.01


def losses(proba: np.ndarray, targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-example cross-entropy -log p(true label), from probabilities ``(n, k)`` and label indices."""
    proba = np.asarray(proba, dtype=np.float64)
    idx = np.asarray(targets, dtype=np.int64)
    return -np.log(np.clip(proba[np.arange(len(idx)), idx], EPS, 1.0))


def balanced_sample(n_members: int, n_nonmembers: int, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the same number of members and non-members: min of both counts and ``limit``, seeded.

    Unbalanced sets would make TPR/FPR trade-offs depend on the ratio; the limit bounds inference cost.
    """
    n = min(n_members, n_nonmembers, limit)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_members, n, replace=False)), np.sort(rng.choice(n_nonmembers, n, replace=False))


@dataclass(frozen=True)
class AttackResult:
    """One attack's success: AUC with its bootstrap CI, TPR at 1% FPR, and the ROC curve."""

    name: str
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_low_fpr: float
    fpr: np.ndarray
    tpr: np.ndarray

    def to_json(self) -> dict[str, object]:
        return {
            "auc": round(self.auc, 4),
            "auc_ci": [round(self.auc_ci[0], 4), round(self.auc_ci[1], 4)],
            "tpr_at_1pct_fpr": round(self.tpr_at_low_fpr, 4),
        }


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float = LOW_FPR) -> float:
    """The best TPR of the ROC curve at a false-positive rate of at most ``target``."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def bootstrap_auc(
    is_member: np.ndarray, scores: np.ndarray, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC, resampling members and non-members separately (keeps the balance).

    The AUC is computed from ranks (Mann-Whitney U), about 50x faster than 1,000 calls of
    sklearn's roc_auc_score on 4,000 scores; ties count half, as there.
    """
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    pos, neg = scores[is_member == 1], scores[is_member == 0]
    out = np.empty(resamples)
    for i in range(resamples):
        p = pos[rng.integers(0, len(pos), len(pos))]
        q = neg[rng.integers(0, len(neg), len(neg))]
        ranks = rankdata(np.concatenate([p, q]))
        out[i] = (ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(q))
    alpha = (1 - level) / 2
    return float(np.quantile(out, alpha)), float(np.quantile(out, 1 - alpha))


def evaluate_attack(name: str, is_member: np.ndarray, scores: np.ndarray, *, seed: int = 0) -> AttackResult:
    """AUC (sklearn), its bootstrap CI and TPR at 1% FPR of one attack's scores."""
    from sklearn.metrics import roc_auc_score, roc_curve

    is_member = np.asarray(is_member, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if is_member.min() == is_member.max():
        raise ValueError("an attack needs both members and non-members")
    fpr, tpr, _ = roc_curve(is_member, scores)
    auc = float(roc_auc_score(is_member, scores))
    return AttackResult(name, auc, bootstrap_auc(is_member, scores, seed=seed), tpr_at_fpr(fpr, tpr), fpr, tpr)


def class_calibrated_scores(
    loss: np.ndarray, targets: np.ndarray, is_member: np.ndarray, *, seed: int = 0, min_count: int = 5
) -> np.ndarray:
    """Loss relative to the typical non-member loss of the same class (difficulty calibration), cross-fitted.

    Some intents are hard for every text, members or not; a global loss threshold mistakes them for
    non-members. Each text's score is -(loss - median non-member loss of its class) / IQR, with the
    class statistics taken from the non-members of the *other* half of a seeded 2-fold split, so no
    text calibrates its own score. Classes with fewer than ``min_count`` such non-members fall back to
    the global statistics. An attacker with labelled non-members (e.g. public data) can do this.
    """
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, 2, size=len(loss))
    scores = np.empty(len(loss))
    for f in (0, 1):
        ref = (fold != f) & (is_member == 0)
        g_med, g_iqr = _median_iqr(loss[ref])
        for c in np.unique(targets[fold == f]):
            here = (fold == f) & (targets == c)
            pool = loss[ref & (targets == c)]
            med, iqr = _median_iqr(pool) if len(pool) >= min_count else (g_med, g_iqr)
            scores[here] = -(loss[here] - med) / iqr
    return scores


def _median_iqr(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return 0.0, 1.0
    q1, med, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return float(med), float(max(q3 - q1, 1e-6))


def attack_scores(
    proba: np.ndarray,
    targets: np.ndarray,
    is_member: np.ndarray,
    *,
    reference_proba: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Scores of every attack (higher: more likely a member).

    ``loss``: -loss (Yeom et al. 2018's threshold attack); ``confidence``: the top class probability;
    ``class_calibrated``: see :func:`class_calibrated_scores`; ``reference`` (with a reference model's
    probabilities on the same texts): loss under the reference minus loss under the audited model, the
    offline difficulty calibration of Watson et al. 2022.
    """
    loss = losses(proba, targets)
    out = {
        "loss": -loss,
        "confidence": np.asarray(proba, dtype=np.float64).max(axis=1),
        "class_calibrated": class_calibrated_scores(loss, targets, is_member, seed=seed),
    }
    if reference_proba is not None:
        out["reference"] = losses(reference_proba, targets) - loss
    return out
