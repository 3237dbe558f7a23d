"""Prompts laid out for prefix caches (issues 25 and 28): within an episode a role's lines are asked with the same system
message, byte for byte, and what changes from turn to turn (the persona's feelings, the practitioner's parting cue)
comes in a message after the conversation, so each request's prompt begins with the whole of the one before it."""

from __future__ import annotations

from conftest import ScriptedModel, persona_says, practitioner_says

from simulator.conversation.catalog import Profile
from simulator.conversation.graph import Scenario
from simulator.conversation.runner import run_episode


def utterance_requests(model: ScriptedModel) -> list[list[dict]]:
    """The messages of each call that asked for a line of dialogue (no output schema), in order."""
    return [r["messages"] for r in model.requests if r["schema"] is None]


def assert_each_request_extends_the_one_before(requests: list[list[dict]]):
    """All but the trailing message of a request are, message for message, the start of the next request."""
    for before, after in zip(requests, requests[1:]):
        assert after[: len(before) - 1] == before[:-1]


async def test_the_persona_is_asked_with_one_system_message_and_her_feelings_last(make_context):
    p = ScriptedModel([*practitioner_says("Are those mangoes any good?", "small_talk"),
                       *practitioner_says("Do you cook Thai food?", "small_talk"),
                       *practitioner_says("Well, nice chatting, bye!", "goodbye")], "p")  # fmt: skip
    q = ScriptedModel([*persona_says("They look ripe to me.", 4, 6), *persona_says("Sometimes, yes.", 7, 3),
                       *persona_says("Bye!", 7, 3)], "q")  # fmt: skip
    record = await run_episode(make_context(p, q), backend="scripted")
    assert record.status == "succeeded"
    asked = utterance_requests(q)
    assert len(asked) == 3
    assert len({m[0]["content"] for m in asked}) == 1, "the persona's system message changed within the episode"
    assert "out of 10" not in asked[0][0]["content"]
    # Her feelings before each line: the persona file's baseline (unsure: interest 4, comfort 5), then what she
    # reported after her lines above (4 and 6, then 7 and 3).
    trailing = [m[-1] for m in asked]
    assert [t["role"] for t in trailing] == ["system"] * 3
    for t, (interest, comfort) in zip(trailing, [(4, 5), (4, 6), (7, 3)]):
        assert f"interest in them is {interest} out of 10" in t["content"]
        assert f"comfort is {comfort} out of 10" in t["content"]
    # The practitioner's line she answers comes just before her feelings.
    assert [m[-2]["content"] for m in asked] == ["Are those mangoes any good?", "Do you cook Thai food?", "Well, nice chatting, bye!"]
    assert_each_request_extends_the_one_before(asked)


async def test_the_practitioner_is_asked_with_one_system_message_and_the_parting_cue_last(make_context, catalog):
    p = ScriptedModel([*practitioner_says("Lovely day for it.", "small_talk"),
                       *practitioner_says("Well, I should get going, bye!", "goodbye"),
                       *practitioner_says("Actually, do you have email? I'd like to talk again.", "ask")], "p")  # fmt: skip
    q = ScriptedModel([*persona_says("It is.", 5, 5), *persona_says("Bye then.", 5, 5, intent="leave"),
                       *persona_says("Sure, it's on my card.", 6, 6, True)], "q")  # fmt: skip
    scenario = Scenario("supermarket", "friendly", "turn_back", Profile())
    record = await run_episode(make_context(p, q, scenario=scenario), backend="scripted")
    assert [t.phase for t in record.turns if t.speaker == "practitioner"][-1] == "parting"
    asked = utterance_requests(p)
    assert len(asked) == 3
    assert len({m[0]["content"] for m in asked}) == 1, "the practitioner's system message changed at the parting"
    parting = catalog.strategies["turn_back"].parting
    assert parting not in asked[0][0]["content"]
    assert asked[-1][-1]["role"] == "system" and parting in asked[-1][-1]["content"]
    assert asked[-1][-2]["content"] == "Bye then."  # the persona's goodbye, then the cue
    assert all(parting not in m["content"] for r in asked[:-1] for m in r)  # no cue before the parting
    assert asked[0] == asked[1][:2] and asked[1] == asked[2][: len(asked[1])]  # no trailing message before it


# --- the judge's parts (issue 25 §4) ---------------------------------------------------------------------------------

