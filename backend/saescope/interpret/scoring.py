"""Score arithmetic: pooled Pearson correlation, balanced accuracy, and means with 95% CIs.

Owns what a score is (`Score`: value or NaN with the reason, never silently dropped; or a failure
when an LLM answer was unusable) and the per-dictionary summary (n, mean, 95% confidence interval,
NaN and failure counts). Pure numpy; no model, no prompts, no SQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Two-sided 97.5% quantiles of Student's t for small samples (df 1-30); the normal 1.96 beyond.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


@dataclass
class Score:
    """One scorer's result for one feature and one variant (e.g. simulation, top_and_random)."""

    scorer: str  # simulation | detection | fuzzing
    method: str  # lookup | llm
    version: str  # e.g. "simulation-lookup/1"
    variant: str  # top_and_random | top | random | balanced_accuracy
    value: float | None  # None when NaN or failed
    n: int = 0  # tokens (simulation) or items (detection, fuzzing) scored
    nan: bool = False  # the score is undefined (e.g. a constant prediction)
    failed: bool = False  # an LLM answer could not be used
    note: str = ""  # why NaN / why failed

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def pearson(truth: np.ndarray, predicted: np.ndarray) -> tuple[float | None, str]:
    """(r, "") of two equal-length vectors pooled over every token; (None, reason) when undefined."""
    x = np.asarray(truth, dtype=np.float64).reshape(-1)
    y = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"pearson of {x.shape} and {y.shape}")
    if x.size < 2:
        return None, "fewer than two tokens"
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        return None, "non-finite values"
    xc, yc = x - x.mean(), y - y.mean()
    sx, sy = float(np.sqrt((xc * xc).sum())), float(np.sqrt((yc * yc).sum()))
    if sy == 0.0:
        return None, "constant prediction"
    if sx == 0.0:
        return None, "constant activation"
    return float(np.clip((xc * yc).sum() / (sx * sy), -1.0, 1.0)), ""


def balanced_accuracy(labels: Sequence[int], predictions: Sequence[int]) -> tuple[float | None, str]:
    """(mean of the true-positive and true-negative rates, "") or (None, reason) without both classes."""
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(predictions, dtype=bool)
    if y.shape != p.shape:
        raise ValueError(f"balanced accuracy of {y.shape} and {p.shape}")
    if not y.any():
        return None, "no positive items"
    if y.all():
        return None, "no negative items"
    tpr = float((p & y).sum() / y.sum())
    tnr = float((~p & ~y).sum() / (~y).sum())
    return (tpr + tnr) / 2.0, ""


def t_quantile_975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


@dataclass
class ScoreSummary:
    """Scores of one scorer variant over the features of one dictionary."""

    scorer: str
    method: str
    version: str
    variant: str
    n: int  # features with a finite score
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n_nan: int
    n_failed: int


def summarise(values: Sequence[float | None], n_nan: int, n_failed: int, scorer: str, method: str,
              version: str, variant: str) -> ScoreSummary:
    """Mean and 95% t-interval of the finite `values` (None entries are the NaN/failed ones)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return ScoreSummary(scorer, method, version, variant, 0, None, None, None, n_nan, n_failed)
    mean = float(v.mean())
    if v.size < 2:
        return ScoreSummary(scorer, method, version, variant, 1, mean, None, None, n_nan, n_failed)
    half = t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return ScoreSummary(scorer, method, version, variant, int(v.size), mean, mean - half, mean + half,
                        n_nan, n_failed)


def summarise_scores(scores: Sequence[Score]) -> list[ScoreSummary]:
    """One summary per (scorer, method, version, variant) among `scores`, in first-seen order."""
    groups: dict[tuple[str, str, str, str], list[Score]] = {}
    for s in scores:
        groups.setdefault((s.scorer, s.method, s.version, s.variant), []).append(s)
    return [
        summarise([s.value for s in group], sum(s.nan for s in group), sum(s.failed for s in group), *key)
        for key, group in groups.items()
    ]
