"""Statistics for grading runs: intervals, agreement, and tests between conditions.

Every function accepts tiny or empty input and answers nan where a quantity is
undefined, never a made-up 0. Missing values (NaN or None) are dropped, pairwise
where the function takes pairs. Effects compare the second group with the first.
"""

from __future__ import annotations

import math

import krippendorff
import numpy as np
from scipy import stats

__all__ = [
    "wilson_ci",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "paired_statistic_ci",
    "krippendorff_alpha",
    "weighted_kappa",
    "agreement",
    "precision_recall",
    "holm",
    "rates_test",
    "scores_test",
    "mcnemar",
    "wilcoxon_paired",
    "pass_at_k",
    "pass_hat_k",
    "effective_judges",
    "mean_pairwise_r",
    "cohens_h_ci",
    "hedges_g_ci",
    "kendall_tau_within",
]

NAN = float("nan")


def _floats(values) -> np.ndarray:
    """1-D float array with None as NaN: _floats([1, None]) -> [1., nan]."""
    return np.asarray(values, dtype=float).ravel()


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Keep only pairs where both sides are present: _pairs([1, None], [2, 3]) -> ([1.], [2.])."""
    a, b = _floats(a), _floats(b)
    if len(a) != len(b):
        raise ValueError(f"paired inputs differ in length: {len(a)} != {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def _share(mask: np.ndarray) -> float:
    """Mean of a boolean mask, nan when empty: _share(np.array([True, False])) -> 0.5."""
    return float(mask.mean()) if mask.size else NAN


def wilson_ci(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: wilson_ci(0, 20) -> (0.0, 0.161)."""
    if n == 0:
        return NAN, NAN
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_ci(values, *, statistic=np.mean, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic: bootstrap_ci([0, 1]) -> (0.0, 1.0)."""
    x = _floats(values)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return NAN, NAN
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    # Percentile, not BCa: BCa degenerates on the small, discrete samples that ratings give.
    res = stats.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_bootstrap_ci(a, b, *, confidence: float = 0.95, n_resamples: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of mean(b - a) over complete pairs: paired_bootstrap_ci([1, 2], [2, 3]) -> (1.0, 1.0)."""
    a, b = _pairs(a, b)
    return bootstrap_ci(b - a, confidence=confidence, n_resamples=n_resamples, seed=seed)


def krippendorff_alpha(data, *, level: str = "ordinal") -> float:
    """Krippendorff's alpha for a raters x units array with NaN for missing: 1.0 for perfect agreement."""
    data = np.atleast_2d(np.asarray(data, dtype=float))
    # Only units coded by at least two raters carry information about agreement.
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    values = pairable[~np.isnan(pairable)]
    if values.size < 2 or np.unique(values).size < 2:
        return NAN
    return float(krippendorff.alpha(reliability_data=pairable, level_of_measurement=level))


def weighted_kappa(a, b, *, categories=(1, 2, 3, 4, 5), weights: str = "linear") -> float:
    """Cohen's kappa with linear or quadratic weights: weighted_kappa([1, 2, 3], [1, 2, 3]) -> 1.0."""
    if weights not in ("linear", "quadratic"):
        raise ValueError(f"weights must be 'linear' or 'quadratic', not {weights!r}")
    a, b = _pairs(a, b)
    position = {float(c): i for i, c in enumerate(categories)}
    if a.size == 0 or len(position) < 2:
        return NAN
    unknown = sorted(set(a.tolist() + b.tolist()) - position.keys())
    if unknown:
        raise ValueError(f"ratings outside categories {tuple(categories)}: {unknown}")
    k = len(position)
    observed = np.zeros((k, k))
    np.add.at(observed, ([position[x] for x in a.tolist()], [position[x] for x in b.tolist()]), 1)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    # Disagreement weights grow with distance between category positions, not values.
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))) / (k - 1)
    disagree = distance if weights == "linear" else distance**2
    chance = (disagree * expected).sum()
    if chance == 0:  # both raters used one and the same category: kappa is 0/0
        return NAN
    return float(1 - (disagree * observed).sum() / chance)


