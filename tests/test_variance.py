"""Variance components, judge agreement and contact@k: hand-worked cases, known simulated components, wiring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluations.analysis.frame import judge_rows, judges_frame
from evaluations.analysis.stats import effective_judges, krippendorff_alpha, mean_pairwise_r, pass_at_k, pass_hat_k
from evaluations.analysis.variance import contact_at_k, judge_agreement, nested_components, variance_report
from evaluations.judge.rubric import CONDITIONS
from simulator.core.records import Episode, Verdict

approx = pytest.approx


def test_nested_components_balanced_by_hand():
    # Cells A, B; two episodes each; two judges each. Episode means 2, 4, 6, 8; cell means 3, 7; grand mean 5.
    # SS_judge = 4 episodes * (1 + 1) = 8 on 4 df -> MS 2.  SS_rep = 2 * (1 + 1 + 1 + 1) = 8 on 2 df -> MS 4.
    # SS_cell = 4 * (4 + 4) = 32 on 1 df -> MS 32.  Balanced: k1 = k2 = 2 judges, k3 = 4 values per cell.
    # s2_judge = 2; s2_rep = (4 - 2) / 2 = 1; s2_cell = (32 - 2 - 2 * 1) / 4 = 7.
    r = nested_components([1, 3, 3, 5, 5, 7, 7, 9], list("AAAABBBB"), ["a1", "a1", "a2", "a2", "b1", "b1", "b2", "b2"])
    assert r["components"] == {"cell": 7.0, "rep": 1.0, "judge": 2.0} and r["total"] == 10.0
    assert r["share"] == {"cell": 0.7, "rep": 0.1, "judge": 0.2}
    assert r["n"] == {"cells": 2, "episodes": 4, "values": 8} and r["small"] and r["clipped"] == []


def test_nested_components_unbalanced_two_levels_by_hand():
    # One value per episode (no judges): cell A [1, 0, 1], cell B [0, 0]. Means 2/3 and 0, grand 0.4.
    # MS_within = (2/9 + 4/9) / 3 = 2/9. MS_between = (3 (2/3 - .4)^2 + 2 (.4)^2) / 1 = 0.533333.
    # n0 = (5 - (9 + 4) / 5) / 1 = 2.4, so s2_cell = (0.533333 - 0.222222) / 2.4 = 0.129630.
    r = nested_components([1, 0, 1, 0, None, 0], list("AAABBB"), range(6))
    assert r["components"]["judge"] is None  # no judge level: repetition holds all within-cell noise
    assert r["components"]["rep"] == approx(2 / 9) and r["components"]["cell"] == approx(0.311111 / 2.4, abs=1e-6)


def test_nested_components_clips_and_degenerate_levels():
    # Cell means equal but reps differ: the raw cell estimate is negative, reported as 0 and named.
    r = nested_components([0, 2, 1, 1], list("AABB"), range(4))
    assert r["raw"]["cell"] < 0 and r["components"]["cell"] == 0.0 and r["clipped"] == ["cell"]
    one = nested_components([1, 2, 3], list("AAA"), range(3))  # one cell: no between-cell level
    assert one["components"]["cell"] is None and one["components"]["rep"] == approx(1.0)
    empty = nested_components([], [], [])
    assert empty["total"] is None and empty["n"]["values"] == 0
    with pytest.raises(ValueError):
        nested_components([1, 2], ["A", "B"], ["e", "e"])


def simulate(rng, cells=150, s2=(1.0, 0.5, 0.25)):
    """Unbalanced data with known components: 2-6 reps per cell, 1-3 judges per episode."""
    y, cell, episode = [], [], []
    for c in range(cells):
        a = rng.normal(0, np.sqrt(s2[0]))
        for r in range(rng.integers(2, 7)):
            b = rng.normal(0, np.sqrt(s2[1]))
            for _ in range(rng.integers(1, 4)):
                y.append(3 + a + b + rng.normal(0, np.sqrt(s2[2])))
                cell.append(c)
                episode.append(f"{c}/{r}")
    return y, cell, episode


def test_nested_components_recover_known_components_on_unbalanced_data():
    # Method-of-moments estimates are unbiased: over 200 simulated runs (seed 7) the mean raw estimate of each
    # component lies within 0.05 of the truth (Monte Carlo SE about 0.01 for the cell component).
    rng = np.random.default_rng(7)
    raw = [nested_components(*simulate(rng))["raw"] for _ in range(200)]
    means = {k: np.mean([r[k] for r in raw]) for k in ("cell", "rep", "judge")}
    assert means == {"cell": approx(1.0, abs=0.05), "rep": approx(0.5, abs=0.05), "judge": approx(0.25, abs=0.05)}
    # And one run on its own lands within a stated 25% of each component.
    one = nested_components(*simulate(np.random.default_rng(8), cells=400))["components"]
    assert one == {"cell": approx(1.0, rel=0.25), "rep": approx(0.5, rel=0.25), "judge": approx(0.25, rel=0.25)}


def verdict(judge, score, exchanged="number"):
    conditions = {c: {"status": "scored", "score": score, "turn": 0, "quote": "q", "reason": "r"} for c in CONDITIONS}
    return Verdict.model_validate({
        "judge": judge, "model": "m", "outcome": {"status": "scored", "exchanged": exchanged},
        "transitions": [{"turns": [0], "turn": 0, "ask_turn": 0, "has_ask": False, "source": "declared", "conditions": conditions}]})


def test_judge_rows_one_per_judge():
    scene = {"setting": "bar_club", "persona": "aloof", "strategy": "turn_back", "status": "succeeded"}
    record = Episode(id="e1", cell="c", **scene, verdicts=[
        verdict(0, 4), verdict(1, 2, "none"), Verdict(judge=2, model="m", outcome={"status": "unscored"})])
    rows = judge_rows(record)
    assert [(r["judge"], r["timing"], r["judged_contact"]) for r in rows] == [(0, 4, True), (1, 2, False), (2, None, None)]
    assert list(judges_frame([record, Episode(id="e2", **scene)]).columns)[:4] == ["episode_id", "cell", "judge", "judged_contact"]


def frames(scores):
    """Episodes e0.. in cells of two reps; scores[e] holds each judge's score (the same for every condition)."""
    episodes = [{"episode_id": f"e{i}", "cell": f"c{i // 2}", "rep": i % 2, "persona": "aloof" if i < 4 else "friendly",
                 "status": "succeeded", "fidelity_ok": True, "completed": True, "usable": True, "contact": i % 3 == 0}
                for i in range(len(scores))]
    judges = [{"episode_id": f"e{i}", "cell": f"c{i // 2}", "judge": j, "judged_contact": i % 3 == 0,
               **{c: s for c in CONDITIONS}} for i, row in enumerate(scores) for j, s in enumerate(row)]
    return pd.DataFrame(episodes), pd.DataFrame(judges)


