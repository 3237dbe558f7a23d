"""The evaluator on a scripted judge: evidence checks, re-asks, unscored parts, flags, timing, fidelity."""

from __future__ import annotations

import pytest
from conftest import ScriptedModel, persona_says, practitioner_says

from evaluations import CONDITIONS, Judge, grade, load_rubric, make_evaluator
from evaluations.rules import objective_timing, transitions
from simulator import Prompts, run_episode
from simulator.errors import ModelError

TURNS = [
    {"index": 0, "speaker": "practitioner", "text": "These peaches smell amazing.", "intent": "small_talk"},
    {"index": 1, "speaker": "persona", "text": "They do, I always get too many.", "interest": 4, "comfort": 6, "shares_contact": False},
    {"index": 2, "speaker": "practitioner", "text": "I make a mean peach cobbler, we should bake one sometime.", "intent": "bridge"},
    {"index": 3, "speaker": "persona", "text": "Ha, maybe! I love baking.", "interest": 7, "comfort": 7, "shares_contact": False},
    {"index": 4, "speaker": "practitioner", "text": "Here's my number, what's yours?", "intent": "ask"},
    {"index": 5, "speaker": "persona", "text": "Sure, it's 555 0199.", "interest": 6, "comfort": 7, "shares_contact": True},
]
EPISODE = {"turns": TURNS, "setting": "supermarket", "persona": "unsure", "strategy": "common_interest"}


def good(turn=4, quote="what's yours", score=4):
    return {"turn": turn, "quote": quote, "reason": "Clear and friendly.", "score": score}


def all_good(**overrides):
    return {c: overrides.get(c, good()) for c in CONDITIONS}


OUTCOME = {"reason": "She gave her number.", "exchanged": "number", "next_meeting": False}


@pytest.fixture
def judge(catalog):
    def make(replies, **options):
        rubric, rubric_hash = load_rubric()
        model = ScriptedModel(replies, "judge")
        return Judge(model, Prompts(catalog.prompt_dirs), rubric, rubric_hash, **options), model
    return make