def agreement(gold, pred) -> dict:
    """Exact and within-one agreement over complete pairs: agreement([1, 3], [2, 3])['exact'] -> 0.5."""
    gold, pred = _pairs(gold, pred)
    diff = np.abs(gold - pred)
    return {"n": int(diff.size), "exact": _share(diff == 0), "within_1": _share(diff <= 1)}


def precision_recall(gold, pred) -> dict:
    """Precision and recall of pred against gold, pairs with None dropped: precision_recall([True], [True])['recall'] -> 1.0."""
    gold, pred = (x.astype(bool) for x in _pairs(gold, pred))
    tp, fp, fn = int((gold & pred).sum()), int((~gold & pred).sum()), int((gold & ~pred).sum())
    return {"precision": tp / (tp + fp) if tp + fp else NAN, "recall": tp / (tp + fn) if tp + fn else NAN,
            "tp": tp, "fp": fp, "fn": fn}


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, NaN kept as NaN: holm([0.01, 0.04]) -> [0.02, 0.04]."""
    p = _floats(pvalues)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m = order.size
    # The i-th smallest p is multiplied by (m - i); the running max keeps the order monotone.
    scaled = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = p.copy()
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted.tolist()


def rates_test(successes: list[int], totals: list[int]) -> dict:
    """Test that k groups share one success rate: Fisher for 2 groups, chi-squared for more.

    Empty groups are left out: 'groups' lists the positions of the groups compared.
    """
    used = [(s, t) for s, t in zip(successes, totals) if t > 0]
    compared = {"groups": [i for i, t in enumerate(totals) if t > 0]}
    if len(used) < 2:
        return {"test": "none (fewer than 2 groups)", "statistic": NAN, "p": NAN, "effect": NAN, "effect_name": ""} | compared
    table = np.array([[s, t - s] for s, t in used])
    if len(used) == 2:
        odds, p = stats.fisher_exact(table)
        (p1, p2) = table[:, 0] / table.sum(axis=1)
        h = 2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))
        return {"test": "fisher exact", "statistic": float(odds), "p": float(p), "effect": h,
                "effect_name": "Cohen's h (group 2 - group 1)"} | compared
    if (table.sum(axis=0) == 0).any():  # every group all successes or all failures: chi2 is 0/0
        return {"test": "chi2", "statistic": NAN, "p": NAN, "effect": NAN, "effect_name": "Cramér's V"} | compared
    res = stats.chi2_contingency(table)
    small = (res.expected_freq < 5).any()
    return {"test": "chi2 (small expected counts)" if small else "chi2", "statistic": float(res.statistic),
            "p": float(res.pvalue), "effect": float(stats.contingency.association(table, method="cramer")),
            "effect_name": "Cramér's V"} | compared


def scores_test(groups: list[list[float]]) -> dict:
    """Test that k groups of scores come from one distribution: Mann-Whitney for 2, Kruskal-Wallis for more.

    Empty groups are left out, so three groups with one empty get a two-group test: 'groups' lists the
    positions of the groups compared, `scores_test([[1, 2], [], [3, 4]])['groups']` -> [0, 2].
    """
    present = [(i, x[~np.isnan(x)]) for i, x in enumerate(map(_floats, groups))]
    present = [(i, x) for i, x in present if x.size >= 1]
    clean = [x for _, x in present]
    two = len(clean) == 2
    result = {"test": "mann-whitney u" if two else "kruskal-wallis", "statistic": NAN, "p": NAN, "effect": NAN,
              "effect_name": "rank-biserial (group 2 > group 1 positive)" if two else "epsilon-squared",
              "groups": [i for i, _ in present]}
    if len(clean) < 2 or np.unique(np.concatenate(clean)).size < 2:
        return result
    if two:
        x, y = clean
        res = stats.mannwhitneyu(x, y, alternative="two-sided")
        # U counts pairs where x wins; 1 - 2U/(n1 n2) is +1 when every y beats every x.
        effect = 1 - 2 * res.statistic / (x.size * y.size)
    else:
        res = stats.kruskal(*clean)
        n = sum(x.size for x in clean)
        effect = res.statistic / (n - 1)  # Tomczak & Tomczak (2014): H / ((n^2 - 1) / (n + 1))
    return result | {"statistic": float(res.statistic), "p": float(res.pvalue), "effect": float(effect)}


def mcnemar(a, b) -> dict:
    """Exact McNemar test on paired booleans: b01 counts a False/b True, b10 counts a True/b False.

    No pairs: p is nan (nothing was tested). Pairs that all agree: p is 1 (no discordant pair, no evidence of a change).
    """
    a, b = (x.astype(bool) for x in _pairs(a, b))
    b01, b10 = int((~a & b).sum()), int((a & ~b).sum())
    p = NAN if a.size == 0 else stats.binomtest(b01, b01 + b10).pvalue if b01 + b10 else 1.0
    return {"test": "exact mcnemar", "n": int(a.size), "b01": b01, "b10": b10, "p": float(p)}


def wilcoxon_paired(a, b) -> dict:
    """Wilcoxon signed-rank test on b - a over complete pairs, with matched-pairs rank-biserial effect."""
    a, b = _pairs(a, b)
    d = b - a
    result = {"test": "wilcoxon signed-rank", "statistic": NAN, "p": NAN, "n": int(d.size), "effect": NAN,
              "effect_name": "matched-pairs rank-biserial (b > a positive)"}
    nonzero = d[d != 0]
    if d.size < 2 or nonzero.size == 0:
        return result
    res = stats.wilcoxon(d)
    ranks = stats.rankdata(np.abs(nonzero))
    # Kerby (2014): (R+ - R-) / (R+ + R-), with zero differences discarded as the test does.
    effect = (ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum()
    return result | {"statistic": float(res.statistic), "p": float(res.pvalue), "effect": float(effect)}


def paired_statistic_ci(a, b, statistic, *, confidence: float = 0.95, n_resamples: int = 1000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap over complete pairs of statistic(a, b), e.g. of weighted_kappa.

    Resamples where the statistic is undefined (say, no variation left) are skipped, not zeroed.
    """
    a, b = _pairs(a, b)
    if a.size < 2:
        return NAN, NAN
    rows = np.random.default_rng(seed).integers(0, a.size, size=(n_resamples, a.size))
    values = np.array([statistic(a[r], b[r]) for r in rows], dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return NAN, NAN
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


# --- repeats, judge panels and effect sizes (issue 16) -------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that k of n repetitions drawn without replacement hold at least one of the c successes.

    The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k). pass_at_k(5, 2, 2) -> 0.7.
    """
    if not 0 < k <= n:
        return NAN
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Chance that k of n repetitions drawn without replacement are all successes: C(c, k) / C(n, k).

    The pass^k of tau-bench (Yao et al. 2024), unbiased for p^k. pass_hat_k(5, 2, 2) -> 0.1.
    """
    if not 0 < k <= n:
        return NAN
    return math.comb(c, k) / math.comb(n, k)


