"""The persona fidelity audit: per-type figures are the tested stats functions on the right episodes; warnings fire."""

from __future__ import annotations

import json

import pytest

from evaluations.analysis.fidelity import audit, curve, episode_mean
from evaluations.analysis.stats import cohens_h_ci, hedges_g_ci, wilson_ci
from simulator.conversation.catalog import Baseline, FirstTurn, entry_hash, load_catalog
from simulator.core.records import Episode


def _pinned(persona, interest, comfort, first_interest, first_comfort):
    """A shipped persona with fixed numbers, so these hand-made figures do not move when the files are tuned."""
    return persona.model_copy(update={"baseline": Baseline(interest=interest, comfort=comfort),
                                      "expected_first_turn": FirstTurn(interest=first_interest, comfort=first_comfort)})


_SHIPPED = load_catalog().personas
PERSONAS = {"aloof": _pinned(_SHIPPED["aloof"], 2, 4, (0, 5), (0, 8)), "friendly": _pinned(_SHIPPED["friendly"], 5, 7, (2, 9), (4, 10)),
            "unsure": _pinned(_SHIPPED["unsure"], 4, 5, (1, 7), (1, 8))}  # fmt: skip


def record(rid, persona, states, *, asked=True, shared=False, status="succeeded"):
    """An episode whose persona reports `states` [(interest, comfort), ...] turn by turn."""
    turns = []
    for i, (interest, comfort) in enumerate(states):
        turns += [{"index": 2 * i, "speaker": "practitioner", "text": "hi", "intent": "small_talk"},
                  {"index": 2 * i + 1, "speaker": "persona", "text": "hello", "interest": interest, "comfort": comfort,
                   "shares_contact": shared}]
    outcome = {"asked": asked, "exchanged": "number" if shared else "none", "end_reason": "max_turns", "ended_by": "limit"}
    return Episode.model_validate({"id": rid, "setting": "bar_club", "persona": persona, "strategy": "turn_back", "status": status,
                                   "turns": turns, "outcome": outcome, "fidelity": {"ok": True}})  # fmt: skip


def cooperative_aloof():
    """Aloof shares when asked 6 of 8 times, friendly 3 of 8, unsure like friendly; two aloof first turns too warm."""
    recs = []
    for i in range(8):
        recs.append(record(f"a{i}", "aloof", [(7 if i < 2 else 3, 4), (4, 5)], shared=i < 6))
        recs.append(record(f"f{i}", "friendly", [(5 + i % 3, 7), (6, 7), (6, 8)], shared=i < 3))
        recs.append(record(f"u{i}", "unsure", [(5 + i % 3, 7), (6, 7)], shared=i < 3))
    recs.append(record("x", "aloof", [], status="failed"))
    recs.append(record("a-no-ask", "aloof", [(3, 4)], asked=False))
    return recs


def test_type_profile_figures():
    r = audit(cooperative_aloof(), PERSONAS)
    json.dumps(r, allow_nan=False)
    aloof = r["types"]["aloof"]
    assert aloof["n"] == 9 and r["n"] == 25 and r["episodes"] == 26  # the failed episode is counted, not audited
    assert aloof["shares_when_asked"]["k"] == 6 and aloof["shares_when_asked"]["n"] == 8
    assert aloof["shares_when_asked"]["ci"] == pytest.approx(list(wilson_ci(6, 8)))
    assert aloof["shares_when_asked"]["episodes"] == [f"a{i}" for i in range(6)]
    first = aloof["first_interest"]
    assert first["declared"] == [0, 5] and first["baseline"] == 2 and first["above"] == ["a0", "a1"] and first["below"] == []
    assert first["inside"]["k"] == 7 and first["inside"]["n"] == 9 and first["mean"] == pytest.approx((2 * 7 + 7 * 3) / 9)
    assert aloof["curves"]["interest"][1] == {"turn": 2, "n": 8, "mean": 4.0}
    assert r["types"]["friendly"]["curves"]["comfort"][2] == {"turn": 3, "n": 8, "mean": 8.0}


