"""Where a run's variance comes from (cells, repetitions, judges), how far judges agree, and repeat reliability.

Pure functions over the episode frame (`frame.load_run`) and the per-judge frame (`frame.load_judges`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluations.judge.rubric import CONDITIONS

from .frame import usable
from .stats import effective_judges, krippendorff_alpha, mean_pairwise_r, pass_at_k, pass_hat_k

SMALL_CELLS = 5  # fewer cells than this: the between-cell component rests on too few groups to trust


def nested_components(y, cell, episode) -> dict:
    """Method-of-moments variance components of y, episodes nested in cells, judges' values nested in episodes.

    The unbalanced nested random-effects ANOVA (Sokal & Rohlf, Biometry, 3rd ed., section 10.3; Searle,
    Casella & McCulloch 1992, ch. 3). With N values, E episodes, C cells, n_e values in episode e and n_c in cell c:
        E[MS_judge] = s2_judge
        E[MS_rep]   = s2_judge + k1 s2_rep                  k1 = (N - sum_c sum_e n_e^2 / n_c) / (E - C)
        E[MS_cell]  = s2_judge + k2 s2_rep + k3 s2_cell     k2 = (sum_c sum_e n_e^2 / n_c - sum_e n_e^2 / N) / (C - 1)
                                                            k3 = (N - sum_c n_c^2 / N) / (C - 1)
    Solving these gives unbiased estimates ('raw'); the components reported are clipped at 0. A level with no
    degrees of freedom is None and its variance stays in the level above: with one value per episode there is
    no judge component and 'rep' holds judge noise too.
    """
    y = pd.to_numeric(pd.Series(list(y), dtype=object), errors="coerce").to_numpy(dtype=float)
    keep = ~np.isnan(y)
    y, cell, episode = y[keep], np.asarray(cell, dtype=object)[keep], np.asarray(episode, dtype=object)[keep]
    e_idx, episodes = pd.factorize(episode)
    c_idx, cells = pd.factorize(cell)
    N, E, C = y.size, len(episodes), len(cells)
    none = {"cell": None, "rep": None, "judge": None}
    out = {"n": {"cells": C, "episodes": E, "values": N}, "raw": none, "components": none, "share": none,
           "total": None, "clipped": [], "small": C < SMALL_CELLS}  # fmt: skip
    if N == 0:
        return out
    e_cell = np.zeros(E, dtype=int)
    e_cell[e_idx] = c_idx
    if (pd.Series(c_idx).groupby(e_idx).nunique() > 1).any():
        raise ValueError("an episode appears in more than one cell")
    n_e, n_c = np.bincount(e_idx), np.bincount(c_idx)
    m_e, m_c = np.bincount(e_idx, y) / n_e, np.bincount(c_idx, y) / n_c
    df = {"judge": N - E, "rep": E - C, "cell": C - 1}
    ss = {"judge": ((y - m_e[e_idx]) ** 2).sum(), "rep": (n_e * (m_e - m_c[e_cell]) ** 2).sum(),
          "cell": (n_c * (m_c - y.mean()) ** 2).sum()}  # fmt: skip
    ms = {k: ss[k] / df[k] if df[k] else None for k in df}
    within = (np.bincount(e_cell, n_e**2) / n_c).sum()  # sum_c sum_e n_e^2 / n_c
    raw = {"cell": None, "rep": None, "judge": ms["judge"]}
    j = raw["judge"] or 0.0
    if df["rep"]:
        raw["rep"] = (ms["rep"] - j) / ((N - within) / df["rep"])
    if df["cell"]:
        k2, k3 = (within - (n_e**2).sum() / N) / df["cell"], (N - (n_c**2).sum() / N) / df["cell"]
        raw["cell"] = (ms["cell"] - j - k2 * (raw["rep"] or 0.0)) / k3
    comps = {k: None if v is None else max(float(v), 0.0) for k, v in raw.items()}
    total = sum(v for v in comps.values() if v is not None)
    share = {k: (v / total if total else None) if v is not None else None for k, v in comps.items()}
    return out | {"raw": {k: None if v is None else float(v) for k, v in raw.items()}, "components": comps,
                  "total": float(total), "share": share, "clipped": [k for k, v in raw.items() if v is not None and v < 0]}


def judge_agreement(judges: pd.DataFrame) -> dict:
    """Per condition: Krippendorff's alpha (ordinal) across judges, mean inter-judge r, effective judges, n episodes."""
    k = int(judges["judge"].nunique()) if len(judges) else 0
    out = {"judges": k, "conditions": {}}
    for c in CONDITIONS:
        table = judges.pivot_table(index="judge", columns="episode_id", values=c, aggfunc="first") if k else None
        if table is None or table.empty or k < 2:
            out["conditions"][c] = {"n": 0, "alpha": None, "r_mean": None, "effective_judges": None}
            continue
        data = table.to_numpy(dtype=float)
        r = mean_pairwise_r(data)
        out["conditions"][c] = {"n": int(((~np.isnan(data)).sum(axis=0) >= 2).sum()), "alpha": krippendorff_alpha(data),
                                "r_mean": r, "effective_judges": effective_judges(k, r)}  # fmt: skip
    return out


def variance_report(frame: pd.DataFrame, judges: pd.DataFrame, *, include_unfaithful: bool = False) -> dict:
    """Variance components of contact (as the turns say and as each judge read it) and of every condition score."""
    ok = usable(frame, include_unfaithful=include_unfaithful) if len(frame) else frame
    used = judges[judges["episode_id"].isin(set(ok["episode_id"]))] if len(judges) else judges
    measures = {"contact": nested_components(ok["contact"].astype(float), ok["cell"], ok["episode_id"]) if len(ok)
                else nested_components([], [], [])}  # fmt: skip
    for m in ("judged_contact", *CONDITIONS):
        measures[m] = nested_components(used[m], used["cell"], used["episode_id"]) if len(used) else nested_components([], [], [])
    return {"judges": int(used["judge"].nunique()) if len(used) else 0, "measures": measures,
            "agreement": judge_agreement(used) if len(used) else judge_agreement(pd.DataFrame(columns=["judge"]))}


def contact_at_k(frame: pd.DataFrame, *, include_unfaithful: bool = False, by: str | None = "persona") -> dict:
    """Repeat reliability: per k up to the repetitions, mean over cells of pass^k (all k made contact) and pass@k (any).

    Each cell's figure is the unbiased estimate from its n usable repetitions with c contacts; cells with fewer
    than k repetitions sit that k out, and each row says how many cells it rests on.
    """
    ok = usable(frame, include_unfaithful=include_unfaithful) if len(frame) else frame
    if ok.empty:
        return {"overall": [], "groups": {}}
    cells = ok.assign(contact=ok["contact"].astype(bool)).groupby("cell").agg(
        n=("contact", "size"), c=("contact", "sum"), group=(by or "cell", "first"))

    def rows(part: pd.DataFrame) -> list[dict]:
        out = []
        for k in range(1, int(part["n"].max()) + 1):
            have = part[part["n"] >= k]
            out.append({"k": k, "cells": len(have), "small": len(have) < SMALL_CELLS,
                        "pass_hat_k": float(np.mean([pass_hat_k(n, c, k) for n, c in zip(have["n"], have["c"])])),
                        "pass_at_k": float(np.mean([pass_at_k(n, c, k) for n, c in zip(have["n"], have["c"])]))})
        return out

    groups = {str(g): rows(part) for g, part in cells.groupby("group", sort=True)} if by else {}
    return {"overall": rows(cells), "by": by, "groups": groups}