async def test_a_clean_verdict(judge, catalog):
    j, model = judge([{"turns": [4]}, all_good(), {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    [t] = verdict["transitions"]
    assert (t["turns"], t["ask_turn"], t["source"]) == ([2, 4], 4, "both")  # bridge declared, ask declared and judged
    assert {c: g["score"] for c, g in t["conditions"].items()} == {c: 4 for c in CONDITIONS}
    assert verdict["unscored"] == [] and verdict["outcome"]["exchanged"] == "number"
    assert verdict["outcome"]["final_interest"] == 6
    assert t["timing_objective"] == {"ask_turn": 4, "peak_turn": 3, "turns_from_peak": 1, "interest_at_ask": 7,
                                     "peak_interest": 7, "gap_to_peak": 0}


async def test_quote_not_in_the_turn_is_reasked_for_that_condition_only(judge, catalog):
    bad = good(quote="I adore you")
    j, model = judge([{"turns": [4]}, all_good(timing=bad), {"timing": good(quote="Here's my number", score=5)}, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    reask = model.requests[2]["messages"][-1]["content"]
    assert "timing: the quote 'I adore you' does not occur in turn 4" in reask
    assert set(model.requests[2]["schema"]["properties"]) == {"timing"}  # only the rejected condition is asked again
    assert verdict["transitions"][0]["conditions"]["timing"] | {} == {
        "turn": 4, "quote": "Here's my number", "reason": "Clear and friendly.", "score": 5, "status": "scored"}


async def test_persistently_bad_evidence_is_unscored_never_a_number(judge, catalog):
    bad = good(turn=0, quote="peach cobbler")  # real words, wrong turn
    j, model = judge([{"turns": [4]}, all_good(congruence=bad), {"congruence": bad}, {"congruence": bad}, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    grade_ = verdict["transitions"][0]["conditions"]["congruence"]
    assert grade_["status"] == "unscored" and grade_["score"] is None
    assert "rejected 3 times" in grade_["reason"] and "does not occur in turn 0" in grade_["reason"]
    assert verdict["unscored"] == [f"turn 2 congruence: {grade_['reason']}"]


async def test_null_score_means_not_applicable(judge, catalog):
    j, _ = judge([{"turns": []}, all_good(setting_fit={"turn": 4, "quote": "", "reason": "n/a", "score": None}), {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    assert verdict["transitions"][0]["conditions"]["setting_fit"]["status"] == "not_applicable"
    assert verdict["unscored"] == []


async def test_a_condition_that_always_applies_cannot_be_null(judge, catalog):
    """Issue 13 point 12: timing is never 'not applicable'; a conversation without an ask scores low, so a null is re-asked."""
    null = {"turn": 4, "quote": "", "reason": "no ask", "score": None}
    j, model = judge([{"turns": []}, all_good(timing=null), {"timing": good(score=1)}, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert "timing always applies" in model.requests[2]["messages"][-1]["content"]
    assert verdict["transitions"][0]["conditions"]["timing"]["score"] == 1


async def test_unparseable_output_makes_parts_unscored_with_reasons(judge, catalog):
    j, model = judge(["nope"] * 3 + ["{"] * 3 + [ModelError("APITimeoutError: timed out")] + ["[]"] * 3, reasks=2)
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert verdict["unscored"][0].startswith("transitions: evaluator transitions: invalid output after 3 attempts")
    conditions = verdict["transitions"][0]["conditions"]  # declared intents still locate the transition
    assert all(g["status"] == "unscored" and g["score"] is None for g in conditions.values())
    assert verdict["flags"]["status"] == "unscored" and "APITimeoutError" in verdict["flags"]["reason"]
    assert verdict["outcome"]["status"] == "unscored"


async def test_flags_need_evidence(judge, catalog):
    flags = {"flags": [{"flag": "demanding", "turn": 4, "quote": "what's yours", "reason": "Pushy."},
                       {"flag": "creepy", "turn": 2, "quote": "your eyes", "reason": "Stares."}]}
    j, model = judge([{"turns": [4]}, all_good(), flags, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert [f["flag"] for f in verdict["flags"]["raised"]] == ["demanding"]
    assert verdict["flags"]["rejected"] == [{"flag": "creepy", "reason": "the quote 'your eyes' does not occur in turn 2"}]


def test_transitions_merge_runs_and_cross_check():
    turns = [dict(t) for t in TURNS]
    turns[2]["intent"] = "small_talk"
    assert transitions(turns, []) == [{"turns": [4], "turn": 4, "ask_turn": 4, "has_ask": True, "source": "declared"}]
    assert transitions(turns, [0, 5]) == [  # 5 is the persona's turn: ignored
        {"turns": [0], "turn": 0, "ask_turn": 0, "has_ask": False, "source": "judge"},
        {"turns": [4], "turn": 4, "ask_turn": 4, "has_ask": True, "source": "declared"},
    ]
    assert transitions(TURNS, [2]) == [{"turns": [2, 4], "turn": 2, "ask_turn": 4, "has_ask": True, "source": "both"}]


def test_objective_timing_before_the_peak():
    turns = TURNS[:3] + [dict(TURNS[3], interest=9)]
    # ask at turn 2: interest before it was 4 (turn 1); the peak, 9, comes later at turn 3
    assert objective_timing(turns, 2) == {"ask_turn": 2, "peak_turn": 3, "turns_from_peak": -1, "interest_at_ask": 4,
                                          "peak_interest": 9, "gap_to_peak": 5}
    assert objective_timing(turns, 0) is None  # no telemetry before the ask


async def test_aloof_persona_at_high_interest_from_the_first_turn_is_flagged(make_context, catalog):
    from simulator import Profile, Scenario

    p = ScriptedModel(practitioner_says("Hi.", "small_talk") + practitioner_says("Bye.", "goodbye"), "p")
    q = ScriptedModel(persona_says("Oh hi!!", 9, 9) + persona_says("Bye."), "q")
    ctx = make_context(p, q, scenario=Scenario("bar_club", "aloof", "common_interest", Profile()))
    record = await run_episode(ctx, backend="scripted")
    assert record["fidelity"] == {"ok": False, "problems": ["first-turn interest 9 is outside the expected 3-7",
                                                             "first-turn comfort 9 is outside the expected 1-3"]}


async def test_several_judges_grade_in_the_graph_and_all_verdicts_are_kept(make_context, catalog, judge):
    p = ScriptedModel(practitioner_says("Can I get your number?", "ask"), "p")
    q = ScriptedModel(persona_says("Sure.", 5, 5, True), "q")
    replies = []
    for score in (3, 5):
        replies += [{"turns": [0]}, {c: good(0, "your number", score) for c in CONDITIONS}, {"flags": []}, OUTCOME]
    j, model = judge(replies)
    judges = [j, Judge(model, j.prompts, j.rubric, j.rubric_hash, seed=1, index=1)]
    ctx = make_context(p, q, evaluate=make_evaluator(judges, catalog))
    record = await run_episode(ctx, backend="scripted")
    model.assert_used_up()
    assert [v["judge"] for v in record["verdicts"]] == [0, 1]
    assert [v["transitions"][0]["conditions"]["timing"]["score"] for v in record["verdicts"]] == [3, 5]
    assert record["usage"]["calls"] == 4 + 8  # simulation calls plus every judge call
    assert len({r["seed"] for r in model.requests}) == 8  # judges draw with their own seeds
