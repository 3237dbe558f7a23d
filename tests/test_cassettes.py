"""The OpenAI-compatible path replayed from cassettes recorded from the embedded model."""

from __future__ import annotations

from cassettes import CASSETTES, cassette, gold_judge, short_episode

from evaluations import CONDITIONS, grade
from evaluations.rules import quote_problem
from simulator.runner import run_episode

UNUSED_PORT_URL = "http://127.0.0.1:9/v1"  # nothing listens here: replay must not need a server


async def test_short_episode_replays_offline_on_any_port(client):
    with cassette("episode", record_mode="none") as tape:
        record = await run_episode(short_episode(client(UNUSED_PORT_URL, "local")), backend="local")
        assert tape.all_played and tape.play_count == len(tape) == 8
    assert record["status"] == "succeeded", record["error"]
    assert [t["speaker"] for t in record["turns"]] == ["practitioner", "persona"] * 2
    assert all(t["intent"] in {"small_talk", "bridge", "ask", "accept_no", "goodbye"} for t in record["turns"][::2])
    assert all(0 <= t["interest"] <= 10 and 0 <= t["comfort"] <= 10 for t in record["turns"][1::2])
    assert record["usage"]["prompt_tokens"] > 0 and record["usage"]["completion_tokens"] > 0
    assert record["outcome"]["end_reason"] in {"exchanged", "goodbye", "refused", "degenerate", "max_turns"}


async def test_real_evaluator_verdict_replays_and_holds_its_invariants(client):
    judge, episode, catalog = gold_judge(client(UNUSED_PORT_URL, "local"))
    with cassette("verdict", record_mode="none") as tape:
        verdict = await grade(episode, judge, catalog)
        assert tape.all_played
    assert len(verdict["calls"]) == len(tape) and all(c["completion_tokens"] > 0 for c in verdict["calls"])
    for transition in verdict["transitions"]:
        assert set(transition["conditions"]) == set(CONDITIONS)
        for grade_ in transition["conditions"].values():
            if grade_["status"] == "scored":  # a number only ever comes with evidence found in the transcript
                assert grade_["score"] in range(1, 6) and quote_problem(grade_["quote"], episode["turns"], grade_["turn"]) is None
            else:
                assert grade_["score"] is None and grade_["reason"]
    assert verdict["outcome"]["status"] in {"scored", "unscored"}


def test_no_credential_reaches_a_cassette():
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text().lower()
        assert "authorization" not in text and "bearer" not in text and "api-key" not in text, path
