"""The conversation graph on a scripted model: routing, every stop rule, re-asks, failures."""

from __future__ import annotations

from conftest import ScriptedModel, persona_says, practitioner_says

from simulator.conversation.runner import run_episode
from simulator.core.errors import ModelError


def script(*rounds):
    """Split rounds of (practitioner replies, persona replies) into the two models' scripts."""
    p, q = [], []
    for practitioner, persona in rounds:
        p += practitioner
        q += persona
    return ScriptedModel(p, "p"), ScriptedModel(q, "q")


async def episode(make_context, p, q, **options):
    record = await run_episode(make_context(p, q, **options), backend="scripted")
    p.assert_used_up()
    q.assert_used_up()
    return record


async def test_exchange_ends_the_episode(make_context):
    p, q = script(
        (practitioner_says("Are those mangoes any good?", "small_talk"), persona_says("They look ripe to me.", 4, 6)),
        (practitioner_says("I'm cooking Thai on Sunday, want to swap numbers?", "ask"), persona_says("Sure, here it is.", 7, 7, True)),
    )
    record = await episode(make_context, p, q)
    assert record.status == "succeeded"
    assert [t.speaker for t in record.turns] == ["practitioner", "persona"] * 2
    assert record.outcome.model_dump() == {
        "exchanged": "number", "next_meeting": None, "asked": True, "first_ask_turn": 2, "turned_back": False,
        "asks_after_no": 0, "final_interest": 7, "final_comfort": 7, "end_reason": "exchanged", "ended_by": "persona",
    }  # fmt: skip
    assert record.usage.model_dump() == {"calls": 8, "prompt_tokens": 80, "completion_tokens": 40, "cached_tokens": None,
                                          "cost_usd": None,  # the scripted model has no price: unknown
                                          "latency_s": 0.08, "cache_hits": 0, "saved_prompt_tokens": 0,
                                          "saved_completion_tokens": 0}  # fmt: skip


async def test_an_episode_stays_on_the_event_loop(make_context, monkeypatch):
    """No step hops to a worker thread: LangGraph runs a plain-function edge there, which cost a thread hand-off per turn."""
    import asyncio

    loop, hops = asyncio.get_running_loop(), []
    hop = loop.run_in_executor
    monkeypatch.setattr(loop, "run_in_executor", lambda *args: hops.append(args[1]) or hop(*args))
    p, q = script(
        (practitioner_says("Are those mangoes any good?", "small_talk"), persona_says("They look ripe to me.", 4, 6)),
        (practitioner_says("Well, nice chatting, bye!", "goodbye"), persona_says("Bye!")),
    )
    assert (await episode(make_context, p, q)).outcome.end_reason == "goodbye"
    assert hops == []


async def test_refusal_accepted(make_context):
    p, q = script(
        (practitioner_says("Can I get your email?", "ask"), persona_says("I'd rather not.", 3, 4)),
        (practitioner_says("No problem, enjoy your evening.", "accept_no"), persona_says("You too.", 3, 5)),
    )
    outcome = (await episode(make_context, p, q)).outcome
    assert (outcome.end_reason, outcome.ended_by, outcome.exchanged) == ("refused", "practitioner", "none")


async def test_accepting_a_no_that_was_never_said_does_not_end_it(make_context):
    p, q = script(
        (practitioner_says("Fair enough, no worries.", "accept_no"), persona_says("Sorry, what?")),
        (practitioner_says("Bye then.", "goodbye"), persona_says("Bye.")),
    )
    assert (await episode(make_context, p, q)).outcome.end_reason == "goodbye"


async def test_goodbye(make_context):
    p, q = script((practitioner_says("Well, nice chatting, bye!", "goodbye"), persona_says("Bye!")))
    assert (await episode(make_context, p, q)).outcome.end_reason == "goodbye"


async def test_social_handle_and_email_are_told_apart(make_context):
    p, q = script((practitioner_says("What's your Instagram?", "ask"), persona_says("It's @sam.", 6, 6, True)))
    assert (await episode(make_context, p, q)).outcome.exchanged == "social_handle"


async def test_a_speaker_repeating_their_own_line_is_degenerate_once_the_round_ends(make_context):
    p, q = script(
        (practitioner_says("Nice weather today.", "small_talk"), persona_says("It is.")),
        (practitioner_says("Nice weather today!", "small_talk"), persona_says("Lovely, yes.")),  # the same line again
    )
    record = await episode(make_context, p, q)
    assert len(record.turns) == 4
    assert record.outcome.end_reason == "degenerate" and record.outcome.ended_by == "practitioner"
    p, q = script(
        (practitioner_says("Nice weather today.", "small_talk"), persona_says("It is.")),
        (practitioner_says("Been here long?", "small_talk"), persona_says("It is!")),
    )
    outcome = (await episode(make_context, p, q)).outcome
    assert (outcome.end_reason, outcome.ended_by) == ("degenerate", "persona")


async def test_echoing_the_other_speaker_is_not_a_repeat(make_context):
    p, q = script(
        (practitioner_says("Nice weather today.", "small_talk"), persona_says("Nice weather today.")),
        (practitioner_says("Been here long?", "small_talk"), persona_says("Been here long?")),
    )
    record = await episode(make_context, p, q, max_turns=2)
    assert len(record.turns) == 4 and record.outcome.end_reason == "max_turns"