def test_variance_report_and_agreement_use_the_tested_functions():
    scores = [[1, 2, 1], [3, 3, 4], [5, 4, 5], [2, 2, 3], [4, 5, 5], [1, 1, 2]]
    frame, judges = frames(scores)
    r = variance_report(frame, judges)
    y = [s for row in scores for s in row]
    cells, eps = [f"c{i // 2}" for i in range(6) for _ in range(3)], [f"e{i}" for i in range(6) for _ in range(3)]
    assert r["measures"]["timing"] == nested_components(y, cells, eps) and r["judges"] == 3
    # ... and the components by the balanced nested ANOVA's textbook sums of squares (3 cells x 2 reps x 3 judges):
    x = np.array(scores, dtype=float).reshape(3, 2, 3)  # cell, rep, judge
    ms_judge = ((x - x.mean(axis=2, keepdims=True)) ** 2).sum() / (6 * 2)
    ms_rep = 3 * ((x.mean(axis=2) - x.mean(axis=(1, 2))[:, None]) ** 2).sum() / (6 - 3)
    ms_cell = 6 * ((x.mean(axis=(1, 2)) - x.mean()) ** 2).sum() / (3 - 1)
    by_hand = {"judge": ms_judge, "rep": (ms_rep - ms_judge) / 3, "cell": (ms_cell - ms_rep) / 6}
    assert r["measures"]["timing"]["raw"] == approx(by_hand)
    assert r["measures"]["contact"] == nested_components(frame.contact.astype(float), frame.cell, frame.episode_id)
    assert r["measures"]["contact"]["components"]["judge"] is None
    data = np.array(scores, dtype=float).T  # judges x episodes
    a = r["agreement"]["conditions"]["timing"]
    assert a["alpha"] == approx(krippendorff_alpha(data)) and a["r_mean"] == approx(mean_pairwise_r(data))
    assert a["effective_judges"] == approx(effective_judges(3, mean_pairwise_r(data))) and a["n"] == 6
    assert 1 <= a["effective_judges"] < 3  # these judges agree a lot: worth fewer than three
    # An out-of-character episode leaves every measure.
    frame.loc[0, ["fidelity_ok", "usable"]] = False
    assert variance_report(frame, judges)["measures"]["timing"]["n"]["episodes"] == 5


def test_one_judge_has_no_judge_component_or_agreement():
    frame, judges = frames([[1], [3], [5], [2]])
    r = variance_report(frame, judges)
    assert r["measures"]["timing"]["components"]["judge"] is None
    assert judge_agreement(judges)["conditions"]["timing"]["alpha"] is None


def test_contact_at_k_by_hand():
    # Cell x: 3 reps, 2 contacts; cell y: 3 reps, 0 contacts; cell z: 2 reps, 2 contacts.
    rows = [("x", "aloof", c) for c in (True, True, False)] + [("y", "aloof", False)] * 3 + [("z", "friendly", True)] * 2
    frame = pd.DataFrame([{"episode_id": f"e{i}", "cell": cell, "persona": p, "contact": c, "status": "succeeded",
                           "fidelity_ok": True, "completed": True, "usable": True} for i, (cell, p, c) in enumerate(rows)])
    r = contact_at_k(frame)
    k2 = r["overall"][1]
    # k = 2: pass^2 = (C(2,2)/C(3,2) + 0 + 1) / 3 = (1/3 + 1) / 3; pass@2 = (1 + 0 + 1) / 3.
    assert k2 == {"k": 2, "cells": 3, "small": True, "pass_hat_k": approx((1 / 3 + 1) / 3), "pass_at_k": approx(2 / 3)}
    assert r["overall"][2]["cells"] == 2  # cell z has only 2 reps and sits k = 3 out
    assert r["overall"][2]["pass_hat_k"] == approx((pass_hat_k(3, 2, 3) + 0) / 2)
    assert r["groups"]["aloof"][1]["pass_at_k"] == approx((pass_at_k(3, 2, 2) + 0) / 2)
    assert r["groups"]["friendly"][0] == {"k": 1, "cells": 1, "small": True, "pass_hat_k": 1.0, "pass_at_k": 1.0}
