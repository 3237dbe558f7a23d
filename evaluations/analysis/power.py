"""Power for the paired design `compare A B` uses: repetitions per cell to plan, and what a finished pair can detect.

`compare A B` pairs twin episodes (same cell, rep and seed) and tests contact with the exact McNemar test and
each measure with the Wilcoxon signed-rank test. Planning from one run treats twins as independent given their
cell (a prompt edit changes the whole conversation, so a shared seed is not counted on to correlate them); any
correlation a shared seed adds only makes the plan conservative.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .frame import MEASURES, spend, usable
from .variance import nested_components

ARE_WILCOXON = 3 / math.pi  # signed-rank vs t efficiency for normal differences (Lehmann, Nonparametrics, 1975)
MOST_PAIRS = 100_000  # beyond this a change is called out of reach rather than planned


def _numbers(values) -> np.ndarray:
    """Present numbers only: `_numbers([True, None, 2])` -> array([1., 2.])."""
    x = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    return x[~np.isnan(x)]


def mcnemar_power(n: int, p01: float, p10: float, *, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test on n pairs with discordant probabilities p01 and p10.

    Sums over the number m of discordant pairs (binomial in n, p01 + p10) the chance that the conditional
    binomial test of b01 among m (p = p01 / (p01 + p10)) rejects at alpha. mcnemar_power(10, 0.5, 0.0) -> 0.377
    (only 6+ discordant pairs of 10 can reject: 386/1024).
    """
    psi = p01 + p10
    if n < 1 or psi <= 0:
        return 0.0
    m = np.arange(n + 1)
    c = stats.binom.ppf(alpha / 2, m, 0.5)
    c = np.where(stats.binom.cdf(c, m, 0.5) <= alpha / 2 * (1 + 1e-9), c, c - 1)  # largest c with 2 P(X <= c) <= alpha
    share = p01 / psi
    reject = stats.binom.cdf(c, m, share) + stats.binom.sf(m - c - 1, m, share)
    return float(np.clip((stats.binom.pmf(m, n, psi) * reject).sum(), 0.0, 1.0))


def _smallest(n_power, target: float, start: int) -> int | None:
    """Smallest n in [1, MOST_PAIRS] with n_power(n) >= target, by doubling then bisection (power rises with n)."""
    hi = max(start, 2)
    while n_power(hi) < target:
        if hi >= MOST_PAIRS:
            return None
        hi = min(hi * 2, MOST_PAIRS)
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if n_power(mid) < target else (lo, mid)
    return hi


def discordance(p: float, var_cell: float, change: float) -> tuple[float, float]:
    """(p01, p10) for twins whose cell rate p_c (mean p, variance var_cell) moves to p_c + change in B.

    With twins independent given the cell: p10 = E[p_c (1 - p_c - d)] = q - d p and p01 = q + d (1 - p),
    where q = p (1 - p) - var_cell. discordance(0.5, 0.0, 0.2) -> (0.35, 0.15).
    """
    q = max(p * (1 - p) - var_cell, 0.0)
    return max(q + change * (1 - p), 0.0), max(q - change * p, 0.0)