async def test_an_exchange_counts_even_when_the_words_were_said_before(make_context):
    # "Sure." twice from the persona: the second one answers an ask and shares contact
    p, q = script(
        (practitioner_says("Do you come here often?", "small_talk"), persona_says("Sure.")),
        (practitioner_says("Can I get your number?", "ask"), persona_says("Sure.", 7, 7, True)),
    )
    outcome = (await episode(make_context, p, q)).outcome
    assert (outcome.end_reason, outcome.exchanged) == ("exchanged", "number")
    # the practitioner asking again in the same words, and the persona sharing this time
    p, q = script(
        (practitioner_says("Can I get your number?", "ask"), persona_says("Maybe later.")),
        (practitioner_says("Can I get your number?", "ask"), persona_says("Oh, all right: 555 0199.", 6, 6, True)),
    )
    outcome = (await episode(make_context, p, q)).outcome
    assert (outcome.end_reason, outcome.exchanged) == ("exchanged", "number")


async def test_goodbye_and_refusal_come_before_a_repeat(make_context):
    p, q = script(
        (practitioner_says("Bye.", "small_talk"), persona_says("Bye.")),
        (practitioner_says("Bye.", "goodbye"), persona_says("Bye.")),
    )
    outcome = (await episode(make_context, p, q)).outcome
    assert (outcome.end_reason, outcome.ended_by) == ("goodbye", "practitioner")
    p, q = script(
        (practitioner_says("Can I get your email?", "ask"), persona_says("No.", 3, 4)),
        (practitioner_says("Okay.", "small_talk"), persona_says("Really, no.", 3, 4)),
        (practitioner_says("Okay.", "accept_no"), persona_says("Thanks.", 3, 5)),  # "Okay." again, accepting the no
    )
    outcome = (await episode(make_context, p, q)).outcome
    assert (outcome.end_reason, outcome.ended_by) == ("refused", "practitioner")


async def test_max_turns(make_context):
    p, q = script(
        (practitioner_says("Hi.", "small_talk"), persona_says("Hello.")),
        (practitioner_says("Busy day?", "small_talk"), persona_says("Very.")),
    )
    record = await episode(make_context, p, q, max_turns=2)
    assert len(record.turns) == 4 and record.outcome.end_reason == "max_turns"


async def test_invalid_output_is_reasked_with_the_error(make_context):
    p, q = script((["Bye now!", "not json", {"intent": "wave"}, {"intent": "goodbye"}], persona_says("Bye.")))
    record = await episode(make_context, p, q)
    assert record.status == "succeeded" and record.outcome.end_reason == "goodbye"
    intents = [c for c in record.calls if c.purpose == "intent"]
    assert [c.ok for c in intents] == [False, False, True]
    assert "not JSON" in intents[0].error and "intent" in intents[1].error
    assert "not JSON" in p.requests[2]["messages"][-1]["content"]  # the re-ask shows the model its error
    assert len({c.seed for c in intents}) == 3


async def test_output_still_invalid_fails_the_episode_without_a_made_up_turn(make_context):
    p, q = script(
        (practitioner_says("Hi there.", "small_talk"), persona_says("Hi.")),
        (["Lovely day.", "{}", "{}", "{}"], []),
    )
    record = await episode(make_context, p, q, reasks=2)
    assert record.status == "failed"
    assert "practitioner intent: invalid output after 3 attempts" in record.error
    assert len(record.turns) == 2  # the turn that could not be labelled is not invented
    assert record.outcome.end_reason == "error"
    assert len(record.calls) == 4 + 4


async def test_empty_utterance_is_reasked_then_fails(make_context):
    p, q = script((["", "  ", ""], []))
    record = await episode(make_context, p, q, reasks=2)
    assert record.status == "failed" and "empty after 3 attempts" in record.error


async def test_endpoint_error_fails_the_episode_and_keeps_the_transcript(make_context):
    p, q = script((practitioner_says("Hi.", "small_talk"), ["Hello.", ModelError("APIConnectionError: refused")]))
    record = await episode(make_context, p, q)
    assert record.status == "failed" and record.error == "APIConnectionError: refused"
    assert [t.speaker for t in record.turns] == ["practitioner"]


async def test_persona_private_state_never_reaches_the_practitioner(make_context):
    p, q = script(
        (practitioner_says("Hi.", "small_talk"), persona_says("Hello.", 9, 1)),
        (practitioner_says("Bye.", "goodbye"), persona_says("Bye.")),
    )
    assert (await episode(make_context, p, q)).outcome.end_reason == "goodbye"
    seen = " ".join(m["content"] for r in p.requests for m in r["messages"])
    assert "comfort" not in seen and "interest" not in seen.replace("interested", "")
    # ... while the persona is reminded of its own state, after the conversation (tests/test_prompt_layout.py)
    assert "interest in them is 9 out of 10" in q.requests[2]["messages"][-1]["content"]


async def test_seeds_follow_the_episode_seed(make_context):
    seeds = []
    for seed in (7, 7, 8):
        p, q = script((practitioner_says("Bye.", "goodbye"), persona_says("Bye.")))
        assert (await episode(make_context, p, q, seed=seed)).outcome.end_reason == "goodbye"
        seeds.append([r["seed"] for r in p.requests + q.requests])
    assert seeds[0] == seeds[1] != seeds[2]
    assert len(set(seeds[0])) == 4


async def test_provenance_records_prompts_and_catalog(make_context):
    p, q = script((practitioner_says("Bye.", "goodbye"), persona_says("Bye.")))
    record = await episode(make_context, p, q)
    prov = record.provenance
    assert record.outcome.end_reason == "goodbye"
    assert set(prov.prompts) == {"practitioner", "practitioner_parting", "practitioner_intent", "persona", "persona_now", "persona_state"}
    assert set(prov.prompt_texts) == set(prov.prompts.values())
    assert set(prov.catalog) == {"setting/supermarket", "persona/unsure", "strategy/common_interest"}
    assert prov.models == {"practitioner": "p", "persona": "q"} and prov.seed == 7
