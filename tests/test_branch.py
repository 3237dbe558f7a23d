"""`nextstep branch`: fork points, continuations from one LangGraph checkpoint, the store's links, the paired compare."""

from __future__ import annotations

import asyncio

import pytest
from conftest import ScriptedModel, persona_says, practitioner_says

from simulator.branch import fork_turn
from simulator.errors import UserError
from simulator.runner import fork_point, run_episode

TURNS = [
    {"index": 0, "speaker": "practitioner", "text": "Hi.", "intent": "small_talk"},
    {"index": 1, "speaker": "persona", "text": "Hello.", "interest": 4, "comfort": 5, "shares_contact": False},
    {"index": 2, "speaker": "practitioner", "text": "Nice day.", "intent": "small_talk"},
    {"index": 3, "speaker": "persona", "text": "It is!", "interest": 7, "comfort": 6, "shares_contact": False},
    {"index": 4, "speaker": "practitioner", "text": "Swap numbers?", "intent": "ask"},
    {"index": 5, "speaker": "persona", "text": "Sure.", "interest": 6, "comfort": 6, "shares_contact": True},
]


def test_fork_turn_resolves_index_first_ask_and_peak():
    assert fork_turn(TURNS, "3") == 3
    assert fork_turn(TURNS, "first-ask") == 4  # the turns before the ask are kept
    assert fork_turn(TURNS, "peak") == 4  # up to and including the persona's highest interest (turn 3)


@pytest.mark.parametrize("turns, at, message", [
    (TURNS, "6", "--at 6: episode e has turns 0-5: turn 6 is out of range (a fork keeps 1 to 5 turns)"),
    (TURNS, "0", "turn 0 is out of range"),
    (TURNS[:4], "first-ask", "--at first-ask: episode e has no ask"),
    (TURNS[4:], "first-ask", "asks in its opening line"),
    (TURNS[:4], "peak", "peaks in its last turn"),
    (TURNS, "middle", "--at 'middle': give a turn index, first-ask or peak"),
])  # fmt: skip
def test_fork_turn_refuses_what_cannot_be_forked(turns, at, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fork_turn(turns, at, "e")


async def test_continuations_fork_from_one_checkpoint_with_the_prefix_kept_exactly(make_context):
    config = await fork_point(TURNS[:3], "test-thread")  # the practitioner's line 2 is kept: the persona speaks next

    def continuation(seed):
        p = ScriptedModel(practitioner_says("Want to get a coffee sometime?", "ask"), "p")
        q = ScriptedModel(persona_says("Why not.", 5, 5) + persona_says("Sure, here's my number.", 8, 7, True), "q")
        return p, q, make_context(p, q, seed=seed)

    (p1, q1, c1), (p2, q2, c2) = continuation(1), continuation(2)
    a, b = await asyncio.gather(run_episode(c1, backend="scripted", fork=config), run_episode(c2, backend="scripted", fork=config))
    for record, p, q in ((a, p1, q1), (b, p2, q2)):
        p.assert_used_up()
        q.assert_used_up()
        assert record["turns"][:3] == TURNS[:3]  # the prefix exactly, private states included
        assert [t["index"] for t in record["turns"]] == [0, 1, 2, 3, 4, 5]
        assert record["outcome"]["end_reason"] == "exchanged"
        assert len(record["calls"]) == 6  # only the continuation's own calls
    # the persona continued from the prefix: its first request carried the kept lines, seen from its side
    history = q1.requests[0]["messages"][1:]
    assert [m["content"] for m in history] == ["Hi.", "Hello.", "Nice day."]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
