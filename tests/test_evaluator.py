"""The evaluator on a scripted judge: cited sentences, re-asks, unscored and ungraded parts, flags, timing, fidelity."""

from __future__ import annotations

import pytest
from conftest import ScriptedModel, persona_says, practitioner_says

from evaluations.judge.evaluator import Judge, numbered
from evaluations.judge.graph import grade, make_evaluator
from evaluations.judge.rubric import CONDITIONS, load_rubric
from evaluations.judge.rules import (citation_problem, evidence_turns, judge_only, objective_timing, sentence_table, sentences,
                                    transitions)
from simulator.conversation.prompts import Prompts
from simulator.conversation.runner import run_episode
from simulator.core.errors import ModelError
from simulator.core.records import Flags, Grade, Verdict

TURNS = [
    {"index": 0, "speaker": "practitioner", "text": "These peaches smell amazing.", "intent": "small_talk"},
    {"index": 1, "speaker": "persona", "text": "They do, I always get too many.", "interest": 4, "comfort": 6, "shares_contact": False},
    {"index": 2, "speaker": "practitioner", "text": "I make a mean peach cobbler, we should bake one sometime.", "intent": "bridge"},
    {"index": 3, "speaker": "persona", "text": "Ha, maybe! I love baking.", "interest": 7, "comfort": 7, "shares_contact": False},
    {"index": 4, "speaker": "practitioner", "text": "I'd like that. Here's my number, what's yours?", "intent": "ask"},
    {"index": 5, "speaker": "persona", "text": "Sure, it's 555 0199.", "interest": 6, "comfort": 7, "shares_contact": True},
]
EPISODE = {"turns": TURNS, "setting": "supermarket", "persona": "unsure", "strategy": "common_interest"}
ASK = "Here's my number, what's yours?"


def good(sentence="4.2", score=4):
    return {"sentence": sentence, "reason": "Clear and friendly.", "score": score}


def all_good(**overrides):
    return {c: overrides.get(c, good()) for c in CONDITIONS}


OUTCOME = {"reason": "She gave her number.", "exchanged": "number", "sentence": "5.1", "next_meeting": False}


@pytest.fixture
def judge(catalog):
    def make(replies, **options):
        rubric, rubric_hash = load_rubric()
        model = ScriptedModel(replies, "judge")
        return Judge(model, Prompts(catalog.prompt_dirs), rubric, rubric_hash, **options), model
    return make


def sentence_enum(schema: dict, condition: str) -> list[str]:
    evidence = schema["$defs"][f"evidence_{condition}"]["properties"]["sentence"]
    return next(s["enum"] for s in evidence["anyOf"] if s["type"] == "string")


def test_sentences_split_after_end_punctuation():
    assert sentences("Hi there! Coffee?") == ["Hi there!", "Coffee?"]
    assert sentences('She said "fine." Then left... Bye') == ['She said "fine."', "Then left...", "Bye"]
    assert sentences("  no full stop here ") == ["no full stop here"] and sentences("") == []
    assert sentences("Sure, it's 555 0199.") == ["Sure, it's 555 0199."]  # no sentence ends inside a number


def test_the_judge_sees_every_sentence_with_its_id():
    table = sentence_table(TURNS)
    assert table["3.2"] == {"turn": 3, "text": "I love baking."} and table["4.2"] == {"turn": 4, "text": ASK}
    assert len(table) == 8
    assert numbered(TURNS[3:5]) == ("Turn 3, persona: [3.1] Ha, maybe! [3.2] I love baking.\n"
                                    f"Turn 4, practitioner: [4.1] I'd like that. [4.2] {ASK}")


def test_which_turns_a_condition_may_cite():
    assert evidence_turns(TURNS, [2, 4], "timing") == (2, 4)
    assert evidence_turns(TURNS, [2, 4], "congruence") == (0, 2, 4)  # words before and after the ask
    assert evidence_turns(TURNS, [], "timing") == (0, 2, 4)  # no transition: the practitioner's whole conduct


def test_every_kind_of_bad_citation_is_named():
    table = sentence_table(TURNS)
    assert citation_problem("4.2", table, (2, 4)) is None
    assert citation_problem(None, table, (2, 4)) == "a score needs the id of the sentence it rests on"
    assert citation_problem("9.1", table, (2, 4)) == "there is no sentence 9.1"
    assert citation_problem("4.3", table, (2, 4)) == "there is no sentence 4.3"
    assert citation_problem("3.2", table, (2, 4)) == "sentence 3.2 is not from turns 2, 4"


