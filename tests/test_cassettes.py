"""The OpenAI-compatible path replayed from cassettes recorded from the embedded model."""

from __future__ import annotations

from typing import get_args

from cassettes import CASSETTES, cassette, gold_judge, short_episode

from evaluations.judge.graph import grade
from evaluations.judge.rubric import CONDITIONS
from evaluations.judge.rules import citation_problem, evidence_turns, sentence_table
from simulator.conversation.episode import EndReason, Intent, PersonaIntent
from simulator.conversation.runner import run_episode

UNUSED_PORT_URL = "http://127.0.0.1:9/v1"  # nothing listens here: replay must not need a server


async def test_short_episode_replays_offline_on_any_port(client):
    with cassette("episode", record_mode="none") as tape:
        record = await run_episode(short_episode(client(UNUSED_PORT_URL, "local")), backend="local")
        assert tape.all_played and tape.play_count == len(tape) >= 4  # every recorded call replayed, in order
    assert record.status == "succeeded", record.error
    rounds = len(record.turns) // 2
    assert rounds >= 1 and [t.speaker for t in record.turns] == ["practitioner", "persona"] * rounds
    assert record.usage.calls == len(tape)  # the record accounts for every call the episode made
    assert all(t.intent in get_args(Intent) for t in record.turns[::2])
    assert all(t.intent in get_args(PersonaIntent) for t in record.turns[1::2])
    assert all(0 <= t.interest <= 10 and 0 <= t.comfort <= 10 for t in record.turns[1::2])
    assert record.usage.prompt_tokens > 0 and record.usage.completion_tokens > 0
    assert record.outcome.end_reason in set(get_args(EndReason)) - {"error"}


async def test_real_evaluator_verdict_replays_and_holds_its_invariants(client):
    judge, episode, catalog = gold_judge(client(UNUSED_PORT_URL, "local"))
    with cassette("verdict", record_mode="none") as tape:
        verdict = await grade(episode, judge, catalog)
        assert tape.all_played
    assert len(verdict.calls) == len(tape) and all(c.completion_tokens > 0 for c in verdict.calls)
    assert verdict.status == "graded"
    turns, table, scored = episode["turns"], sentence_table(episode["turns"]), 0
    for transition in verdict.transitions:
        assert set(transition.conditions) == set(CONDITIONS)
        for condition, grade_ in transition.conditions.items():
            if grade_.status == "scored":  # a number only ever comes with a sentence the condition may cite
                allowed = evidence_turns(turns, transition.turns, condition)
                assert grade_.score in range(1, 6) and citation_problem(grade_.sentence, table, allowed) is None
                assert grade_.quote == table[grade_.sentence]["text"] and grade_.turn == table[grade_.sentence]["turn"]
                scored += 1
            else:
                assert grade_.score is None and grade_.reason
    assert scored >= 1, "the replayed real-model verdict must hold a scored grade, or its evidence branch is never checked"
    practitioner = tuple(t["index"] for t in turns if t["speaker"] == "practitioner")
    for flag in verdict.flags.raised:
        assert citation_problem(flag.sentence, table, practitioner) is None and flag.quote == table[flag.sentence]["text"]
    assert verdict.outcome.status in {"scored", "unscored"}


def test_no_credential_reaches_a_cassette():
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text().lower()
        assert "authorization" not in text and "bearer" not in text and "api-key" not in text, path