def mean_pairwise_r(data) -> float:
    """Mean Pearson correlation over pairs of raters (rows; NaN missing, pairwise complete): 1.0 when they agree."""
    data = np.atleast_2d(np.asarray(data, dtype=float))
    rs = []
    for i in range(data.shape[0]):
        for j in range(i + 1, data.shape[0]):
            a, b = _pairs(data[i], data[j])
            if a.size >= 3 and a.std() > 0 and b.std() > 0:  # a correlation needs variation on both sides
                rs.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(rs)) if rs else NAN


def effective_judges(k: int, r: float) -> float:
    """How many independent judges k judges with mean inter-judge correlation r are worth: k / (1 + (k - 1) r).

    The mean of k ratings with pairwise correlation r has the variance of the mean of that many independent
    ones (Kish's design effect). r below 0 is taken as 0, so the answer never exceeds k.
    effective_judges(3, 0.5) -> 1.5.
    """
    if k < 1 or r is None or math.isnan(r):
        return NAN
    return k / (1 + (k - 1) * min(max(r, 0.0), 1.0))


def cohens_h_ci(k1: int, n1: int, k2: int, n2: int, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Cohen's h of rate 2 against rate 1 with the normal interval h +- z sqrt(1/n1 + 1/n2): (h, low, high).

    cohens_h_ci(1, 4, 3, 4) -> (1.047, -0.339, 2.433): h = 2 asin(sqrt(.75)) - 2 asin(sqrt(.25)) = pi/3.
    """
    if n1 == 0 or n2 == 0:
        return NAN, NAN, NAN
    h = 2 * math.asin(math.sqrt(k2 / n2)) - 2 * math.asin(math.sqrt(k1 / n1))
    half = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(1 / n1 + 1 / n2)
    return h, h - half, h + half


def hedges_g_ci(x, y, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Hedges' g of y against x (bias-corrected Cohen's d) with its normal interval: (g, low, high).

    SE = sqrt((n1 + n2) / (n1 n2) + g^2 / (2 (n1 + n2))) (Hedges & Olkin 1985); NaN when a side has
    fewer than 2 values or neither side varies.
    """
    x, y = _floats(x), _floats(y)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    n1, n2 = x.size, y.size
    if n1 < 2 or n2 < 2:
        return NAN, NAN, NAN
    pooled = math.sqrt(((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return NAN, NAN, NAN
    g = (y.mean() - x.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9))
    se = math.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    z = stats.norm.ppf(0.5 + confidence / 2)
    return float(g), float(g - z * se), float(g + z * se)


def pearson_r(a, b) -> tuple[float, int]:
    """Pearson r over the pairs where both are present, with that n: `pearson_r([1, 2, 3], [1, 2, 4])` -> (0.982, 3).

    NaN when fewer than 3 pairs or a side does not vary.
    """
    a, b = _pairs(a, b)
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return NAN, int(a.size)
    return float(np.corrcoef(a, b)[0, 1]), int(a.size)


def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two orderings of the same items (ties allowed): reversed order -> -1.0.

    `kendall_tau([0.9, 0.5, 0.1], [0.8, 0.6, 0.2])` -> 1.0; NaN for fewer than 2 items or a constant side.
    """
    a, b = _pairs(a, b)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return NAN
    return float(stats.kendalltau(a, b).statistic)


def kendall_tau_within(a, b, groups) -> float | np.ndarray:
    """Kendall's tau-b over the pairs of items in the same group only: each group ranks its own items, and the
    concordant and discordant pairs of all groups are pooled. With one group it is `kendall_tau`.

    `a` and `b` hold one value per item, or one row per resample (then one tau per row); a missing value (NaN) counts
    as tied with every item. NaN when no pair is untied on both sides' counts.
    `kendall_tau_within([1, 0, 1, 0], [1, 0, 0, 1], ['x', 'x', 'y', 'y'])` -> 0.0 (x keeps its order, y reverses).
    """
    a, b, groups = np.asarray(a, dtype=float), np.asarray(b, dtype=float), np.asarray(groups)
    rows_a, rows_b = np.atleast_2d(a), np.atleast_2d(b)
    i, j = np.triu_indices(groups.size, 1)
    i, j = i[groups[i] == groups[j]], j[groups[i] == groups[j]]
    sa, sb = (np.nan_to_num(np.sign(x[:, i] - x[:, j])) for x in (rows_a, rows_b))
    untied = (sa != 0).sum(axis=1) * (sb != 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(untied > 0, (sa * sb).sum(axis=1) / np.sqrt(untied), NAN)
    return float(tau[0]) if a.ndim == 1 else tau