JUDGED = [
    {"index": 0, "speaker": "practitioner", "text": "These peaches smell amazing.", "intent": "small_talk"},
    {"index": 1, "speaker": "persona", "text": "They do, I always get too many.", "interest": 4, "comfort": 6},
    {"index": 2, "speaker": "practitioner", "text": "Here's my number, what's yours?", "intent": "ask"},
    {"index": 3, "speaker": "persona", "text": "Sure, it's 555 0199.", "interest": 6, "comfort": 7, "shares_contact": True},
]
GRADES = {"sentence": "2.1", "reason": "Plain.", "score": 4}
OUTCOME = {"reason": "She gave it.", "exchanged": "number", "sentence": "3.1", "next_meeting": False}


def _judge(catalog, replies, prompt_dirs=None):
    from evaluations.judge.evaluator import Judge
    from evaluations.judge.rubric import load_rubric
    from simulator.conversation.prompts import Prompts

    rubric, rubric_hash = load_rubric()
    model = ScriptedModel(replies, "judge")
    return Judge(model, Prompts(prompt_dirs or catalog.prompt_dirs), rubric, rubric_hash), model, rubric


async def test_the_judges_parts_begin_with_one_system_message_holding_the_rubric_and_the_transcript(catalog):
    from evaluations.judge.graph import grade
    from evaluations.judge.rubric import CONDITIONS

    replies = [{"turns": [2]}, {c: GRADES for c in CONDITIONS}, {"flags": []}, OUTCOME]
    judge, model, rubric = _judge(catalog, replies)
    verdict = await grade({"turns": JUDGED, "setting": "supermarket", "persona": "unsure", "strategy": "common_interest"},
                          judge, catalog)  # fmt: skip
    assert verdict.status == "graded"
    model.assert_used_up()
    firsts = [r["messages"][0] for r in model.requests]
    assert len(firsts) == 4 and firsts[0]["role"] == "system"
    assert all(f == firsts[0] for f in firsts), "the judge's parts do not share their first message"
    shared = firsts[0]["content"]
    # Everything that does not change between episodes comes before the episode's own text, the transcript last.
    statics = [a for c in rubric.conditions.values() for a in c.anchors.values()] + [f.description for f in rubric.flags.values()]
    assert all(s in shared for s in statics)
    assert max(shared.index(s) for s in statics) < shared.index("fruit aisle") < shared.index("[0.1] These peaches")
    assert shared.rstrip().endswith("[3.1] Sure, it's 555 0199.")
    questions = [r["messages"][1:] for r in model.requests]
    assert all(len(q) == 1 and q[0]["role"] == "user" for q in questions)
    assert not any("peaches" in q[0]["content"] or "555" in q[0]["content"] for q in questions)  # the transcript once


async def test_the_judges_shared_message_is_rendered_once_for_all_its_parts(catalog, monkeypatch):
    """Issue 28: the four parts (and their re-asks) send one system message; it is rendered once a judge and episode,
    in the transitions step, not again by every part (about 0.1 ms each)."""
    from evaluations.judge.graph import grade
    from evaluations.judge.rubric import CONDITIONS
    from simulator.conversation.prompts import Prompts

    rendered = []
    render = Prompts.render
    monkeypatch.setattr(Prompts, "render", lambda self, name, **v: rendered.append(name) or render(self, name, **v))
    replies = [{"turns": [2]}, {c: GRADES for c in CONDITIONS}, {"flags": []}, OUTCOME]
    judge, model, _ = _judge(catalog, replies)
    verdict = await grade({"turns": JUDGED, "setting": "supermarket", "persona": "unsure", "strategy": "common_interest"},
                          judge, catalog)  # fmt: skip
    assert verdict.status == "graded" and len(model.requests) == 4
    assert rendered.count("evaluator") == 1


async def test_a_judge_prompt_written_with_the_transcript_in_it_is_sent_alone(catalog, tmp_path):
    """A --prompts-dir written for 0.2.0 puts the transcript in each part's own template: it is sent as it was, as one
    user message, not after a second copy of the transcript."""
    from evaluations.judge.evaluator import find_transitions

    old = "Conversation:\n{{ transcript }}\nWhich practitioner turns move toward contact? Answer with JSON: {\"turns\": [...]}"
    (tmp_path / "evaluator_transitions.j2").write_text(old)
    judge, model, _ = _judge(catalog, [{"turns": [2]}], (tmp_path, *catalog.prompt_dirs))
    ep = {"turns": JUDGED, "setting_entry": catalog.settings["supermarket"], "persona_entry": catalog.personas["unsure"]}
    await find_transitions(judge, ep, [])
    [messages] = [r["messages"] for r in model.requests]
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"].count("[0.1] These peaches") == 1