def pairs_for_contact(p: float, var_cell: float, change: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Pairs the exact McNemar test needs to detect a change in contact rate from p, or None if out of reach.

    Starts from Connor's (1987) normal approximation n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2.
    """
    if change == 0 or not 0 <= p + change <= 1:
        return None
    p01, p10 = discordance(p, var_cell, change)
    psi, d = p01 + p10, p01 - p10
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    start = math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - d * d, 0.0))) ** 2 / (d * d))
    return _smallest(lambda n: mcnemar_power(n, p01, p10, alpha=alpha), power, start)


def t_power(n: float, effect: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample (paired) t test on n pairs for a standardised effect mean/sd (noncentral t)."""
    if n < 2:
        return 0.0
    crit, nc = stats.t.ppf(1 - alpha / 2, n - 1), abs(effect) * math.sqrt(n)
    wrong_side = np.nan_to_num(stats.nct.cdf(-crit, n - 1, nc), nan=0.0)  # scipy gives nan where it underflows
    return float(min(stats.nct.sf(crit, n - 1, nc) + wrong_side, 1.0))


def pairs_for_mean(sd_diff: float, change: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Pairs the Wilcoxon signed-rank test needs for a mean change: the paired t's n divided by its efficiency 3/pi."""
    if change == 0 or not sd_diff > 0:
        return None
    n_t = _smallest(lambda n: t_power(n, abs(change) / sd_diff, alpha=alpha), power, 2)
    return None if n_t is None else math.ceil(n_t / ARE_WILCOXON)


def mde_contact(n: int, psi: float, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest change in contact rate that n pairs detect with the given power, the discordant share psi held fixed."""
    reach = lambda d: mcnemar_power(n, (psi + d) / 2, (psi - d) / 2, alpha=alpha) - power  # noqa: E731
    if n < 1 or psi <= 0 or reach(psi) < 0:
        return None
    return float(optimize.brentq(reach, 0.0, psi, xtol=1e-4))


def mde_mean(n: int, sd_diff: float, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest mean change n pairs detect with the Wilcoxon test (as a t test on n * 3/pi pairs)."""
    n_eff, most = n * ARE_WILCOXON, 10.0  # beyond ten standard deviations a change is called out of reach
    if n_eff < 2 or not sd_diff > 0 or t_power(n_eff, most, alpha=alpha) < power:
        return None
    return float(optimize.brentq(lambda e: t_power(n_eff, e, alpha=alpha) - power, 1e-6, most)) * sd_diff


def plan(frame: pd.DataFrame, *, contact_change: float = 0.1, score_change: float = 0.5, alpha: float = 0.05,
         power: float = 0.8, include_unfaithful: bool = False) -> dict:
    """From one run's observed variance: repetitions per cell for `compare A B` to detect the given changes.

    `compare` tests only the pairs whose twins are both usable and have the measure, so the repetitions are planned
    on the pilot's usable-pair rate: (its share of usable episodes with the measure)^2, taking run B to lose episodes
    as the pilot did and the twins' losses as independent.
    """
    ok = usable(frame, include_unfaithful=include_unfaithful) if len(frame) else frame
    cells = int(frame["cell"].nunique()) if len(frame) else 0
    share = len(ok) / len(frame) if len(frame) else None
    out = {"alpha": alpha, "power": power, "cells": cells, "episodes": len(frame), "n": len(ok), "usable_share": share,
           "measures": {}}  # fmt: skip
    _planned = functools.partial(_plan, spent=spend(frame))
    if ok.empty:
        return out
    contact = nested_components(ok["contact"].astype(float), ok["cell"], ok["episode_id"])
    p, var_cell = float(ok["contact"].astype(float).mean()), contact["components"]["cell"] or 0.0
    pairs = pairs_for_contact(p, var_cell, contact_change, alpha=alpha, power=power)
    out["measures"]["contact"] = _planned(pairs, cells, len(ok), share**2) | {
        "baseline": p, "change": contact_change, "var_cell": var_cell,
        "reason": None if pairs else f"a change of {contact_change:+} from {p:.2f} is out of reach"}  # fmt: skip
    for m in MEASURES:
        comp = nested_components(ok[m], ok["cell"], ok["episode_id"])
        within = comp["components"]["rep"]
        sd_diff = math.sqrt(2 * within) if within is not None else None
        pairs = pairs_for_mean(sd_diff, score_change, alpha=alpha, power=power) if sd_diff else None
        reason = ("needs 2+ repetitions in some cell to see the spread" if within is None
                  else "no spread between repetitions" if not sd_diff else None if pairs else "out of reach")
        out["measures"][m] = _planned(pairs, cells, comp["n"]["episodes"], (comp["n"]["episodes"] / len(frame)) ** 2) | {
            "baseline": float(_numbers(ok[m]).mean()) if comp["n"]["values"] else None, "change": score_change,
            "sd_diff": sd_diff, "reason": reason}  # fmt: skip
    return out


def _plan(pairs: int | None, cells: int, n: int, pair_rate: float, *, spent: dict) -> dict:
    """Usable pairs needed, the repetitions per cell that leave that many at `pair_rate`, and the episodes of both runs
    with their tokens and dollars: {'n': 12, 'pairs': 40, 'usable_pair_rate': 0.5, 'reps_per_cell': 8, 'episodes': 160,
    'tokens': ..., 'cost_usd': ...} for 10 cells."""
    reps = math.ceil(pairs / (cells * pair_rate)) if pairs and cells and pair_rate else None
    episodes = 2 * reps * cells if reps else None
    cost = lambda per: None if episodes is None or per is None else episodes * per  # noqa: E731
    return {"n": n, "pairs": pairs, "usable_pair_rate": pair_rate, "reps_per_cell": reps, "episodes": episodes,
            "tokens": cost(spent["tokens_per_episode"]), "cost_usd": cost(spent["cost_per_episode"])}  # fmt: skip


def detectable(paired: pd.DataFrame, *, alpha: float = 0.05, power: float = 0.8) -> dict:
    """For a finished pair of runs (`compare.pair`'s frame): the minimum detectable effect of each paired test."""
    out = {"alpha": alpha, "power": power, "measures": {}}
    if paired.empty:
        return out
    a, b = (paired[f"contact_{s}"].astype(bool).to_numpy() for s in "ab")
    psi = float((a != b).mean())
    out["measures"]["contact"] = {"n": len(paired), "discordant": psi,
                                  "mde": mde_contact(len(paired), psi, alpha=alpha, power=power)}  # fmt: skip
    for m in MEASURES:
        d = _numbers(pd.to_numeric(paired[f"{m}_b"], errors="coerce") - pd.to_numeric(paired[f"{m}_a"], errors="coerce"))
        sd = float(d.std(ddof=1)) if d.size >= 2 else None
        out["measures"][m] = {"n": int(d.size), "sd_diff": sd,
                              "mde": mde_mean(d.size, sd, alpha=alpha, power=power) if sd else None}  # fmt: skip
    return out