def test_pairwise_effects_and_warnings():
    recs = cooperative_aloof()
    r = audit(recs, PERSONAS)
    pairs = {(p["a"], p["b"]): p for p in r["pairs"]}
    af = pairs[("aloof", "friendly")]
    h, lo, hi = cohens_h_ci(6, 8, 3, 8)
    assert af["effects"]["shares_when_asked"] == {"effect": pytest.approx(h), "ci": pytest.approx([lo, hi]), "name": "Cohen's h"}
    aloof = [episode_mean(x, "interest") for x in recs if x.persona == "aloof" and x.status == "succeeded"]
    friendly = [episode_mean(x, "interest") for x in recs if x.persona == "friendly"]
    assert af["effects"]["mean_interest"]["effect"] == pytest.approx(hedges_g_ci(aloof, friendly)[0])
    assert af["separable"] is True  # friendly is clearly warmer in comfort
    assert pairs[("friendly", "unsure")]["separable"] is False  # the same states and sharing

    kinds = {(w["kind"], tuple(w["personas"])): w for w in r["warnings"]}
    coop = kinds[("more_cooperative", ("aloof", "friendly"))]
    assert "aloof shares when asked as often as friendly or more (6 of 8 vs 3 of 8)" in coop["message"]
    assert coop["episodes"] == [f"a{i}" for i in range(6)]
    assert ("more_cooperative", ("aloof", "unsure")) in kinds and ("more_cooperative", ("unsure", "friendly")) in kinds
    apart = kinds[("not_separable", ("friendly", "unsure"))]
    assert "friendly and unsure are not told apart" in apart["message"] and len(apart["episodes"]) == 16
    warm = kinds[("first_turn_above", ("aloof",))]
    assert warm["episodes"] == ["a0", "a1"] and "2 of 9 first turns report more interest than her file allows (0-5)" in warm["message"]


def test_small_groups_are_marked_and_changed_files_said():
    recs = [record("a0", "aloof", [(3, 4)], shared=True), record("f0", "friendly", [(5, 7)], shared=True),
            record("n0", "nobody", [(5, 5)])]
    r = audit(recs, PERSONAS, run_catalog={"personas/aloof": "0000", "personas/friendly": entry_hash(PERSONAS["friendly"])})
    assert r["types"]["aloof"]["small"] is True
    kinds = {w["kind"]: w for w in r["warnings"]}
    assert "fewer than 5: read with care" in kinds["more_cooperative"]["message"]
    assert "aloof: the persona file read now differs" in kinds["file_changed"]["message"]
    assert kinds["unknown_persona"]["personas"] == ["nobody"]
    assert [w["personas"] for w in r["warnings"] if w["kind"] == "file_changed"] == [["aloof"]]


def test_curve_counts_turns_reached():
    recs = [record("a", "aloof", [(1, 2), (3, 4)]), record("b", "aloof", [(5, 6)])]
    assert curve(recs, "interest") == [{"turn": 1, "n": 2, "mean": 3.0}, {"turn": 2, "n": 1, "mean": 3.0}]


def test_a_social_handle_is_not_sharing_contact_in_the_audit(tmp_path):
    """Issue 22 item 12: the audit's 'shares when asked' counted a social handle. On the rule stub friendly gives her
    number to common_interest and her Instagram to social_media: by hand, 2 of 4 asks (2 reps) shared contact."""
    from rule_stub import rule_server

    from simulator import api

    db = tmp_path / "n.db"
    with rule_server() as url:
        run_id = api.run_batch({"personas": "friendly", "strategies": "common_interest,social_media", "reps": 2},
                               db=db, base_url=url).run_id
    shares = api.audit_personas(run_id, db=db)["types"]["friendly"]["shares_when_asked"]
    assert (shares["k"], shares["n"]) == (2, 4)  # was (4, 4)