async def test_a_clean_verdict(judge, catalog):
    j, model = judge([{"turns": [4]}, all_good(), {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    [t] = verdict.transitions
    assert (t.turns, t.ask_turn, t.source) == ([2, 4], 4, "both")  # bridge declared, ask declared and judged
    assert {c: g.score for c, g in t.conditions.items()} == {c: 4 for c in CONDITIONS}
    assert t.conditions["timing"].model_dump() == {"sentence": "4.2", "turn": 4, "quote": ASK, "reason": "Clear and friendly.",
                                         "score": 4, "status": "scored"}  # the cited sentence's own text is stored
    assert verdict.status == "graded" and verdict.unscored == [] and verdict.outcome.exchanged == "number"
    assert verdict.outcome.final_interest == 6
    assert t.timing_objective.model_dump() == {"ask_turn": 4, "peak_turn": 3, "turns_from_peak": 1, "interest_at_ask": 7,
                                     "peak_interest": 7, "gap_to_peak": 0}
    schema = model.requests[1]["schema"]  # the schema lets each condition cite only the sentences it may cite
    assert sentence_enum(schema, "timing") == ["2.1", "4.1", "4.2"]
    assert sentence_enum(schema, "congruence") == ["0.1", "2.1", "4.1", "4.2"]


async def test_a_citation_outside_the_transition_is_reasked_for_that_condition_only(judge, catalog):
    # an endpoint that ignores the schema cites the persona's sentence 3.2 for timing
    j, model = judge([{"turns": [4]}, all_good(timing=good("3.2")), {"timing": good("4.2", 5)}, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    reask = model.requests[2]["messages"][-1]["content"]
    assert "timing: sentence 3.2 is not from turns 2, 4" in reask
    assert set(model.requests[2]["schema"]["properties"]) == {"timing"}  # only the rejected condition is asked again
    assert verdict.transitions[0].conditions["timing"].model_dump() == {
        "sentence": "4.2", "turn": 4, "quote": ASK, "reason": "Clear and friendly.", "score": 5, "status": "scored"}


async def test_persistently_bad_evidence_is_unscored_never_a_number(judge, catalog):
    bad = good("9.1")  # no such sentence
    j, model = judge([{"turns": [4]}, all_good(congruence=bad), {"congruence": bad}, {"congruence": bad}, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    grade_ = verdict.transitions[0].conditions["congruence"]
    assert grade_ == Grade(status="unscored", score=None, reason="evidence rejected 3 times; last: there is no sentence 9.1")
    assert verdict.unscored == [f"turn 2 congruence: {grade_.reason}"]


async def test_a_score_without_a_citation_is_rejected(judge, catalog):
    j, model = judge([{"turns": [4]}, all_good(genuine_interest=good(None)), {"genuine_interest": good("2.1", 3)},
                      {"flags": []}, OUTCOME])  # fmt: skip
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert "genuine_interest: a score needs the id of the sentence it rests on" in model.requests[2]["messages"][-1]["content"]
    assert verdict.transitions[0].conditions["genuine_interest"].quote == TURNS[2]["text"]


async def test_null_score_means_not_applicable(judge, catalog):
    j, _ = judge([{"turns": []}, all_good(setting_fit={"sentence": None, "reason": "n/a", "score": None}), {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    assert verdict.transitions[0].conditions["setting_fit"].model_dump() == {
        "sentence": None, "turn": None, "quote": None, "reason": "n/a", "score": None, "status": "not_applicable"}
    assert verdict.unscored == []


async def test_a_condition_that_always_applies_cannot_be_null(judge, catalog):
    """Issue 13 point 12: timing is never 'not applicable'; a conversation without an ask scores low, so a null is re-asked."""
    null = {"sentence": None, "reason": "no ask", "score": None}
    j, model = judge([{"turns": []}, all_good(timing=null), {"timing": good("4.2", 1)}, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert "timing always applies" in model.requests[2]["messages"][-1]["content"]
    assert verdict.transitions[0].conditions["timing"].score == 1


async def test_unparseable_output_makes_parts_unscored_with_reasons(judge, catalog):
    j, model = judge(["nope"] * 3 + ["{"] * 3 + ["[]"] * 3 + ["{}"] * 3, reasks=2)
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert verdict.status == "graded"  # the judge answered: unusable answers are its verdict, not a missing one
    assert verdict.unscored[0].startswith("transitions: evaluator transitions: invalid output after 3 attempts")
    conditions = verdict.transitions[0].conditions  # declared intents still locate the transition
    assert all(g.status == "unscored" and g.score is None for g in conditions.values())
    assert verdict.flags.status == "unscored" and verdict.outcome.status == "unscored"


@pytest.mark.parametrize("failing_call", [0, 1, 2, 3])  # transitions, conditions, flags, outcome
async def test_an_endpoint_failure_leaves_the_verdict_ungraded_not_unscored(judge, catalog, failing_call):
    replies = [{"turns": [4]}, all_good(), {"flags": []}, OUTCOME][:failing_call] + [ModelError("APIConnectionError: reset")]
    j, model = judge(replies)
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert verdict.status == "ungraded" and verdict.error == "APIConnectionError: reset"
    assert verdict.transitions == [] and verdict.flags is None  # no grade is reported from a half-finished verdict
    assert len(verdict.calls) == failing_call  # the calls that were answered still count


async def test_grading_again_asks_only_the_judges_that_did_not_answer(judge, catalog):
    j, model = judge([{"turns": [4]}, all_good(), {"flags": []}, OUTCOME])
    judges = [j, Judge(model, j.prompts, j.rubric, j.rubric_hash, seed=1, index=1)]
    answered = Verdict(judge=0, model="m", status="graded")
    previous = [answered, Verdict(judge=1, model="m", status="ungraded", error="APITimeoutError: x")]
    verdicts = await make_evaluator(judges, catalog)(EPISODE, previous=previous)
    model.assert_used_up()  # one judge's calls only
    assert verdicts[0] == answered and verdicts[1].status == "graded" and verdicts[1].judge == 1


async def test_flags_need_a_practitioner_sentence_and_only_rejected_flags_are_asked_again(judge, catalog):
    flags = {"flags": [{"flag": "demanding", "sentence": "4.2", "reason": "Pushy."},
                       {"flag": "creepy", "sentence": "3.2", "reason": "Stares."}]}  # 3.2 is the persona's
    j, model = judge([{"turns": [4]}, all_good(), flags, {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert verdict.flags == Flags.model_validate({"status": "scored", "rejected": [], "raised": [
        {"flag": "demanding", "sentence": "4.2", "turn": 4, "quote": ASK, "reason": "Pushy."}]})
    reask = model.requests[3]
    assert reask["schema"]["$defs"]["raised_flag"]["properties"]["flag"]["enum"] == ["creepy"]
    assert "creepy: sentence 3.2 is not from turns 0, 2, 4" in reask["messages"][-1]["content"]
    assert "- demanding:" not in reask["messages"][-1]["content"]  # an accepted flag is not asked about again
    assert reask["schema"]["$defs"]["raised_flag"]["properties"]["sentence"]["enum"] == ["0.1", "2.1", "4.1", "4.2"]


async def test_a_reask_cannot_add_flags_the_first_answer_did_not_raise(judge, catalog):
    # Flags are not pooled over draws: the re-ask about 'creepy' answers with a new 'rude' (an endpoint ignoring the
    # schema), which is invalid there and asked again; the final answer drops both.
    first = {"flags": [{"flag": "creepy", "sentence": "9.1", "reason": "Stares."}]}
    j, model = judge([{"turns": [4]}, all_good(), first, {"flags": [{"flag": "rude", "sentence": "4.2", "reason": "Curt."}]},
                      {"flags": []}, OUTCOME])  # fmt: skip
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert verdict.flags == Flags(status="scored", raised=[], rejected=[])


async def test_a_flag_still_without_evidence_after_the_reasks_is_rejected_not_raised(judge, catalog):
    bad = {"flags": [{"flag": "creepy", "sentence": "1.1", "reason": "Stares."}]}
    j, model = judge([{"turns": [4]}, all_good(), bad, bad, bad, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert verdict.flags == Flags.model_validate({"status": "scored", "raised": [], "rejected": [
        {"flag": "creepy", "sentence": "1.1", "reason": "sentence 1.1 is not from turns 0, 2, 4"}]})


def test_transitions_merge_runs_and_cross_check():
    turns = [dict(t) for t in TURNS]
    turns[2]["intent"] = "small_talk"
    assert transitions(turns, []) == [{"turns": [4], "turn": 4, "ask_turn": 4, "has_ask": True, "source": "declared"}]
    found = transitions(turns, [0, 5])  # 5 is the persona's turn: ignored; 0 is only the judge's: reported apart
    assert found == [{"turns": [4], "turn": 4, "ask_turn": 4, "has_ask": True, "source": "declared"}]
    assert judge_only(turns, [0, 5], found) == [0]
    gold = [{"index": t["index"], "speaker": t["speaker"], "text": t["text"]} for t in TURNS]  # no intents declared
    assert transitions(gold, [0, 4]) == [{"turns": [0], "turn": 0, "ask_turn": 0, "has_ask": False, "source": "judge"},
                                         {"turns": [4], "turn": 4, "ask_turn": 4, "has_ask": False, "source": "judge"}]
    assert transitions(TURNS, [2]) == [{"turns": [2, 4], "turn": 2, "ask_turn": 4, "has_ask": True, "source": "both"}]


def test_objective_timing_before_the_peak():
    turns = TURNS[:3] + [dict(TURNS[3], interest=9)]
    # ask at turn 2: interest before it was 4 (turn 1), its peak so far; the 9 at turn 3 is her reaction to the ask
    assert objective_timing(turns, 2) == {"ask_turn": 2, "peak_turn": 1, "turns_from_peak": 1, "interest_at_ask": 4,
                                          "peak_interest": 4, "gap_to_peak": 0}
    assert objective_timing(turns, 0) is None  # no telemetry before the ask


def test_objective_timing_peak_is_over_the_turns_before_the_ask():
    """Issue 22 item 9: her reaction to the ask (turn 5) is no part of the curve the ask is timed on."""
    turns = [dict(t) for t in TURNS]
    turns[5]["interest"] = 10  # the ask landed well: she warmed to it
    # before the ask at 4 her interest went 4 (turn 1), 7 (turn 3): the ask came 1 turn after that peak, at it
    assert objective_timing(turns, 4) == {"ask_turn": 4, "peak_turn": 3, "turns_from_peak": 1, "interest_at_ask": 7,
                                          "peak_interest": 7, "gap_to_peak": 0}


async def test_aloof_persona_at_high_interest_from_the_first_turn_is_flagged(make_context, catalog):
    from simulator.conversation.catalog import Profile
    from simulator.conversation.graph import Scenario

    p = ScriptedModel(practitioner_says("Hi.", "small_talk") + practitioner_says("Bye.", "goodbye"), "p")
    q = ScriptedModel(persona_says("Oh hi!!", 9, 9) + persona_says("Bye."), "q")
    ctx = make_context(p, q, scenario=Scenario("bar_club", "aloof", "common_interest", Profile()))
    record = await run_episode(ctx, backend="scripted")
    assert record.outcome.end_reason == "goodbye"  # "Bye." / "Bye." is a goodbye, not a repeat
    assert record.fidelity.model_dump() == {"ok": False, "problems": ["first-turn interest 9 is outside the expected 3-7",
                                                             "first-turn comfort 9 is outside the expected 1-3"]}


async def test_several_judges_grade_in_the_graph_and_all_verdicts_are_kept(make_context, catalog, judge):
    p = ScriptedModel(practitioner_says("Can I get your number?", "ask"), "p")
    q = ScriptedModel(persona_says("Sure.", 5, 5, True), "q")
    # the judges grade at once, so each answers from its own script (one script's order between them is undefined)
    models = [ScriptedModel([{"turns": [0]}, {c: good("0.1", score) for c in CONDITIONS}, {"flags": []},
                             OUTCOME | {"sentence": "1.1"}], f"judge{n}") for n, score in enumerate((3, 5))]  # fmt: skip
    j, _ = judge([])
    judges = [Judge(model, j.prompts, j.rubric, j.rubric_hash, seed=n, index=n) for n, model in enumerate(models)]
    ctx = make_context(p, q, evaluate=make_evaluator(judges, catalog))
    record = await run_episode(ctx, backend="scripted")
    for model in models:
        model.assert_used_up()
    assert [v.judge for v in record.verdicts] == [0, 1]
    assert [v.transitions[0].conditions["timing"].score for v in record.verdicts] == [3, 5]
    assert record.usage.calls == 4 + 8  # simulation calls plus every judge call
    assert len({r["seed"] for m in models for r in m.requests}) == 8  # judges draw with their own seeds


async def test_the_judged_outcome_cites_where_contact_was_given_or_is_unscored(judge, catalog):
    """Issue 13 point 10: an outcome that says a number was given must cite the stranger's sentence that gives it."""
    uncited = OUTCOME | {"sentence": None}
    practitioners = OUTCOME | {"sentence": "4.2"}  # the ask itself is not the stranger giving anything
    j, model = judge([{"turns": [4]}, all_good(), {"flags": []}, uncited, practitioners, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert "number was given: cite the id of the stranger's sentence" in model.requests[4]["messages"][-1]["content"]
    assert "sentence 4.2 is not from turns 5" in model.requests[5]["messages"][-1]["content"]
    o = verdict.outcome
    assert (o.status, o.exchanged, o.sentence, o.turn, o.quote) == ("scored", "number", "5.1", 5, "Sure, it's 555 0199.")

    j, model = judge([{"turns": [4]}, all_good(), {"flags": []}, uncited, uncited, uncited])
    o = (await grade(EPISODE, j, catalog)).outcome
    assert o.status == "unscored" and o.score is None and "evidence rejected 3 times" in o.reason
    j, model = judge([{"turns": [4]}, all_good(), {"flags": []}, {"reason": "Nothing.", "exchanged": "none", "sentence": None,
                                                                  "next_meeting": False}])  # fmt: skip
    assert (await grade(EPISODE, j, catalog)).outcome.status == "scored"  # 'none' needs no sentence


async def test_the_fidelity_judge_reads_only_the_lines_a_continuation_generated(judge, catalog):
    """Issue 22 item 1: a branch's kept prefix (here turns 0-3) was said by the parent's persona, not this one."""
    from evaluations.judge.evaluator import check_fidelity

    j, model = judge([{"reason": "Warm and brief.", "in_character": True}], fidelity_judge=True)
    ep = EPISODE | {"kept": 4, "persona_entry": catalog.personas["aloof"]}
    assert (await check_fidelity(j, ep, [], 0))["in_character"] is True
    prompt = model.requests[0]["messages"][-1]["content"]
    assert "Sure, it's 555 0199." in prompt and "I love baking" not in prompt and "too many" not in prompt


async def test_turns_only_the_judge_names_are_reported_apart_not_added_to_the_scope(judge, catalog):
    """Issue 22 item 10: a judge naming every practitioner turn (0, 2, 4) widened the transition to 0-4, so any of
    its sentences could be cited for timing. The declared transition (2, 4) keeps its scope; turn 0 is reported apart."""
    j, model = judge([{"turns": [0, 2, 4]}, all_good(), {"flags": []}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert [(t.turns, t.source) for t in verdict.transitions] == [([2, 4], "both")]
    assert sentence_enum(model.requests[1]["schema"], "timing") == ["2.1", "4.1", "4.2"]
    assert verdict.judge_added == [0]


async def test_contact_is_cited_from_a_persona_turn_after_the_first_ask(judge, catalog):
    """Issue 22 item 10: her 'They do, I always get too many.' (turn 1) came before any ask: it gave nothing."""
    j, model = judge([{"turns": [4]}, all_good(), {"flags": []}, OUTCOME | {"sentence": "1.1"}, OUTCOME])
    verdict = await grade(EPISODE, j, catalog)
    model.assert_used_up()
    assert "sentence 1.1 is not from turns 5" in model.requests[4]["messages"][-1]["content"]
    assert model.requests[3]["schema"]["properties"]["sentence"]["anyOf"][0]["enum"] == ["5.1"]
    assert (verdict.outcome.status, verdict.outcome.sentence) == ("scored", "5.1")


def test_which_persona_turns_may_show_contact_was_given():
    from evaluations.judge.rules import contact_turns

    assert contact_turns(TURNS) == (5,)  # after the first ask (turn 4)
    no_ask = [dict(t, intent="small_talk") if t["speaker"] == "practitioner" else t for t in TURNS]
    assert contact_turns(no_ask) == (5,)  # no ask: only the line her own record says gave contact
    gold = [{"index": t["index"], "speaker": t["speaker"], "text": t["text"]} for t in TURNS]
    assert contact_turns(gold) == (1, 3, 5)  # no telemetry to check against (a gold transcript): any of her turns
