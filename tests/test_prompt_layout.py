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
