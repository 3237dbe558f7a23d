"""Each statistic against values worked by hand, taken from a cited source, or computed a second way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evaluations.analysis.stats import (
    agreement,
    bootstrap_ci,
    holm,
    krippendorff_alpha,
    mcnemar,
    paired_bootstrap_ci,
    precision_recall,
    rates_test,
    scores_test,
    weighted_kappa,
    wilcoxon_paired,
    wilson_ci,
)

approx = pytest.approx


def is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


# --- intervals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Newcombe (1998) "Two-sided confidence intervals for the single proportion", Stat Med 17:857, Table II, method 3.
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_ci_matches_newcombe(k, n, low, high):
    assert wilson_ci(k, n) == (approx(low, abs=5e-5), approx(high, abs=5e-5))


def test_wilson_ci_by_hand_and_empty():
    # p = 0.5, n = 10, z = 1.95996: centre 0.5, half-width z/(n+z^2) * sqrt(n*p*q + z^2/4)
    # = 1.95996/13.8415 * sqrt(2.5 + 0.9604) = 0.141600 * 1.860215 = 0.263406
    assert wilson_ci(5, 10) == (approx(0.236594, abs=1e-5), approx(0.763406, abs=1e-5))
    # 0 successes: upper = z^2/(n+z^2) = 3.8415/13.8415 = 0.277533
    assert wilson_ci(0, 10)[1] == approx(0.277533, abs=1e-5)
    assert all(map(is_nan, wilson_ci(0, 0)))


def test_bootstrap_ci_two_points_by_hand():
    # Resampling [0, 1] gives means 0, 0.5, 1 with probability 1/4, 1/2, 1/4: 2.5% and 97.5% points are 0 and 1.
    assert bootstrap_ci([0, 1, float("nan")]) == (0.0, 1.0)


def test_bootstrap_ci_matches_t_interval_on_large_normal_sample():
    x = np.random.default_rng(1).normal(10, 2, size=400)
    t_low, t_high = stats.t.interval(0.95, df=x.size - 1, loc=x.mean(), scale=stats.sem(x))
    low, high = bootstrap_ci(x)
    assert low == approx(t_low, abs=0.03) and high == approx(t_high, abs=0.03)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)  # seeded, so repeatable


def test_bootstrap_ci_degenerate_inputs():
    assert all(map(is_nan, bootstrap_ci([])))
    assert all(map(is_nan, bootstrap_ci([4.0, None])))
    assert bootstrap_ci([3, 3, 3]) == (3.0, 3.0)


def test_paired_bootstrap_ci():
    # Pairs (0,0), (0,1) remain after dropping the pair with None: diffs [0, 1], as in the two-point case above.
    assert paired_bootstrap_ci([0, 0, None], [0, 1, 7]) == (0.0, 1.0)
    # A constant shift of +2 on every pair: the interval collapses on 2.
    assert paired_bootstrap_ci([1, 5, 9], [3, 7, 11]) == (2.0, 2.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1, 2], [1])


# --- agreement ---------------------------------------------------------------

# Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", section C: 4 coders x 12 units.
_ = np.nan
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
]


@pytest.mark.parametrize(("level", "alpha"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_published_example(level, alpha):
    assert krippendorff_alpha(KRIPPENDORFF_2011, level=level) == approx(alpha, abs=5e-4)


def test_krippendorff_alpha_undefined_cases():
    assert is_nan(krippendorff_alpha([[1, _], [_, 2]]))  # no unit has two values
    assert is_nan(krippendorff_alpha([[3, 3], [3, 3]]))  # no variation
    assert is_nan(krippendorff_alpha(np.empty((2, 0))))
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]], level="interval") == 1.0


def test_weighted_kappa_by_hand():
    a, b = [1, 1, 2, 2, 3, 3], [1, 2, 2, 3, 3, 3]
    # Marginals a = (1/3, 1/3, 1/3), b = (1/6, 2/6, 3/6). Disagreement weight |i-j|/2.
    # Linear: observed = 2 * 0.5 / 6 = 1/6; expected = 1/3 * (1/6*1.5 + 2/6*1 + 3/6*1.5) = 4/9;
    # kappa = 1 - (1/6)/(4/9) = 0.625.
    assert weighted_kappa(a, b, categories=(1, 2, 3)) == approx(0.625)
    # Quadratic weight (|i-j|/2)^2: observed = 2 * 0.25 / 6 = 1/12;
    # expected = 1/3 * (1/6*1.25 + 2/6*0.5 + 3/6*1.25) = 1/3; kappa = 1 - (1/12)/(1/3) = 0.75.
    assert weighted_kappa(a, b, categories=(1, 2, 3), weights="quadratic") == approx(0.75)
    # Unused categories 4 and 5 only rescale both sums, so kappa is the same on the default 1..5 scale.
    assert weighted_kappa(a + [None], b + [5]) == approx(0.625)


def test_weighted_kappa_two_categories_is_cohens_kappa():
    # 2x2 table [[4, 1], [2, 3]] over 10 pairs: po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.2/0.5 = 0.4.
    a = [0] * 5 + [1] * 5
    b = [0, 0, 0, 0, 1, 0, 0, 1, 1, 1]
    for weights in ("linear", "quadratic"):
        assert weighted_kappa(a, b, categories=(0, 1), weights=weights) == approx(0.4)


def test_weighted_kappa_undefined_and_bad_input():
    assert is_nan(weighted_kappa([], []))
    assert is_nan(weighted_kappa([3, 3], [3, 3]))  # one shared category: 0/0
    with pytest.raises(ValueError):
        weighted_kappa([1, 9], [1, 2])
    with pytest.raises(ValueError):
        weighted_kappa([1], [1], weights="cubic")


def test_agreement_by_hand():
    # Complete pairs: (1,1) (2,4) (3,4) (5,3); |diff| = 0, 2, 1, 2 -> exact 1/4, within one 2/4.
    assert agreement([1, 2, 3, 5, None], [1, 4, 4, 3, 2]) == {"n": 4, "exact": 0.25, "within_1": 0.5}
    empty = agreement([None], [1])
    assert empty["n"] == 0 and is_nan(empty["exact"]) and is_nan(empty["within_1"])


def test_precision_recall_by_hand():
    gold = [True, True, True, False, False, None]
    pred = [True, True, False, True, False, True]
    # tp = 2, fp = 1, fn = 1 (the None pair is dropped): precision 2/3, recall 2/3.
    assert precision_recall(gold, pred) == {"precision": approx(2 / 3), "recall": approx(2 / 3),
                                            "tp": 2, "fp": 1, "fn": 1}
    none_predicted = precision_recall([True, False], [False, False])
    assert is_nan(none_predicted["precision"]) and none_predicted["recall"] == 0.0
    assert is_nan(precision_recall([False], [False])["recall"])


# --- tests between conditions -------------------------------------------------


def test_holm_by_hand():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 to stay monotone.
    assert holm([0.01, 0.04, 0.03, 0.005]) == approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 0.5*2 = 1.0 caps, 0.6 raised to 1.0
    adjusted = holm([0.01, None, 0.04])  # NaN is not counted among the m tests
    assert adjusted[0] == approx(0.02) and is_nan(adjusted[1]) and adjusted[2] == approx(0.04)
    assert holm([]) == []


def test_rates_test_two_groups_is_fisher_tea_tasting():
    # Fisher's lady tasting tea, table [[3, 1], [1, 3]]: two-sided p = (1 + 16 + 16 + 1)/70 = 34/70.
    r = rates_test([3, 1, 0], [4, 4, 0])  # the empty third group is left out, and the result says so
    assert r["test"] == "fisher exact" and r["p"] == approx(34 / 70) and r["groups"] == [0, 1]
    # h = 2 asin(sqrt(.25)) - 2 asin(sqrt(.75)) = 2*pi/6 - 2*pi/3 = -pi/3
    assert r["effect"] == approx(-math.pi / 3)


def test_rates_test_three_groups_by_hand():
    # Rates .2/.4/.6 of 50; pooled .4 -> expected 20 successes, 30 failures per group.
    # chi2 = 100/20 + 100/20 + 100/30 + 100/30 = 16.667, df 2: p = exp(-chi2/2); V = sqrt(chi2/150) = 1/3.
    r = rates_test([10, 20, 30], [50, 50, 50])
    assert r["test"] == "chi2"
    assert r["statistic"] == approx(50 / 3) and r["p"] == approx(math.exp(-25 / 3))
    assert r["effect"] == approx(1 / 3) and r["effect_name"] == "Cramér's V"
    # Expected counts 1 and 2 per group: chi2 = 1 + 1 + 0.5 + 0.5 = 3, flagged as small.
    small = rates_test([1, 2, 0], [3, 3, 3])
    assert small["test"] == "chi2 (small expected counts)" and small["statistic"] == approx(3.0)


def test_rates_test_undefined():
    assert is_nan(rates_test([1], [2])["p"])
    assert is_nan(rates_test([1, 0], [2, 0])["p"])
    assert is_nan(rates_test([0, 0, 0], [2, 3, 4])["p"])  # no successes anywhere


def test_scores_test_kruskal_by_hand():
    # Ranks equal the values; rank sums 6, 15, 24. H = 12/(9*10) * (36 + 225 + 576)/3 - 3*10 = 7.2,
    # p = exp(-7.2/2) for df 2, epsilon^2 = H/(n-1) = 0.9.
    r = scores_test([[1, 2, 3], [4, 5, 6], [7, 8, 9, None]])
    assert r["statistic"] == approx(7.2) and r["p"] == approx(math.exp(-3.6)) and r["effect"] == approx(0.9)


def test_scores_test_mann_whitney_by_hand():
    # x = [1, 2, 4], y = [3, 5, 6]: only 4 > 3, so U = 1; exact P(U <= 1) = 2/C(6,3) = 0.1, two-sided 0.2.
    # Rank-biserial = 1 - 2*1/9 = 7/9 (positive: the second group is higher).
    r = scores_test([[1, 2, 4], [3, 5, 6], []])
    assert r["test"] == "mann-whitney u" and r["groups"] == [0, 1]  # the empty third group is named as left out
    assert scores_test([[], [3, 5, 6], [1, 2, 4]])["groups"] == [1, 2]
    assert scores_test([[1, 2], [3, 4], [5]])["groups"] == [0, 1, 2]
    assert (r["statistic"], r["p"], r["effect"]) == (1.0, approx(0.2), approx(7 / 9))


def test_scores_test_undefined():
    assert is_nan(scores_test([[1, 1], [1], [1, None]])["p"])  # all identical, no exception
    assert is_nan(scores_test([[1, 2], [None]])["p"])  # only one usable group


def test_mcnemar_by_hand():
    a = [True] * 6 + [False] * 3
    b = [False] * 6 + [True] + [False] * 2
    # Discordant: b10 = 6, b01 = 1; P(X <= 1 | n=7, 1/2) = 8/128, two-sided 16/128 = 0.125.
    assert mcnemar(a, b) == {"test": "exact mcnemar", "n": 9, "b01": 1, "b10": 6, "p": approx(0.125)}
    assert mcnemar([True, False], [True, False])["p"] == 1.0  # pairs, none discordant: no evidence of a change


def test_mcnemar_without_pairs_is_undefined():
    r = mcnemar([], [])
    assert is_nan(r["p"]) and (r["n"], r["b01"], r["b10"]) == (0, 0, 0)
    assert is_nan(mcnemar([True, None], [None, False])["p"])  # no complete pair


def test_wilcoxon_paired_by_hand():
    # d = [1, 2, 3, 4, -5]: ranks 1..5, R+ = 10, R- = 5, statistic min = 5.
    # Exact: 10 of 32 sign patterns have R- <= 5, two-sided p = 20/32; effect = (10 - 5)/15 = 1/3.
    r = wilcoxon_paired([0, 0, 0, 0, 0, None], [1, 2, 3, 4, -5, 1])
    assert (r["statistic"], r["n"]) == (5.0, 5)
    assert r["p"] == approx(20 / 32) and r["effect"] == approx(1 / 3)


def test_wilcoxon_paired_undefined():
    assert is_nan(wilcoxon_paired([1, 2], [1, 2])["p"])  # all differences zero
    assert is_nan(wilcoxon_paired([1], [3])["p"])


def test_paired_statistic_ci_resamples_pairs_together():
    from evaluations.analysis.stats import paired_statistic_ci, weighted_kappa

    # Identical raters: every resample agrees perfectly, so kappa is 1 wherever it is defined.
    lo, hi = paired_statistic_ci([1, 2, 3, 4, 5, 5], [1, 2, 3, 4, 5, 5], weighted_kappa)
    assert (lo, hi) == (1.0, 1.0)
    # Mean difference of pairs shifted by exactly 2: resampling pairs together keeps it 2.
    assert paired_statistic_ci([1, 5, 9], [3, 7, 11], lambda x, y: float((y - x).mean())) == (2.0, 2.0)
    assert all(math.isnan(x) for x in paired_statistic_ci([1], [1], weighted_kappa))  # one pair: no interval


# --- repeats, judge panels and effect sizes (issue 16) --------------------------------------------


def test_pass_at_k_and_pass_hat_k_by_hand():
    from evaluations.analysis.stats import pass_at_k, pass_hat_k

    # n = 5 repetitions, c = 2 contacts, k = 2: C(5,2) = 10 draws; C(3,2) = 3 hold no contact, C(2,2) = 1 holds two.
    assert pass_at_k(5, 2, 2) == approx(0.7) and pass_hat_k(5, 2, 2) == approx(0.1)
    assert pass_at_k(5, 2, 1) == approx(0.4) == pass_hat_k(5, 2, 1)  # k = 1: both are the plain rate
    assert pass_at_k(4, 4, 4) == 1.0 and pass_hat_k(4, 3, 4) == 0.0 and pass_at_k(3, 0, 3) == 0.0
    assert is_nan(pass_at_k(2, 1, 3)) and is_nan(pass_hat_k(2, 1, 0))  # k outside 1..n


def test_effective_judges_and_mean_pairwise_r_by_hand():
    from evaluations.analysis.stats import effective_judges, mean_pairwise_r

    assert effective_judges(3, 0.5) == approx(1.5)  # 3 / (1 + 2 * 0.5)
    assert effective_judges(3, 0.0) == 3.0 and effective_judges(3, 1.0) == 1.0 and effective_judges(4, -0.2) == 4.0
    assert is_nan(effective_judges(3, float("nan")))
    # Rows 1 and 2 correlate perfectly (r = 1); row 3 is row 1 reversed (r = -1 with both): mean (1 - 1 - 1) / 3.
    data = [[1, 2, 3, 4], [2, 4, 6, 8], [4, 3, 2, 1]]
    assert mean_pairwise_r(data) == approx(-1 / 3)
    # Pairwise complete: the NaN drops unit 4 for pairs with row 2 only; a constant row has no correlation.
    assert mean_pairwise_r([[1, 2, 3, 4], [1, 2, 3, _], [5, 5, 5, 5]]) == approx(1.0)
    assert is_nan(mean_pairwise_r([[1, 2], [2, 1]]))  # fewer than 3 common units


def test_cohens_h_ci_by_hand():
    from evaluations.analysis.stats import cohens_h_ci

    # h = 2 asin(sqrt(.75)) - 2 asin(sqrt(.25)) = 2pi/3 - pi/3 = pi/3; half-width 1.959964 * sqrt(1/4 + 1/4) = 1.385904.
    h, lo, hi = cohens_h_ci(1, 4, 3, 4)
    assert (h, lo, hi) == (approx(math.pi / 3), approx(math.pi / 3 - 1.385904, abs=1e-6), approx(math.pi / 3 + 1.385904, abs=1e-6))
    assert all(map(is_nan, cohens_h_ci(1, 0, 1, 2)))


def test_hedges_g_ci_by_hand():
    from evaluations.analysis.stats import hedges_g_ci

    # x = [1, 2, 3], y = [3, 4, 5]: means 2 and 4, both variances 1, pooled sd 1, d = 2;
    # J = 1 - 3 / (4 * 6 - 9) = 0.8, g = 1.6; SE = sqrt(6/9 + 1.6^2 / 12) = sqrt(0.666667 + 0.213333) = 0.938083.
    g, lo, hi = hedges_g_ci([1, 2, 3, None], [3, 4, 5])
    assert g == approx(1.6) and lo == approx(1.6 - 1.959964 * 0.938083, abs=1e-5) and hi == approx(1.6 + 1.959964 * 0.938083, abs=1e-5)
    assert all(map(is_nan, hedges_g_ci([1], [2, 3]))) and all(map(is_nan, hedges_g_ci([2, 2], [2, 2])))


def test_pearson_r_and_kendall_tau_by_hand():
    from evaluations.analysis.stats import kendall_tau, pearson_r

    r, n = pearson_r([1, 2, 3, None], [1, 2, 4, 5])  # pairwise complete: the last pair is dropped
    assert n == 3 and r == pytest.approx(0.9819805)  # cov 1.5 / sqrt(1 * 2.3333)
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3])[0])
    assert kendall_tau([0.9, 0.5, 0.1], [0.8, 0.6, 0.2]) == pytest.approx(1.0)
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    # tau-b with one tie: concordant 2, discordant 0, tied in b 1 -> 2 / sqrt(3 * 2)
    assert kendall_tau([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1], [1]))


def test_kendall_tau_within_groups_by_hand_and_against_scipy():
    from evaluations.analysis.stats import kendall_tau_within

    # By hand: group x keeps (0,1) and (0,2) in order and swaps (1,2); group y keeps its one pair: 3 - 1 of 4 pairs.
    # The 6 pairs across the groups are never counted (all concordant here: scipy's tau over the five items is 8/10).
    a, b, groups = [3, 2, 1, 5, 6], [3, 1, 2, 5, 6], ["x", "x", "x", "y", "y"]
    assert kendall_tau_within(a, b, groups) == pytest.approx(0.5)
    assert stats.kendalltau(a, b).statistic == pytest.approx(0.8)
    # One group is tau-b itself, ties included: scipy on random integer data with many ties.
    rng = np.random.default_rng(7)
    for _ in range(20):
        x, y = rng.integers(0, 4, 9), rng.integers(0, 4, 9)
        assert kendall_tau_within(x, y, ["g"] * 9) == pytest.approx(stats.kendalltau(x, y).statistic)
    # A side tied in every pair: undefined; a missing value counts as a tie (a pair untied on one side only: 0 of 1).
    assert math.isnan(kendall_tau_within([1, 1], [1, 0], ["g", "g"]))
    assert kendall_tau_within([1, 0, 5], [1, 0, float("nan")], ["g", "g", "h"]) == pytest.approx(1.0)
    # One row per resample: each row's tau as the one-row call gives it.
    rows_a, rows_b = np.array([a, b, a]), np.array([b, b, a[::-1]])
    expected = [kendall_tau_within(x, y, groups) for x, y in zip(rows_a, rows_b)]
    assert kendall_tau_within(rows_a, rows_b, groups) == pytest.approx(expected)
    assert expected[1] == pytest.approx(1.0)
